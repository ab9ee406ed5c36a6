"""Importance criteria: every registered one runs from the API and the CLI; OBSPA's
bias compensation is part of the oracle and improves a real model's accuracy."""

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import spa
from graphs import ALL
from oracle import feeds_for
from spa.cli import main
from spa.criteria import CRITERIA
from spa.verify import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_criterion_prunes_through_api_and_cli(criterion, tmp_path):
    model = ALL["resnet"]()
    result = spa.prune(model, ratio=0.3, criterion=criterion)
    assert result.macs_reduction > 0.3
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3", "--criterion", criterion])
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


def test_compensation_improves_the_mnist_example():
    data = np.load(os.path.join(ROOT, "models", "mnist_sample.npz"))
    model = onnx.load(os.path.join(ROOT, "models", "mnist_cnn.onnx"))

    def accuracy(m):
        return float((run(m, {"input": data["input"]})["logits"].argmax(1) == data["labels"]).mean())

    plain = accuracy(spa.prune(model, ratio=0.3, criterion="l2", compensate=False).model)
    folded = accuracy(spa.prune(model, ratio=0.3, criterion="l2", compensate=True).model)
    assert folded > plain + 0.1


def test_bn_criterion_ranks_by_batchnorm_scale():
    model = ALL["conv_bn_relu"]()
    gamma = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "bn_g_0")
    result = spa.prune(model, kinds={"mlp": 0.5}, criterion="bn")
    kept = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == "bn_g_0")
    assert np.allclose(np.sort(kept), np.sort(gamma)[len(gamma) // 2:])
