"""spa.compare: per-output fidelity, input files, saved inputs and outputs, the CLI."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import spa
from spa.testing.nets import ALL
from spa.cli import main
from spa.measure.compare import compare, compare_text, load_inputs
from spa.verify import fidelity
from spa.errors import UsageError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    out = {}
    for name in ("flatten_gemm", "fpn"):
        orig = str(d / f"{name}.onnx")
        onnx.save(ALL[name](), orig)
        pruned = str(d / f"{name}.pruned.onnx")
        spa.prune(orig, pruned, ratio=0.5)
        out[name] = (orig, pruned)
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_identical_models_agree(models):
    orig, _ = models["flatten_gemm"]
    c = compare(orig, orig, batch=16)
    (o,) = c.outputs
    assert c.samples == 16 and o.shape == (16, 10) and o.pruned_shape == (16, 10)
    assert o.max_abs == 0 and o.max_rel == 0 and o.cosine == 1.0 and o.top1 == 1.0 and o.top5 == 1.0


def test_pruned_classifier_differs(models):
    c = compare(*models["flatten_gemm"], batch=32)
    (o,) = c.outputs
    assert o.max_abs > 0 and o.cosine < 1 and 0 <= o.top1 <= 1 and o.top1 <= o.top5 <= 1
    assert "top-1" in compare_text(c) and "flatten_gemm.pruned.onnx" in compare_text(c)
    assert json.loads(json.dumps(c.to_dict()))["outputs"][0]["name"] == o.name


def test_non_classifier_outputs_have_no_topk(models):
    c = compare(*models["fpn"], batch=2)
    assert len(c.outputs) == 2
    for o in c.outputs:
        assert len(o.shape) == 4 and o.top1 is None and o.top5 is None and -1 <= o.cosine <= 1


def test_fidelity_edge_cases():
    z = np.zeros((2, 3), np.float32)
    assert fidelity("y", z, z).cosine == 1.0
    assert fidelity("y", z, np.ones_like(z)).cosine == 0.0
    f = fidelity("y", z, np.zeros((2, 4), np.float32))
    assert f.cosine is None and not f.comparable and "differs" in f.note
    assert fidelity("y", z, None).note == "missing in the pruned model"
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    f = fidelity("y", a, a * 1.5)
    assert f.max_abs == pytest.approx(1.5) and f.max_rel == pytest.approx(0.5) and f.cosine == pytest.approx(1.0)
    assert f.top1 == 1.0 and f.top5 is None  # only 3 classes
    f = fidelity("y", np.array([[0.0, 1.0]], np.float32), np.array([[1.0, 0.0]], np.float32))
    assert f.top1 == 0.0


def test_saved_inputs_reproduce_the_comparison(models, tmp_path):
    orig, pruned = models["flatten_gemm"]
    first = compare(orig, pruned, batch=8, seed=5, save_inputs=tmp_path / "in.npz",
                    save_outputs=tmp_path / "out.npz")
    again = compare(orig, pruned, inputs=tmp_path / "in.npz")
    assert again.outputs == first.outputs and again.inputs.endswith("in.npz")
    outs = np.load(tmp_path / "out.npz")
    name = first.outputs[0].name
    assert set(outs.files) == {f"original/{name}", f"pruned/{name}"}
    # a folder of .npy files, and float64 data cast to the model's float32
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "input.npy", load_inputs(tmp_path / "in.npz")["input"].astype(np.float64))
    np.save(folder / "unused.npy", np.zeros(3))
    assert compare(orig, pruned, inputs=folder).outputs == first.outputs
    compare(orig, pruned, batch=2, save_inputs=str(tmp_path / "saved") + "/", save_outputs=str(tmp_path / "so") + "/")
    assert (tmp_path / "saved" / "input.npy").exists() and (tmp_path / "so" / f"original_{name}.npy").exists()


def test_bad_inputs(models, tmp_path):
    orig, pruned = models["flatten_gemm"]
    np.savez(tmp_path / "wrong.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(UsageError, match="no array named 'input'"):
        compare(orig, pruned, inputs=tmp_path / "wrong.npz")
    np.savez(tmp_path / "int.npz", input=np.zeros((1, 3, 16, 16), np.int64))
    with pytest.raises(UsageError, match="int64"):
        compare(orig, pruned, inputs=tmp_path / "int.npz")
    np.savez(tmp_path / "rank.npz", input=np.zeros((3, 16, 16), np.float32))
    with pytest.raises(UsageError, match="rank"):
        compare(orig, pruned, inputs=tmp_path / "rank.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .npy"):
        load_inputs(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such"):
        load_inputs(tmp_path / "missing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(UsageError, match="expected an .npz"):
        load_inputs(tmp_path / "one.npy")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(UsageError):
        load_inputs(tmp_path / "junk.npz")


def test_fixed_batch_model_runs_in_chunks(tmp_path):
    m = ALL["flatten_gemm"]()
    for vi in (m.graph.input[0], m.graph.output[0]):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = 2
    path = tmp_path / "fixed.onnx"
    onnx.save(m, path)
    np.savez(tmp_path / "six.npz", input=np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32))
    c = compare(path, path, inputs=tmp_path / "six.npz")
    assert c.samples == 6 and c.outputs[0].shape == (6, 10) and c.outputs[0].max_abs == 0
    np.savez(tmp_path / "five.npz", input=np.zeros((5, 3, 16, 16), np.float32))
    with pytest.raises(UsageError, match="fixed batch"):
        compare(path, path, inputs=tmp_path / "five.npz")


def test_cli_compare(models, tmp_path):
    orig, pruned = models["flatten_gemm"]
    res = invoke("compare", orig, pruned, "--samples", "4", "--save-inputs", tmp_path / "i.npz")
    assert res.exit_code == 0, res.output
    assert "cosine" in res.output and (tmp_path / "i.npz").exists()
    res = invoke("compare", orig, pruned, "--inputs", tmp_path / "i.npz", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["samples"] == 4 and {"max_abs", "max_rel", "cosine", "top1", "top5"} <= set(d["outputs"][0])
    res = invoke("compare", orig, tmp_path / "missing.onnx")
    assert res.exit_code == 3 and res.stderr.startswith("spa: error:")
    res = invoke("compare", orig, pruned, "--inputs", tmp_path / "nope.npz")
    assert res.exit_code == 2 and len(res.stderr.splitlines()) == 1


def test_cli_compare_tolerances(models):
    orig, pruned = models["flatten_gemm"]
    d = json.loads(invoke("compare", orig, pruned, "--json").stdout)
    worst = d["outputs"][0]["max_abs"]
    assert d["passed"] is None and worst > 0
    res = invoke("compare", orig, pruned, "--atol", worst * 1.01)
    assert res.exit_code == 0 and res.stdout.strip().splitlines()[-1].startswith("PASSED"), res.output
    res = invoke("compare", orig, pruned, "--atol", worst / 2)
    assert res.exit_code == 1 and res.stdout.strip().splitlines()[-1].startswith("FAILED"), res.output
    res = invoke("compare", orig, pruned, "--rtol", 0)  # rtol alone: atol 0, and the outputs differ
    assert res.exit_code == 1 and "FAILED (1 of 1 outputs outside atol 0, rtol 0" in res.stdout, res.output
