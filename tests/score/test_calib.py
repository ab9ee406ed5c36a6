"""Calibration data (spa/calib.py) and the criteria that use it: taylor, hessian, obs."""

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import spa
from spa.testing import message_lines
from spa.testing.nets import ALL
from spa.testing.oracle import feeds as feeds_for
from spa.score.calib import Measured
from spa.cli import main
from spa.graph import build
from spa.io import load
from spa.runtime import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _layer(op, w, attrs, xshape):
    """x -> op(x, W) -> y, a one-layer model with a fixed input shape."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.reshape(-1))]
    node = helper.make_node(op, ["x", "w"], ["y"], name="layer", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(xshape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return m, {"x": rng.standard_normal(xshape).astype(np.float32)}


@pytest.mark.parametrize("op,wshape,attrs,xshape,axis", [
    ("Conv", (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}, (3, 4, 7, 7), 1),
    ("Conv", (6, 2, 3, 3), {"strides": [2, 2], "group": 2}, (3, 4, 8, 8), 1),
    ("Gemm", (5, 4), {"transB": 1, "alpha": 0.5}, (3, 4), 1),
    ("MatMul", (4, 5), {}, (2, 3, 4), 2),
])
def test_taylor_statistic_is_the_derivative_of_the_output_energy(op, wshape, attrs, xshape, axis):
    """E[x_c g_c] equals d/da ||y(x with channel c scaled by a)||^2 / 2 at a = 1, per sample and position."""
    w = np.random.default_rng(1).standard_normal(wshape).astype(np.float32)
    model, feeds = _layer(op, w, attrs, xshape)
    m = load(model)
    stat = Measured(build(m), feeds, grads=True).xg(next(n for n in m.graph.nodes if n.name == "layer"))
    x = feeds["x"].astype(np.float64)
    count = x.size / x.shape[axis]
    eps = 1e-3
    for c in range(x.shape[axis]):
        energy = []
        for a in (1 + eps, 1 - eps):
            xs = x.copy()
            np.moveaxis(xs, axis, 0)[c] *= a
            energy.append(float((run(model, {"x": xs.astype(np.float32)})["y"].astype(np.float64) ** 2).sum()) / 2)
        np.testing.assert_allclose(stat[c] * count, (energy[0] - energy[1]) / (2 * eps), rtol=2e-3, atol=1e-3)


def test_measured_moments_are_the_channel_mean_and_variance():
    model = ALL["resnet"]()
    feeds = feeds_for(model, batch=20)
    m = load(model)
    cg = build(m)
    meas = Measured(cg, feeds)
    conv = next(n for n in m.graph.nodes if n.op == "Conv" and n.inputs[0].name not in feeds)
    x = run(_with_output(model, conv.inputs[0].name), feeds)[conv.inputs[0].name].astype(np.float64)
    mean, var = meas.at(conv.inputs[0], 1, x.shape[1])
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def _with_output(model, name):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=name))
    return m


@pytest.mark.parametrize("criterion", ["taylor", "hessian", "obs"])
def test_data_criteria_fail_clearly_without_calib(criterion, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(ALL["resnet"](), path)
    with pytest.raises(spa.UsageError, match="needs calibration data"):
        spa.prune(str(path), ratio=0.3, criterion=criterion)
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3", "--criterion", criterion])
    assert res.exit_code != 0 and "--calib" in res.output and "Traceback" not in res.output
    assert len(message_lines(res.output)) == 1


def test_calib_from_a_folder_of_npy_files(tmp_path):
    model = ALL["resnet"]()
    feeds = feeds_for(model, batch=20)
    for k, v in feeds.items():
        np.save(tmp_path / f"{k}.npy", v)
    a = spa.prune(model, ratio=0.3, criterion="obs", calib=str(tmp_path))
    b = spa.prune(model, ratio=0.3, criterion="obs", calib=feeds)
    assert a.sinks == b.sinks


@pytest.mark.parametrize("bad,message", [
    ({"nope": np.zeros((2, 3, 16, 16), np.float32)}, "unknown input"),
    ({"input": np.zeros((2, 3, 9, 16), np.float32)}, "has shape"),
    ({"input": np.zeros((0, 3, 16, 16), np.float32)}, "no samples"),
])
def test_bad_calibration_data_is_refused_in_one_line(bad, message, tmp_path):
    model = ALL["resnet"]()
    name = model.graph.input[0].name
    bad = {name if k == "input" else k: v for k, v in bad.items()}
    np.savez(tmp_path / "c.npz", **bad)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3", "--criterion", "obs",
                                    "--calib", str(tmp_path / "c.npz")])
    assert res.exit_code != 0 and message in res.output and len(message_lines(res.output)) == 1


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "flatten_gemm"])
def test_obs_prune_matches_masked_original_with_its_bias_updates(name):
    model = ALL[name]()
    result = spa.prune(model, ratio=0.3, criterion="obs", calib=feeds_for(model, batch=16, seed=5), recover=False)
    assert result.updates
    feeds = feeds_for(model)
    want = run(spa.masked(model, result.sinks, result.updates), feeds)
    got = run(result.model, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * float(np.abs(want[k]).max()))


def test_obs_with_data_beats_data_free_obspa_and_l2_on_mnist():
    data = np.load(os.path.join(ROOT, "models", "mnist_sample.npz"))
    model = onnx.load(os.path.join(ROOT, "models", "mnist_cnn.onnx"))
    calib, x, y = {"input": data["input"][:64]}, data["input"][64:], data["labels"][64:]

    def accuracy(m):
        return float((run(m, {"input": x})["logits"].argmax(1) == y).mean())

    obs = accuracy(spa.prune(model, ratio=0.3, criterion="obs", calib=calib).model)
    assert obs > accuracy(spa.prune(model, ratio=0.3, criterion="obspa").model)
    assert obs > accuracy(spa.prune(model, ratio=0.3, criterion="l2").model) + 0.2


def test_calib_on_a_model_with_external_data(tmp_path):
    model = ALL["resnet"]()
    feeds = feeds_for(model, batch=20)
    b = spa.prune(model, ratio=0.3, criterion="obs", calib=feeds)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    before = sorted(os.listdir(tmp_path))
    a = spa.prune(str(tmp_path / "m.onnx"), ratio=0.3, criterion="obs", calib=feeds)
    assert [(n, x, list(i)) for n, x, i in a.sinks] == [(n, x, list(i)) for n, x, i in b.sinks]
    assert sorted(os.listdir(tmp_path)) == before


def test_few_samples_keep_a_factor_of_the_covariance_not_the_matrix():
    """A Gemm reading more features than there are samples: Measured keeps F (cov = F^T F), and
    cov() still gives the covariance of the measured rows."""
    w = np.random.default_rng(2).standard_normal((5, 40)).astype(np.float32)
    model, _ = _layer("Gemm", w, {"transB": 1}, (12, 40))
    feeds = {"x": np.random.default_rng(3).standard_normal((12, 40)).astype(np.float32) + 3}
    m = load(model)
    meas = Measured(build(m), feeds)
    x = next(n for n in m.graph.nodes if n.name == "layer").inputs[0]
    factor = meas.cov_factor(x, 1, 40)
    assert factor is not None and factor.shape == (12, 40) and not meas._cov
    want = np.cov(feeds["x"].astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(meas.cov(x, 1, 40), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(factor.T @ factor, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("greedy_max", [1024, 10])
def test_factor_paths_equal_the_dense_ones(greedy_max, monkeypatch):
    """The regression that compensates and OBS's ranking (greedy, and for wide consumers the
    variance given all others) give the same numbers through the factor (Woodbury) as
    through the covariance it stands for."""
    from spa.edit.compensate import regression
    from spa.score.criteria import obs
    from spa.score.criteria.obs import obs_cost
    monkeypatch.setattr(obs, "GREEDY_MAX", greedy_max)
    from spa.score.importance import Member
    rng = np.random.default_rng(4)
    n = 60
    factor = rng.standard_normal((20, n)) * np.linspace(0.5, 2, n)
    cov = factor.T @ factor
    removed, kept = np.arange(0, n, 4), np.setdiff1d(np.arange(n), np.arange(0, n, 4))
    for ridge in (1e-3, 0.3):
        np.testing.assert_allclose(regression(None, removed, kept, ridge, factor),
                                   regression(cov, removed, kept, ridge), rtol=1e-6, atol=1e-9)
    rows = rng.standard_normal((n, 3)).astype(np.float32)

    def member(**kw):
        return Member("w", 1, "in", rows, np.arange(n), n, "Gemm", 1, np.zeros(n), np.diag(cov).copy(),
                      ridge=0.3, cov_key=("x", b""), **kw)
    # the wide consumers' Woodbury products run in float32 (a ranking needs no more)
    rtol = 1e-8 if greedy_max >= n else 1e-4
    np.testing.assert_allclose(obs_cost([member(cov_factor=factor)], n), obs_cost([member(cov=cov)], n), rtol=rtol)
