"""Sizes for dynamic input dims (spa.io.sizes): the smallest the model runs at, its own
hints first, and one line naming --input-shape when it runs at none."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.errors import ModelError
from spa.io import load
from spa.runtime import random_inputs, run


def _model(nodes, inits, inputs, out, rank, metadata=None):
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [None] * rank)
    graph = helper.make_graph(nodes, "g", inputs, [y],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def strided(n_convs=4, metadata=None):
    """x [N, 3, H, W] -> n_convs x (Conv k3 s2 pad 0 -> Relu) -> GlobalAveragePool -> y.
    A 1x1 image fails at the first conv; 32x32 passes four, 64x64 five."""
    rng = np.random.default_rng(0)
    nodes, inits, t, cin = [], [], "x", 3
    for i in range(n_convs):
        w = numpy_helper.from_array(rng.standard_normal((8, cin, 3, 3)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("Conv", [t, f"w{i}"], [f"c{i}"], name=f"conv{i}", kernel_shape=[3, 3],
                                   strides=[2, 2]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        t, cin = f"r{i}", 8
    inits.append(numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "head"))
    nodes += [helper.make_node("Conv", [t, "head"], ["h"], name="head"),
              helper.make_node("GlobalAveragePool", ["h"], ["y"], name="gap")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _model(nodes, inits, [x], "y", 4, metadata=metadata)


def sequence_model():
    """ids [N, seq] int64 -> Gather(embedding) -> Transpose -> Conv1d k5 (no pad) -> Relu
    -> Conv1d k1 -> ReduceMean(time) -> y. One token cannot pass a width-5 kernel."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((10, 6, 5)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.standard_normal((4, 10, 1)).astype(np.float32), "w1")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
             helper.make_node("Transpose", ["e"], ["et"], name="tr", perm=[0, 2, 1]),
             helper.make_node("Conv", ["et", "w0"], ["c0"], name="conv0", kernel_shape=[5]),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", kernel_shape=[1]),
             helper.make_node("ReduceMean", ["c1"], ["y"], name="mean", axes=[2], keepdims=0)]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "seq"])
    return _model(nodes, inits, [ids], "y", 2)


def test_stride_two_stack_runs_at_32():
    model = strided(4)
    with pytest.raises(Exception):  # what SPA used to do: every dynamic dim 1
        run(model, random_inputs(model, {"x": (1, 3, 1, 1)}))
    m = load(model)
    assert m.input_shapes == {"x": (1, 3, 32, 32)}
    assert "x [1, 3, 32, 32]" in m.sizes_note
    assert m.probe_shapes == {"x": (2, 3, 96, 96)}  # the second verification size grows from the chosen one
    run(model, random_inputs(model, m.probe_shapes))  # and the original runs there


def test_smallest_rung_that_runs():
    m = load(strided(5))  # 32x32 ends at -1 after five convs: shape inference rules it out
    assert m.input_shapes == {"x": (1, 3, 64, 64)}


def test_prune_says_which_sizes():
    model = strided(4)
    r = spa.prune(model, ratio=0.3, round_to=1)
    assert r.verdict.outputs_match and r.changes
    assert any("dynamic dims set to x [1, 3, 32, 32]" in n for n in r.notes)
    assert spa.analyze(model).notes[:1] == r.notes[:1]  # (analyze may add a note on the interface)


def test_given_shapes_are_kept():
    m = load(strided(4), {"x": (1, 3, 40, 48)})
    assert m.input_shapes == {"x": (1, 3, 40, 48)} and m.sizes_note is None


def test_metadata_hint_first():
    m = load(strided(4, metadata={"imgsz": "[64, 96]"}))
    assert m.input_shapes == {"x": (1, 3, 64, 96)}
    assert "hint" in m.sizes_note


def test_sequence_axis():
    model = sequence_model()
    m = load(model)
    assert m.input_shapes == {"ids": (1, 16)}
    r = spa.prune(model, ratio=0.3, round_to=1)
    assert r.verdict.outputs_match and r.changes


@pytest.mark.parametrize("names", [("sequence", "past", "total"), ("s70", "s58", "s53")], ids=["named", "dynamo"])
def test_kv_cache_mask_is_past_plus_new(names):
    """ids [1, sequence], past [1, past, 4], mask [1, total]: the mask must cover past and new.
    The dynamo exporter's symbols say nothing, but an output's 's58 + s70' marks the cache."""
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["f", "two"], ["f3"]),
             helper.make_node("Expand", ["f3", "e"], ["new"]),
             helper.make_node("Concat", ["past", "new"], ["kv"], axis=1),
             helper.make_node("ReduceSum", ["kv", "two"], ["k"], keepdims=0),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["k", "mf"], ["y"])]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([1, 1, 4], np.int64), "e")]
    new, past, total = names
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, new]),
           helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, past, 4]),
           helper.make_tensor_value_info("mask", TensorProto.INT64, [1, total])]
    model = _model(nodes, inits, ins, "y", 2)
    model.graph.output.append(helper.make_tensor_value_info("kv", TensorProto.FLOAT, [1, f"{past} + {new}", 4]))
    shapes = load(model).input_shapes
    assert shapes["mask"][1] == shapes["ids"][1] + shapes["past"][1] and shapes["ids"][1] > 1


def test_batch_only_stays_one():
    model = strided(1)
    m = load(model)
    assert m.input_shapes["x"][0] == 1


def test_runs_at_none_names_input_shape():
    """x [1, 3, H, W] flattened and reshaped to a fixed [1, 147]: only 7x7 fits."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    inits = [numpy_helper.from_array(np.array([1, 147], np.int64), "shape")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])
    with pytest.raises(ModelError, match="--input-shape") as err:
        load(_model(nodes, inits, [x], "y", 2))
    assert "\n" not in str(err.value)
    assert load(_model(nodes, inits, [x], "y", 2), {"x": (1, 3, 7, 7)}).input_shapes == {"x": (1, 3, 7, 7)}
    m = load(_model(nodes, inits, [x], "y", 2), must_run=False)  # analysis: read at ones, with a note
    assert m.input_shapes == {"x": (1, 3, 1, 1)} and "--input-shape" in m.sizes_note


def fixed_height():
    """x [1, 3, H, W] -> Conv k(32, 4) s(32, 4) -> Relu -> Squeeze(height) -> Reshape to
    Concat([1], [16], Shape[2]) -> Transpose -> MatMul -> y [1, W/4, 10]. It runs at height
    32 only (the squeezed row must be one), like a text recogniser; its sequence length W/4
    is the same at widths 32 and 33, so only a larger width shows that it follows W."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 32, 4)).astype(np.float32), "cw"),
             numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([16], np.int64), "c16"),
             numpy_helper.from_array(np.array(2, np.int64), "i2"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "fw")]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", kernel_shape=[32, 4], strides=[32, 4]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Squeeze", ["r", "axes"], ["q"], name="squeeze"),
             helper.make_node("Shape", ["q"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i2"], ["n"], name="length", axis=0),
             helper.make_node("Unsqueeze", ["n", "zero"], ["nu"], name="unsq"),
             helper.make_node("Concat", ["one", "c16", "nu"], ["target"], name="target", axis=0),
             helper.make_node("Reshape", ["q", "target"], ["z"], name="reshape"),
             helper.make_node("Transpose", ["z"], ["t"], name="tr", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "fw"], ["y"], name="head")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])
    return _model(nodes, inits, [x], "y", 3)


def test_a_fixed_height_model_keeps_following_its_width(tmp_path):
    """Growing H and W together gives a size the model cannot run (height 96), so each dim is
    grown alone: without that, the sequence length in the Reshape target was frozen at the
    load width and the pruned model failed at any other width (PaddleOCR's recogniser)."""
    src, out = str(tmp_path / "m.onnx"), str(tmp_path / "p.onnx")
    onnx.save(fixed_height(), src)
    spa.prune(src, out, ratio=0.25)
    for width in (64, 100):
        x = {"x": np.ones((1, 3, 32, width), np.float32)}
        want, got = run(src, x)["y"], run(out, x)["y"]
        assert got.shape == want.shape == (1, width // 4, 10)
