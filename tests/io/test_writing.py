"""Writing: the input is never modified, output is atomic and needs --force to
replace a file, the same input gives the same bytes (across processes too), and large
weights are read lazily from external data and written to an external data file."""

import hashlib
import os
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import spa
import spa.api
from spa.testing.nets import ALL
from spa.cli import main
from spa.io.external import ExternalValues
from spa.io import const_value, load
from spa.io import Staged
from spa.runtime import random_inputs, run

from spa.testing.graphs import sandwich
from spa.testing.mlp import build as build_mlp
from spa.testing.quant import qweight


def digest(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
        else:
            out[name] = "dir"
    return out


@pytest.fixture
def mlp(tmp_path):
    """A small Llama-style MLP stack whose weights (128 KB each) live in external data."""
    return build_mlp(str(tmp_path), blocks=2, hidden=128, inter=256, seq=4)


def feeds(path):
    m = load(path)
    return random_inputs(m.proto, m.input_shapes, 1)


# -- lazy reading ---------------------------------------------------------------------
def test_external_weights_are_mapped_read_only_not_loaded(mlp):
    m = load(mlp)
    weights = [t for t in m.graph.tensors().values() if t.name.endswith(("gate", "up", "down"))]
    assert len(weights) == 6
    for t in weights:
        assert isinstance(t._values, ExternalValues)
        v = const_value(t)
        assert not v.flags.writeable and not v.flags.owndata
    assert m.proto.ByteSize() < 10_000  # the proto holds no weight bytes
    assert m.store.data_bytes == 6 * 128 * 256 * 4
    with pytest.raises(ValueError):
        const_value(weights[0])[0, 0] = 1.0  # the input's data can never be written through


# -- external data output -----------------------------------------------------------------
def test_external_output_equals_in_memory_pruning(mlp, tmp_path):
    out = str(tmp_path / "out.onnx")
    result = spa.prune(mlp, out, ratio=0.3, external_data=True)
    assert os.path.getsize(out) < 10_000 and os.path.exists(out + ".data")
    assert result.verdict.checker and result.after.params < result.before.params
    x = feeds(mlp)
    in_memory = spa.prune(onnx.load(mlp), ratio=0.3)
    want = run(in_memory.model, x)
    got = run(out, x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    masked = run(spa.masked(onnx.load(mlp), result.sinks, result.updates), x)
    for name in want:
        np.testing.assert_allclose(got[name], masked[name], rtol=1e-4, atol=1e-4)


def test_int4_weights_go_to_the_data_file_two_a_byte(tmp_path):
    """conv0 (8) -> Conv by an int4 QDQ weight [96, 8, 3, 3] -> tail: the pruned integers
    (6912 -> 4860 values) are written to the data file packed, as ONNX reads them."""
    def fn(g, x):
        w = qweight(g, "mid_w", g.randn(96, 8, 3, 3, scale=0.1), dtype="int4")
        return g.op("Conv", [x, w], name="mid", c=96, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 96

    src, out = str(tmp_path / "q.onnx"), str(tmp_path / "o.onnx")
    onnx.save(sandwich(fn, opset=21), src)
    r = spa.prune(src, out, ratio=0.3, external_data=True)
    assert r.verdict.checker and r.verdict.outputs_match
    q = next(t for t in onnx.load(out, load_external_data=False).graph.initializer if t.name == "mid_w_q")
    assert q.data_location == onnx.TensorProto.EXTERNAL and q.data_type == onnx.TensorProto.INT4
    assert int(next(e.value for e in q.external_data if e.key == "length")) == (int(np.prod(q.dims)) + 1) // 2


def test_small_external_input_gives_one_file_by_default(mlp, tmp_path):
    out = tmp_path / "out.onnx"
    spa.prune(mlp, str(out), ratio=0.3)
    assert not os.path.exists(str(out) + ".data")
    m = onnx.load(str(out), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def test_external_data_is_automatic_above_the_threshold(mlp, tmp_path, monkeypatch):
    monkeypatch.setattr(spa.api, "EXTERNAL_ABOVE", 100_000)
    out = tmp_path / "out.onnx"
    spa.prune(mlp, str(out), ratio=0.3)
    assert os.path.getsize(str(out) + ".data") > 100_000


def test_external_data_of_an_in_memory_model(tmp_path):
    out = tmp_path / "out.onnx"
    res = CliRunner().invoke(main, ["prune", _save(tmp_path), str(out), "--ratio", "0.3", "--external-data"])
    assert res.exit_code == 0, res.output
    assert os.path.exists(str(out) + ".data")
    onnx.checker.check_model(str(out), full_check=True)


def test_shape_annotations_follow_the_original(tmp_path):
    """The pruned model annotates the tensors the original annotated, with their new
    shapes, and no others: extra annotations change which fusions onnxruntime applies."""
    bare = ALL["resnet"]()
    del bare.graph.value_info[:]
    annotated = onnx.shape_inference.infer_shapes(bare)
    assert annotated.graph.value_info
    for name, proto in (("bare", bare), ("annotated", annotated)):
        out = spa.prune(proto, ratio=0.5).model
        names = {vi.name for vi in out.graph.value_info}
        assert names == {vi.name for vi in proto.graph.value_info} & {o for n in out.graph.node for o in n.output}
        fresh = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(out).graph.value_info}
        for vi in out.graph.value_info:
            assert vi.type == fresh[vi.name].type, vi.name
    assert any(vi.type != {v.name: v for v in annotated.graph.value_info}[vi.name].type
               for vi in out.graph.value_info)


# -- the input is never modified; nothing is left behind -------------------------------------
def _save(folder, name="m.onnx"):
    path = os.path.join(folder, name)
    onnx.save(ALL["resnet"](), path)
    return path


@pytest.mark.parametrize("args", [["--ratio", "0.3"], ["--ratio", "0.3", "--external-data"]])
def test_success_changes_nothing_but_the_output(mlp, tmp_path, args):
    before = digest(tmp_path)
    res = CliRunner().invoke(main, ["prune", mlp, str(tmp_path / "o.onnx")] + args)
    assert res.exit_code == 0, res.output
    after = digest(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"o.onnx"} | ({"o.onnx.data"} if "--external-data" in args else set())


def test_failure_changes_nothing(mlp, tmp_path):
    before = digest(tmp_path)
    res = CliRunner().invoke(main, ["prune", mlp, str(tmp_path / "o.onnx"), "--ratio", "0.3",
                                    "--exclude", "*", "--external-data"])
    assert res.exit_code == 4, res.output
    assert digest(tmp_path) == before


def test_staged_files_are_removed_when_writing_fails(tmp_path):
    out = tmp_path / "o.onnx"
    with pytest.raises(RuntimeError):
        with Staged(str(out)) as st:
            with open(st.data, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("killed half-way")
    assert os.listdir(tmp_path) == []


def test_output_has_a_plain_file_mode(tmp_path):
    out = tmp_path / "o.onnx"
    spa.prune(_save(tmp_path), str(out), ratio=0.3)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask


# -- --force and clobbering ------------------------------------------------------------------
def test_existing_data_file_needs_force(mlp, tmp_path):
    out = tmp_path / "o.onnx"
    (tmp_path / "o.onnx.data").write_bytes(b"keep me")
    args = ["prune", mlp, str(out), "--ratio", "0.3", "--external-data"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "o.onnx.data" in res.output
    assert (tmp_path / "o.onnx.data").read_bytes() == b"keep me" and not out.exists()
    assert CliRunner().invoke(main, args + ["--force"]).exit_code == 0
    assert (tmp_path / "o.onnx.data").stat().st_size > 100_000


def test_output_data_file_may_not_be_the_inputs(tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(ALL["resnet"](), path, save_as_external_data=True, location="o.onnx.data", size_threshold=0)
    before = digest(tmp_path)
    res = CliRunner().invoke(main, ["prune", path, str(tmp_path / "o.onnx"), "--ratio", "0.3",
                                    "--external-data", "--force"])
    assert res.exit_code == 2 and "overwrite the input" in res.output
    res = CliRunner().invoke(main, ["prune", path, str(tmp_path / "o.onnx.data"), "--ratio", "0.3", "--force"])
    assert res.exit_code == 2 and "overwrite the input" in res.output
    assert digest(tmp_path) == before


# -- reproducible output -------------------------------------------------------------------------
def test_same_input_same_bytes(tmp_path):
    path = _save(tmp_path)
    for name in ("a.onnx", "b.onnx"):
        spa.prune(path, str(tmp_path / name), ratio=0.3, global_ranking=True)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.parametrize("extra", [[], ["--external-data"]])
def test_same_bytes_across_processes(mlp, tmp_path, extra):
    outs = []
    for seed in ("1", "2"):  # same file names: the model names its data file
        (tmp_path / seed).mkdir()
        out = str(tmp_path / seed / "o.onnx")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        cmd = [sys.executable, "-c", "from spa.cli import main; main()", "prune", mlp, out, "--ratio", "0.3"]
        subprocess.run(cmd + extra, check=True, capture_output=True, env=env)
        outs.append(out)
    for suffix in ["", ".data"] if extra else [""]:
        with open(outs[0] + suffix, "rb") as a, open(outs[1] + suffix, "rb") as b:
            assert a.read() == b.read()


def test_verify_false_is_reported(tmp_path):
    result = spa.prune(_save(tmp_path), ratio=0.3, verify=False)
    assert not result.verdict.checker
    assert "not verified" in spa.cli.text.prune_text(result)
