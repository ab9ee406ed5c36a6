"""The recovery stage inside spa.prune (issue #17): on by default with calibration data,
only weights change, the end-to-end error drops on held-out inputs, and the CLI
reports progress on stderr."""

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import spa
from spa.cli import main
from spa.runtime import run
from spa.testing import nets
from spa.testing.oracle import assert_oracle, feeds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFIT_SLOTS = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "Add": (0, 1), "BatchNormalization": (3,),
               "LayerNormalization": (1, 2)}  # the inputs recovery may write


def _weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _error(model, pruned, x):
    want, got = run(model, x), run(pruned, x)
    return sum(float(np.sum((got[k] - v) ** 2)) for k, v in want.items()) / \
        sum(float(np.sum(v ** 2)) for v in want.values())


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "flatten_gemm", "conv_bn_relu"])
def test_recovery_changes_only_weights_and_lowers_the_error(name):
    model = nets.ALL[name](0)
    calib, held = feeds(model, batch=96, seed=3), feeds(model, batch=32, seed=9)
    plain = spa.prune(model, ratio=0.5, criterion="l2")  # the same plan: l2 reads no data
    fitted = spa.prune(model, ratio=0.5, criterion="l2", calib=calib)
    assert plain.recovery is None and fitted.recovery is not None and "recover" in fitted.timings
    assert fitted.recovery.improved > 0
    a, b = plain.model.graph, fitted.model.graph
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in b.node]
    writable = {n.input[k] for n in b.node for k in REFIT_SLOTS.get(n.op_type, ()) if k < len(n.input)}
    wa, wb = _weights(plain.model), _weights(fitted.model)
    assert wa.keys() == wb.keys()
    changed = {k for k in wa if not np.array_equal(wa[k], wb[k])}
    assert changed and changed <= writable
    assert all(wa[k].shape == wb[k].shape and wa[k].dtype == wb[k].dtype for k in wa)
    assert _error(model, fitted.model, held) < _error(model, plain.model, held)


def test_without_recovery_the_oracle_still_holds():
    model = nets.resnet(0)
    r = spa.prune(model, ratio=0.5, criterion="obs", calib=feeds(model, batch=32, seed=3), recover=False)
    assert r.recovery is None
    assert_oracle(model, r)


def test_recovery_without_data_refits_on_synthetic_images():
    """The bundled BN-folded MNIST CNN at ratio 0.5 (data-free OBSPA): refitting on 64
    synthetic images keeps more of the real test images' labels."""
    data = np.load(os.path.join(ROOT, "models", "mnist_sample.npz"))
    model = os.path.join(ROOT, "models", "mnist_cnn.onnx")

    def accuracy(m):
        return float((run(m, {"input": data["input"]})["logits"].argmax(1) == data["labels"]).mean())

    plain = spa.prune(model, ratio=0.5)
    fitted = spa.prune(model, ratio=0.5, recover=True)
    assert plain.recovery is None and fitted.recovery.samples == 64
    assert accuracy(fitted.model) > accuracy(plain.model) + 0.005


def test_cli_reports_recovery_progress_and_summary(tmp_path):
    model = nets.resnet(0)
    path, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(model, path)
    np.savez(calib, **feeds(model, batch=48, seed=3))
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.4", "--calib", str(calib)])
    assert res.exit_code == 0, res.output
    assert "recover: " in res.stderr and " of " in res.stderr
    assert "recovered " in res.stdout and "criterion: obs" in res.stdout
    quiet = CliRunner().invoke(main, ["prune", str(path), str(tmp_path / "q.onnx"), "--ratio", "0.4", "--calib",
                                      str(calib), "-q"])
    assert quiet.exit_code == 0 and "recover: " not in quiet.stderr
