"""The dynamo exporter lowers an as_strided view to a Gather of the flattened tensor at
indices computed from the batch size (ConvNeXt's classifier): folding turns it into a
Reshape, so the channels pass (issue #24, exporter invariance)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.runtime import run


def as_strided_model(c=8, seed=0):
    """x[N,3,6,6] -> Conv(c) -> ReduceMean(H,W) -> Reshape[-1] -> Gather(idx) -> Conv(4) -> y[N,4,1,1]

    idx = Range(0, N) * c (as [N,1,1,1]) + arange(c) (as [1,c,1,1]): 0..N*c-1 in order."""
    rng = np.random.default_rng(seed)
    init = [numpy_helper.from_array(v, k) for k, v in {
        "w1": rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w2": rng.standard_normal((4, c, 1, 1)).astype(
            np.float32), "flat": np.array([-1], np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
        "c": np.array(c, np.int64), "axes": np.array([1, 2, 3], np.int64), "hw": np.array([2, 3], np.int64),
        "grid": np.arange(c, dtype=np.int64).reshape(1, c, 1, 1)}.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["y1", "hw"], ["mean"], keepdims=1),
        helper.make_node("Reshape", ["mean", "flat"], ["flatmean"]),
        helper.make_node("Shape", ["x"], ["n1"], start=0, end=1),
        helper.make_node("Squeeze", ["n1"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Mul", ["r", "c"], ["rc"]),
        helper.make_node("Unsqueeze", ["rc", "axes"], ["ru"]),
        helper.make_node("Add", ["ru", "grid"], ["idx"]),
        helper.make_node("Gather", ["flatmean", "idx"], ["viewed"], axis=0),
        helper.make_node("Conv", ["viewed", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "as_strided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_gather_view_passes_channels_and_prunes_exactly():
    model = as_strided_model()
    an = spa.analyze(model)
    group = next(g for g in an.groups if "w1[0]" in g.members)
    assert group.prunable, group.reason
    r = spa.prune(model, ratio=0.5, criterion="l2", round_to=1)
    assert r.after.params < r.before.params
    masked = spa.masked(model, r.sinks, r.updates)
    for n in (1, 3):
        x = {"x": np.random.default_rng(n).standard_normal((n, 3, 6, 6), dtype=np.float32)}
        want, got = run(masked, x)["y"], run(r.model, x)["y"]
        assert got.shape == (n, 4, 1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gather_that_permutes_stays_blocking():
    """Indices that are not 0..n-1 in order are a real gather: no Reshape."""
    model = as_strided_model()
    grid = next(t for t in model.graph.initializer if t.name == "grid")
    grid.CopyFrom(numpy_helper.from_array(np.arange(8, dtype=np.int64)[::-1].reshape(1, 8, 1, 1).copy(), "grid"))
    group = next(g for g in spa.analyze(model).groups if "w1[0]" in g.members)
    assert not group.prunable
