"""Importance criteria: every registered one runs from the API and the CLI; OBSPA's
bias compensation is part of the oracle and improves a real model's accuracy."""

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import spa
from spa.testing import message_lines
from spa.testing.nets import ALL
from spa.testing.oracle import feeds as feeds_for
from spa.cli import main
from spa.score.criteria import CRITERIA
from spa.runtime import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_criterion_prunes_through_api_and_cli(criterion, tmp_path):
    model = ALL["resnet"]()
    data = getattr(CRITERIA[criterion], "needs_calib", False)
    calib = feeds_for(model, batch=20) if data else None
    result = spa.prune(model, ratio=0.3, criterion=criterion, calib=calib)
    assert result.macs_reduction > 0.3
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    args = ["prune", str(path), "--ratio", "0.3", "--criterion", criterion]
    if data:
        np.savez(tmp_path / "calib.npz", **calib)
        args += ["--calib", str(tmp_path / "calib.npz")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "flatten_gemm", "reshape_head", "densenet"])
def test_compensated_prune_matches_masked_original_with_its_bias_updates(name):
    model = ALL[name]()
    result = spa.prune(model, ratio=0.3, criterion="obspa")
    assert result.updates, "obspa folds removed channels' means into biases"
    feeds = feeds_for(model)
    want = run(spa.masked(model, result.sinks, result.updates), feeds)
    got = run(result.model, feeds)
    plain = run(spa.masked(model, result.sinks), feeds)
    for k in want:
        scale = float(np.abs(want[k]).max())
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * scale)
        assert not np.allclose(plain[k], want[k], atol=1e-5 * scale)


def test_without_statistics_obspa_probes_synthetic_inputs():
    # The bundled CNN was exported with BatchNorm folded: no layer input is anchored, so
    # OBSPA measures its statistics on synthetic inputs (spa.probe), no data.
    data = np.load(os.path.join(ROOT, "models", "mnist_sample.npz"))
    model = onnx.load(os.path.join(ROOT, "models", "mnist_cnn.onnx"))
    feeds = {"input": data["input"]}

    def accuracy(m):
        return float((run(m, feeds)["logits"].argmax(1) == data["labels"]).mean())

    assert accuracy(model) > 0.98
    obspa = spa.prune(model, ratio=0.5, criterion="obspa")
    l2 = spa.prune(model, ratio=0.5, criterion="l2")
    assert obspa.updates and abs(obspa.macs_reduction - l2.macs_reduction) < 0.01
    assert accuracy(obspa.model) > 0.95 and accuracy(l2.model) < 0.5
    want = run(spa.masked(model, obspa.sinks, obspa.updates), feeds)["logits"]
    np.testing.assert_allclose(run(obspa.model, feeds)["logits"], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_bn_criterion_ranks_by_batchnorm_scale():
    model = ALL["conv_bn_relu"]()
    gamma = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "bn_g_0")
    result = spa.prune(model, kinds={"mlp": 0.5}, criterion="bn")
    kept = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == "bn_g_0")
    assert np.allclose(np.sort(kept), np.sort(gamma)[len(gamma) // 2:])


def _calibrated_two_layer(seed=0, n=4096):
    """input [N,16,1,1] ~ N(0, I) -> Conv 1x1 (orthogonal, 16->16) -> BN a -> Relu -> Conv 1x1 (16->4)
    -> BN b -> output. Both BatchNorms hold the statistics measured in onnxruntime on
    standard normal inputs, so the data-free assumptions (Gaussian, independent channels)
    hold exactly for the hidden group of 16 channels."""
    rng = np.random.default_rng(seed)
    wa = np.linalg.qr(rng.standard_normal((16, 16)))[0].astype(np.float32).reshape(16, 16, 1, 1)
    wb = (rng.standard_normal((4, 16)) * rng.uniform(0.2, 2.0, 16)).astype(np.float32).reshape(4, 16, 1, 1)
    gamma = rng.uniform(0.3, 2.0, 16).astype(np.float32)
    beta = rng.normal(0, 1, 16).astype(np.float32)
    x = rng.standard_normal((n, 16, 1, 1)).astype(np.float32)
    a = np.einsum("oc,nc->no", wa[:, :, 0, 0], x[:, :, 0, 0])
    h = np.maximum(gamma * (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5) + beta, 0)
    b = h @ wb[:, :, 0, 0].T
    init = [onnx.numpy_helper.from_array(v, k) for k, v in dict(
        wa=wa, wb=wb, ga=gamma, ba=beta, ma=a.mean(0).astype(np.float32), va=a.var(0).astype(np.float32),
        gb=np.ones(4, np.float32), bb=np.zeros(4, np.float32), mb=b.mean(0).astype(np.float32),
        vb=b.var(0).astype(np.float32)).items()]
    h_ = onnx.helper
    nodes = [h_.make_node("Conv", ["input", "wa"], ["a"], name="conv_a"),
             h_.make_node("BatchNormalization", ["a", "ga", "ba", "ma", "va"], ["an"], name="bn_a"),
             h_.make_node("Relu", ["an"], ["h"], name="relu"),
             h_.make_node("Conv", ["h", "wb"], ["b"], name="conv_b"),
             h_.make_node("BatchNormalization", ["b", "gb", "bb", "mb", "vb"], ["output"], name="bn_b")]
    graph = h_.make_graph(nodes, "calibrated", [h_.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                         ["N", 16, 1, 1])],
                          [h_.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4, 1, 1])], init)
    model = h_.make_model(graph, opset_imports=[h_.make_opsetid("", 17)])
    model.ir_version = 8
    return model, x


def test_compensation_keeps_the_next_batchnorm_output_standardised():
    # The BatchNorm after the pruned consumer still outputs mean 0, variance 1: the mean
    # fold restores the mean, the running-variance update the scale.
    model, x = _calibrated_two_layer()
    for criterion in ("obspa", "l2"):
        comp = spa.prune(model, ratio=0.5, criterion=criterion, compensate=True)
        plain = spa.prune(model, ratio=0.5, criterion=criterion, compensate=False)
        assert any(u.kind == "variance" and u.target == "output" for u in comp.updates)  # bn_b's output
        y = run(comp.model, {"input": x})["output"][:, :, 0, 0]
        y0 = run(plain.model, {"input": x})["output"][:, :, 0, 0]
        np.testing.assert_allclose(y.mean(0), 0, atol=0.05)
        np.testing.assert_allclose(y.var(0), 1, rtol=0.05)
        assert np.abs(y0.mean(0)).max() > 0.2 or np.abs(y0.var(0) - 1).max() > 0.2


def test_running_means_downstream_correct_the_propagated_means():
    # Moments takes the graph input as mean 0; the BatchNorm after conv_a measured its
    # real mean (here 0 by construction, so shift the input and its running mean alike).
    from spa.graph import build
    from spa.io import load
    from spa.score.moments import Moments
    model, _ = _calibrated_two_layer()
    shift = np.linspace(-1, 1, 16)
    ma = next(t for t in model.graph.initializer if t.name == "ma")
    wa = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "wa"))[:, :, 0, 0]
    ma.CopyFrom(onnx.numpy_helper.from_array((onnx.numpy_helper.to_array(ma) + wa @ shift).astype(np.float32), "ma"))
    cg = build(load(model))
    stats = Moments(cg)
    mean, _ = stats.at(cg.ctx.tensors["input"], 1, 16)
    assert np.linalg.norm(mean - shift) < 0.6 * np.linalg.norm(shift)


def test_bias_fold_reaches_a_matmul_whose_weight_is_transposed_at_run_time():
    # input [N,8] -> LayerNorm -> MatMul(Transpose(w1)) -> Add b1 -> Relu -> MatMul(Transpose(w2)) -> Add b2
    # -> output (torch's exporter without constant folding writes Linear layers this way)
    rng = np.random.default_rng(0)
    init = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in dict(
        w1=rng.standard_normal((16, 8)), b1=rng.normal(1, 1, 16), w2=rng.standard_normal((4, 16)),
        b2=rng.standard_normal(4), g=rng.uniform(0.5, 2, 8), b=rng.normal(0, 1, 8)).items()]
    h_ = onnx.helper
    nodes = [h_.make_node("LayerNormalization", ["input", "g", "b"], ["ln"], name="ln"),
             h_.make_node("Transpose", ["w1"], ["w1t"], perm=[1, 0], name="t1"),
             h_.make_node("MatMul", ["ln", "w1t"], ["a"], name="mm1"),
             h_.make_node("Add", ["a", "b1"], ["ab"], name="add1"),
             h_.make_node("Relu", ["ab"], ["h"], name="relu"),
             h_.make_node("Transpose", ["w2"], ["w2t"], perm=[1, 0], name="t2"),
             h_.make_node("MatMul", ["h", "w2t"], ["c"], name="mm2"),
             h_.make_node("Add", ["c", "b2"], ["output"], name="add2")]
    graph = h_.make_graph(nodes, "transposed", [h_.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8])],
                          [h_.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4])], init)
    model = h_.make_model(graph, opset_imports=[h_.make_opsetid("", 17)])
    model.ir_version = 8
    result = spa.prune(model, ratio=0.5, criterion="obspa")
    assert sorted((u.kind, u.target) for u in result.updates) == [("bias", "c"), ("weight", "w2")]  # c: mm2's output
    feeds = {"input": rng.standard_normal((64, 8)).astype(np.float32)}
    want = run(spa.masked(model, result.sinks, result.updates), feeds)["output"]
    np.testing.assert_allclose(run(result.model, feeds)["output"], want, rtol=1e-4, atol=1e-5)


def test_obspa_moves_removed_channels_onto_their_correlated_twins():
    # input [N,4,1,1] -> Conv 1x1 (4->8, channels 4..7 copy channels 0..3) -> BN -> Conv 1x1 (8->3) -> output.
    # The copies read almost nothing downstream, so OBSPA removes them; the correlation it
    # derives from the first Conv's weights lets the kept twins take their part over.
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 4))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    wa = np.concatenate([w, w]).astype(np.float32).reshape(8, 4, 1, 1)
    wb = rng.standard_normal((3, 8))
    wb[:, :4] /= np.linalg.norm(wb[:, :4], axis=0)
    wb[:, 4:] *= 0.3 / np.linalg.norm(wb[:, 4:], axis=0)
    stats = dict(g=np.ones(8), b=np.zeros(8), m=np.zeros(8), v=np.tile((w * w).sum(1), 2))
    init = [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in dict(
        wa=wa, wb=wb.reshape(3, 8, 1, 1), **stats).items()]
    h_ = onnx.helper
    nodes = [h_.make_node("Conv", ["input", "wa"], ["a"], name="conv_a"),
             h_.make_node("BatchNormalization", ["a", "g", "b", "m", "v"], ["an"], name="bn"),
             h_.make_node("Conv", ["an", "wb"], ["output"], name="conv_b")]
    graph = h_.make_graph(nodes, "twins", [h_.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4, 1, 1])],
                          [h_.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 3, 1, 1])], init)
    model = h_.make_model(graph, opset_imports=[h_.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"input": rng.standard_normal((256, 4, 1, 1)).astype(np.float32)}
    want = run(model, feeds)["output"]
    comp = spa.prune(model, ratio=0.5, criterion="obspa")
    plain = spa.prune(model, ratio=0.5, criterion="obspa", compensate=False)
    assert comp.sinks == (("wb", 1, (4, 5, 6, 7)),)
    assert any(u.kind == "weight" and u.target == "wb" for u in comp.updates)
    err = np.abs(run(comp.model, feeds)["output"] - want).mean()
    err0 = np.abs(run(plain.model, feeds)["output"] - want).mean()
    assert err < 0.15 * err0
    masked = run(spa.masked(model, comp.sinks, comp.updates), feeds)["output"]
    np.testing.assert_allclose(run(comp.model, feeds)["output"], masked, rtol=1e-4, atol=1e-5)


def test_default_criterion_is_obspa_and_l2_above_the_weight_limit(tmp_path, monkeypatch):
    import spa.api

    model = ALL["resnet"]()
    default = spa.prune(model, ratio=0.3)
    assert default.criterion == "obspa" and default.updates
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3"])
    assert res.exit_code == 0 and "criterion: obspa" in res.output
    monkeypatch.setattr(spa.api, "OBSPA_MAX_BYTES", 1000)  # this model holds more than 1 KB of weights
    large = spa.prune(model, ratio=0.3)
    assert large.criterion == "l2" and not large.updates
    assert spa.prune(model, ratio=0.3, criterion="obspa").criterion == "obspa"


def test_calib_alone_picks_obs_and_is_refused_by_criteria_that_read_no_data(tmp_path):
    model = ALL["resnet"]()
    calib = feeds_for(model, batch=20)
    assert spa.prune(model, ratio=0.3, calib=calib).criterion == "obs"
    with pytest.raises(spa.UsageError, match="reads no calibration data"):
        spa.prune(model, ratio=0.3, criterion="l2", calib=calib, recover=False)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "calib.npz", **calib)
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3", "--criterion", "obspa",
                                    "--calib", str(tmp_path / "calib.npz"), "--no-recover"])
    assert res.exit_code == 2 and len(message_lines(res.output)) == 1


def _two_linear(bias):
    """input [N,8] -> LayerNorm -> MatMul w1 -> Add b1 -> Relu -> MatMul w2 (-> Add b2, b2 from a
    Constant node as paddle2onnx writes it, when `bias` is "constant"; none when None)."""
    rng = np.random.default_rng(0)
    arrays = dict(w1=rng.standard_normal((8, 16)), b1=rng.normal(1, 1, 16), w2=rng.standard_normal((16, 4)),
                  g=rng.uniform(0.5, 2, 8), b=rng.normal(0, 1, 8))
    init = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    h_ = onnx.helper
    nodes = [h_.make_node("LayerNormalization", ["input", "g", "b"], ["ln"], name="ln"),
             h_.make_node("MatMul", ["ln", "w1"], ["a"], name="mm1"),
             h_.make_node("Add", ["a", "b1"], ["ab"], name="add1"),
             h_.make_node("Relu", ["ab"], ["h"], name="relu"),
             h_.make_node("MatMul", ["h", "w2"], ["c" if bias else "output"], name="mm2")]
    if bias == "constant":
        value = onnx.numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2_value")
        nodes += [h_.make_node("Constant", [], ["b2"], value=value, name="b2_const"),
                  h_.make_node("Add", ["c", "b2"], ["output"], name="add2")]
    graph = h_.make_graph(nodes, "two", [h_.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8])],
                          [h_.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4])], init)
    model = h_.make_model(graph, opset_imports=[h_.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_bias_fold_reaches_a_bias_held_by_a_constant_node():
    """paddle2onnx writes a Linear layer's bias as a Constant node's output: the fold finds it
    (it used to miss it and apply the weight update alone, which moved PaddleOCR's logits by 16)."""
    model = _two_linear("constant")
    result = spa.prune(model, ratio=0.5, criterion="obspa")
    assert sorted((u.kind, u.target) for u in result.updates) == [("bias", "c"), ("weight", "w2")]
    feeds = {"input": np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)}
    want = run(spa.masked(model, result.sinks, result.updates), feeds)["output"]
    np.testing.assert_allclose(run(result.model, feeds)["output"], want, rtol=1e-4, atol=1e-5)


def test_no_weight_update_without_a_bias_for_its_mean_correction():
    """A MatMul with no bias to fold into: the regression's weight update would leave out its
    mean correction (ReLU outputs have a mean), so neither is applied."""
    model = _two_linear(None)
    result = spa.prune(model, ratio=0.5, criterion="obspa")
    assert not [u for u in result.updates if u.target in ("w2", "output")]
    feeds = {"input": np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)}
    want = run(spa.masked(model, result.sinks, result.updates), feeds)["output"]
    np.testing.assert_allclose(run(result.model, feeds)["output"], want, rtol=1e-4, atol=1e-5)
