"""Hidden-size pruning through LayerNorm and RMSNorm changes the norms' statistics, so
zeroing is no oracle: compare against the same model built by hand without those channels.

    x[N,S,F] -> MatMul We -> LayerNormalization -> MatMul W1 + b1 -> Relu -> MatMul W2 + b2
             -> Add (residual) -> RMSNorm (Pow, ReduceMean, Add, Sqrt, Div, Mul g) -> MatMul Wo -> y[N,S,C]
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.runtime import run

F, H, I, C = 6, 16, 24, 5


def weights(seed=0):
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    u = lambda n: rng.uniform(0.5, 1.5, n).astype(np.float32)  # noqa: E731
    return {"We": w(F, H), "ln_s": u(H), "ln_b": u(H) - 1, "W1": w(H, I), "b1": u(I) - 1,
            "W2": w(I, H), "b2": u(H) - 1, "g": u(H), "Wo": w(H, C)}


def build(ws, decomposed_ln=False):
    n = helper.make_node
    nodes = [n("MatMul", ["x", "We"], ["e"])]
    if decomposed_ln:  # x - mean, / sqrt(var + eps), * s + b
        nodes += [n("ReduceMean", ["e"], ["mu"], axes=[-1]), n("Sub", ["e", "mu"], ["d"]),
                  n("Mul", ["d", "d"], ["d2"]), n("ReduceMean", ["d2"], ["var"], axes=[-1]),
                  n("Add", ["var", "eps"], ["ve"]), n("Sqrt", ["ve"], ["sd"]), n("Div", ["d", "sd"], ["nrm"]),
                  n("Mul", ["nrm", "ln_s"], ["ns"]), n("Add", ["ns", "ln_b"], ["h"])]
    else:
        nodes += [n("LayerNormalization", ["e", "ln_s", "ln_b"], ["h"], axis=-1)]
    nodes += [n("MatMul", ["h", "W1"], ["a"]), n("Add", ["a", "b1"], ["ab"]), n("Relu", ["ab"], ["r"]),
              n("MatMul", ["r", "W2"], ["m"]), n("Add", ["m", "b2"], ["mb"]), n("Add", ["mb", "h"], ["res"]),
              n("Pow", ["res", "two"], ["sq"]), n("ReduceMean", ["sq"], ["ms"], axes=[-1]),
              n("Add", ["ms", "eps"], ["mse"]), n("Sqrt", ["mse"], ["rms"]), n("Div", ["res", "rms"], ["z"]),
              n("Mul", ["z", "g"], ["zg"]), n("MatMul", ["zg", "Wo"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in ws.items()]
    inits += [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1e-5), "eps")]
    f = ws["We"].shape[0]
    graph = helper.make_graph(nodes, "hidden", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", f])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", C])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def without(ws, keep):
    """The weights with hidden channels outside `keep` deleted, by hand."""
    cut = dict(ws)
    cut["We"] = ws["We"][:, keep]
    for k in ("ln_s", "ln_b", "b2", "g"):
        cut[k] = ws[k][keep]
    cut["W1"], cut["W2"], cut["Wo"] = ws["W1"][keep], ws["W2"][:, keep], ws["Wo"][keep]
    return cut


@pytest.mark.parametrize("decomposed", [False, True])
def test_hidden_pruning_equals_the_model_built_without_those_channels(decomposed):
    ws = weights()
    model = build(ws, decomposed)
    hidden = [g for g in spa.analyze(model).groups if g.kind == "hidden"]
    assert len(hidden) == 1 and hidden[0].channels == H and hidden[0].prunable
    result = spa.prune(model, kinds={"hidden": 0.5}, criterion="l2")
    assert not result.exact
    removed = next(idx for name, axis, idx in result.sinks if name == "W1")
    keep = np.setdiff1d(np.arange(H), removed)
    assert len(keep) == H // 2
    reference = build(without(ws, keep), decomposed)
    for seq in (7, 64):
        x = np.random.default_rng(seq).standard_normal((2, seq, F)).astype(np.float32)
        got, want = run(result.model, {"x": x})["y"], run(reference, {"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert not np.allclose(want, run(model, {"x": x})["y"], atol=1e-3)


def test_mlp_only_pruning_is_exact_and_leaves_hidden_alone():
    model = build(weights())
    result = spa.prune(model, kinds={"mlp": 0.5}, round_to=1, criterion="l2")
    assert result.exact
    pruned = {t.name: t for t in result.model.graph.initializer}
    assert list(pruned["W1"].dims) == [H, I // 2] and list(pruned["We"].dims) == [F, H]


def test_fused_attention_blocks_with_a_reason():
    n = helper.make_node
    nodes = [n("MatMul", ["x", "Wi"], ["h"]),
             n("Attention", ["h", "Wqkv", "bqkv"], ["a"], domain="com.microsoft", num_heads=2),
             n("MatMul", ["a", "Wo"], ["y"])]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k)
             for k, s in (("Wi", (F, 8)), ("Wqkv", (8, 24)), ("bqkv", (24,)), ("Wo", (8, C)))]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, F])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, C])], inits)
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.microsoft", 1)])
    groups = spa.analyze(model).groups
    g = next(g for g in groups if "Wi[1]" in g.members)
    assert not g.prunable and "fused attention" in g.reason
