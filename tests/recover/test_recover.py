"""Recovery on small real graphs: prune with spa, refit with spa.recover, run onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.recover import RecoveryReport, fit, recover
from spa.recover.session import cpu_session
from spa.testing import nets as graphs


def _run(model, x):
    sess = cpu_session(model, 1)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _mlp(seed=0, hidden=32, inner=64, seq=8):
    """input [N, S, H] -> LayerNorm -> MatMul+Add -> Relu -> MatMul(Transpose(W))+Add -> Add(residual)
    -> LayerNorm -> MatMul."""
    rng = np.random.default_rng(seed)
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def w(name, a, b):
        return const(name, rng.standard_normal((a, b)) / np.sqrt(a))
    nodes = [  # a weight Transpose at the top: its output is live across every cut
        helper.make_node("Transpose", [w("w1t", inner, hidden)], ["w1"], perm=[1, 0]),
        helper.make_node("LayerNormalization", ["input", const("g0", rng.uniform(0.5, 1.5, hidden)),
                                                const("b0", rng.standard_normal(hidden) * 0.1)], ["n0"], axis=-1),
        helper.make_node("MatMul", ["n0", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", const("b1", rng.standard_normal(inner) * 0.1)], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Transpose", [w("w2t", hidden, inner)], ["w2"], perm=[1, 0]),  # torch Linear, unfolded
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", const("b2", rng.standard_normal(hidden) * 0.1)], ["a2"]),
        helper.make_node("Add", ["a2", "input"], ["res"]),
        helper.make_node("LayerNormalization", ["res", const("g1", rng.uniform(0.5, 1.5, hidden)),
                                                const("b1n", rng.standard_normal(hidden) * 0.1)], ["n1"], axis=-1),
        helper.make_node("MatMul", ["n1", w("w3", hidden, 10)], ["out"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", seq, hidden])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", seq, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _inputs(model, n, seed):
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(seed).standard_normal([n] + dims).astype(np.float32)


def _structure(model):
    g = model.graph
    nodes = [(n.op_type, tuple(n.input), tuple(n.output)) for n in g.node]
    inits = sorted((t.name, t.data_type, tuple(t.dims)) for t in g.initializer)
    consts = [(n.output[0], n.attribute[0].t.data_type, tuple(n.attribute[0].t.dims)) for n in g.node
              if n.op_type == "Constant"]
    return nodes, inits, consts


CASES = {
    "conv_bn_relu": (graphs.conv_bn_relu, dict(ratio=0.5)),
    "resnet": (graphs.resnet, dict(ratio=0.5)),
    "mobilenetv2 (depthwise)": (graphs.mobilenetv2, dict(ratio=0.5)),
    "resnext (grouped)": (graphs.resnext, dict(ratio=0.5)),
    "flatten_gemm": (graphs.flatten_gemm, dict(ratio=0.5)),
    "paddle_style (Constant weights)": (graphs.paddle_style, dict(ratio=0.5)),
    "mlp (MatMul, LayerNorm)": (_mlp, dict(ratio=0.5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recover_reduces_output_error(case):
    build, kw = CASES[case]
    original = build(0)
    result = spa.prune(original, verify=False, criterion="l2", **kw)
    calib = _inputs(original, 48, 1)
    calls = []
    model, report = recover(original, result.model, result.keep, {"input": calib}, samples=48, batch=16,
                            progress=lambda i, n, name: calls.append((i, n)))
    assert isinstance(report, RecoveryReport) and report.samples == 48
    assert not report.reverted and report.output_after < report.output_before
    assert calls and calls[-1][0] == calls[-1][1] == len(report.layers)
    # only weights change: same nodes, same tensors, same dtypes and shapes
    assert _structure(model) == _structure(result.model)
    onnx.checker.check_model(model, full_check=True)
    fitted = [f for f in report.layers if not f.skipped]
    assert fitted and any(f.after < f.before for f in fitted)
    if case.startswith("mlp"):  # both MatMul weights (plain and behind a Transpose) and both norms
        assert [f.kind for f in fitted] == ["affine", "linear", "linear", "affine", "linear"]
    for f in fitted:  # a refit never raises its layer's measured error
        assert f.after <= f.before * (1 + 1e-9) + 1e-12, f
    x = _inputs(original, 32, 2)  # unseen inputs
    ref = _run(original, x)
    before, after = _run(result.model, x), _run(model, x)
    for r, b, a in zip(ref, before, after):
        assert a.shape == b.shape == r.shape
        assert np.isfinite(a).all()
    err_before = sum(float(((r - b) ** 2).sum()) for r, b in zip(ref, before))
    err_after = sum(float(((r - a) ** 2).sum()) for r, a in zip(ref, after))
    assert err_after < err_before, (case, err_before, err_after)


def test_pruned_model_is_not_modified():
    original = graphs.resnet(0)
    result = spa.prune(original, verify=False, criterion="l2", ratio=0.5)
    snapshot = result.model.SerializeToString()
    recover(original, result.model, result.keep, {"input": _inputs(original, 16, 1)}, samples=16)
    assert result.model.SerializeToString() == snapshot


def _gram(X, Y, sample):
    g = fit.Gram()
    g.add(X[:, None, :], Y[:, None, :], sample)
    return g


def test_refit_falls_back_when_held_out_error_would_rise():
    rng = np.random.default_rng(0)
    n, d, m = 400, 6, 3
    X = rng.standard_normal((n, d))
    w0 = rng.standard_normal((d, m))
    sample = np.arange(n)
    held = sample % 4 == 3
    Y = X @ w0  # the current weights are exact on held-out rows...
    Y[~held] = X[~held] @ rng.standard_normal((d, m))  # ...and the fit rows say otherwise
    w, st = fit.refit(_gram(X, Y, sample), w0[None], 1e-3)
    assert st["kept_old"] == 1.0
    np.testing.assert_array_equal(w[0], w0)
    assert st["after"] == st["before"]


def test_refit_recovers_exact_weights_and_never_raises_error():
    rng = np.random.default_rng(1)
    n, d, m = 400, 6, 3
    X = rng.standard_normal((n, d))
    truth = rng.standard_normal((d, m))
    w0 = truth + 0.3 * rng.standard_normal((d, m))
    w, st = fit.refit(_gram(X, X @ truth, np.arange(n)), w0[None], 1e-6)
    assert st["after"] < 1e-6 * st["before"]
    np.testing.assert_allclose(w[0], truth, atol=1e-3)


def test_refit_per_group_keeps_only_groups_that_got_worse():
    rng = np.random.default_rng(2)
    n, d, m = 400, 4, 2
    X = rng.standard_normal((n, 2, d))
    truth = rng.standard_normal((2, d, m))
    w0 = truth + 0.3 * rng.standard_normal((2, d, m))
    Y = np.einsum("rgd,gdm->rgm", X, truth)
    sample = np.arange(n)
    held = sample % 4 == 3
    Y[~held, 1] = np.einsum("rd,dm->rm", X[~held, 1], rng.standard_normal((d, m)))  # group 1: misleading rows
    Y[held, 1] = np.einsum("rd,dm->rm", X[held, 1], w0[1])
    g = fit.Gram()
    g.add(X, Y, sample)
    w, st = fit.refit(g, w0, 1e-6)
    np.testing.assert_array_equal(w[1], w0[1])
    np.testing.assert_allclose(w[0], truth[0], atol=1e-3)
    assert st["kept_old"] == 0.5 and st["after"] <= st["before"]


def test_reported_errors_match_the_written_model():
    """The last layer's reported error equals a fresh run of the recovered model: every
    refit, including weights behind a Transpose, reached the activations later layers saw."""
    original = _mlp(0)
    result = spa.prune(original, verify=False, criterion="l2", ratio=0.5)
    calib = _inputs(original, 48, 1)
    model, report = recover(original, result.model, result.keep, {"input": calib}, samples=48)
    last = report.layers[-1]
    assert last.name == "out" or last.kind == "linear"
    ref, got = _run(original, calib)[0].astype(np.float64), _run(model, calib)[0]
    measured = float(((got - ref) ** 2).sum() / (ref ** 2).sum())
    assert abs(measured - last.after) <= 1e-3 * max(measured, 1e-9) + 1e-7, (measured, last)
