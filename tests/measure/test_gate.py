"""spa.gate: each check passing and failing, the config table, reports, exit codes."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import spa
from spa.testing.nets import ALL
from spa.cli import main
from spa.errors import ModelError, UsageError
from spa.measure.gate import Thresholds, gate, gate_text, junit_xml, parse_size, read_config, thresholds


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    orig, pruned = str(d / "m.onnx"), str(d / "m.pruned.onnx")
    onnx.save(ALL["flatten_gemm"](), orig)
    spa.prune(orig, pruned, ratio=0.5)
    return orig, pruned


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def names(result, failed=True):
    return [c.name for c in result.checks if c.passed != failed]


def _save(tmp_path, proto, name):
    path = tmp_path / name
    onnx.save(proto, path)
    return str(path)


# -- validity ---------------------------------------------------------------------------------
def test_validity_only_passes(pair):
    r = gate(*pair)
    assert r.passed and names(r, failed=False) == ["loads", "checker", "runs", "interface"]


def test_unloadable_file_fails(pair, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    r = gate(pair[0], bad, Thresholds(min_cosine=0.5, max_file_size=10**9))
    assert not r.passed and names(r) == ["loads", "runs", "cosine"]
    assert names(r, failed=False) == ["file_size"]


def test_checker_failure(pair, tmp_path):
    m = onnx.load(pair[1])
    m.graph.node[0].op_type = "NoSuchOp"
    r = gate(pair[0], _save(tmp_path, m, "c.onnx"))
    assert names(r) == ["checker", "runs"]


def test_run_failure(pair, tmp_path):
    m = onnx.load(pair[1])
    w = next(t for t in m.graph.initializer if t.name == m.graph.node[0].input[1])
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[:, :2], w.name))  # 2 of 3 input channels
    r = gate(pair[0], _save(tmp_path, m, "r.onnx"), Thresholds(max_latency_ratio=10, min_top1=0.1))
    assert names(r, failed=False) == ["loads", "checker", "interface"]
    assert names(r) == ["runs", "latency_ratio", "top1"]
    assert "not measured" in r.checks[-1].detail


def test_interface_failure(pair, tmp_path):
    m = onnx.load(pair[1])
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    r = gate(pair[0], _save(tmp_path, m, "i.onnx"))
    assert names(r) == ["interface"] and "declared outputs differ" in r.checks[-1].detail


def test_produced_output_shape_is_checked(pair, tmp_path):
    m = onnx.load(pair[1])  # a model that claims [N, 10] but produces [N, 9]
    last = m.graph.node[-1]
    for i in (1, 2):
        t = next(t for t in m.graph.initializer if t.name == last.input[i])
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:9], t.name))
    r = gate(pair[0], _save(tmp_path, m, "o.onnx"), Thresholds(min_cosine=0.0))
    assert "interface" in names(r) and "cosine" in names(r)


# -- thresholds -------------------------------------------------------------------------------
def test_reductions(pair):
    r = gate(*pair, Thresholds(min_macs_reduction=0.3, min_params_reduction=0.3))
    assert r.passed and r.measured["stats"]["pruned"]["macs"] < r.measured["stats"]["original"]["macs"]
    r = gate(*pair, Thresholds(min_macs_reduction=0.99, min_params_reduction=0.99))
    assert names(r) == ["macs_reduction", "params_reduction"]
    assert r.checks[-1].detail.startswith("would pass with min_params_reduction <=")
    r = gate(pair[0], pair[0], Thresholds(min_macs_reduction=0.01))
    assert names(r) == ["macs_reduction"] and r.checks[-1].value == 0


def test_latency_ratio(pair):
    r = gate(*pair, Thresholds(max_latency_ratio=100.0, runs=3, warmup=1, batch=2))
    assert r.passed and r.measured["latency"]["batch"] == 2
    assert "explanation" not in r.measured["latency"]
    r = gate(*pair, Thresholds(max_latency_ratio=1e-6, runs=3, warmup=1))
    assert names(r) == ["latency_ratio"] and "would pass with max_latency_ratio >=" in r.checks[-1].detail
    why = r.measured["latency"]["explanation"]  # a failed latency check says why, as bench --explain does
    assert why["runs"] == 3 and why["kinds"]
    assert "op kind" in gate_text(r) and "layout reorders per run" in gate_text(r)


def test_fidelity(pair):
    r = gate(pair[0], pair[0], Thresholds(min_cosine=1.0, min_top1=1.0))
    assert r.passed and [c.output for c in r.checks if c.name in ("cosine", "top1")] == ["gemm_1", "gemm_1"]
    r = gate(*pair, Thresholds(min_cosine=1.0, min_top1=1.0, samples=64))
    assert names(r) == ["cosine", "top1"]
    cos = next(c for c in r.checks if c.name == "cosine")
    assert cos.output and cos.value < 1 and f"min_cosine <= {str(cos.value)[:6]}" in cos.detail
    assert "atol" in cos.detail and "rtol" in cos.detail


def test_top1_needs_a_classifier_output(tmp_path):
    path = _save(tmp_path, ALL["fpn"](), "fpn.onnx")
    r = gate(path, path, Thresholds(min_top1=0.5, min_cosine=0.99))
    assert names(r) == ["top1"] and "no classifier output" in r.checks[-1].detail
    assert [c.output for c in r.checks if c.name == "cosine"] == [o.name for o in onnx.load(path).graph.output]


def test_fidelity_on_given_inputs(pair, tmp_path):
    np.savez(tmp_path / "x.npz", input=np.ones((3, 3, 16, 16), np.float32))
    r = gate(*pair, Thresholds(min_cosine=-1.0, inputs=str(tmp_path / "x.npz")))
    assert r.passed and tuple(r.measured["fidelity"][0]["shape"]) == (3, 10)


def test_file_size(pair):
    assert gate(*pair, Thresholds(max_file_size=10**8)).passed
    r = gate(*pair, Thresholds(max_file_size=100))
    assert names(r) == ["file_size"] and r.checks[-1].value > 100


def test_missing_files_are_errors(pair, tmp_path):
    with pytest.raises(ModelError):
        gate(pair[0], tmp_path / "missing.onnx")
    with pytest.raises(ModelError):
        gate(tmp_path / "missing.onnx", pair[1])


# -- configuration ----------------------------------------------------------------------------
def test_parse_size():
    assert parse_size(1234) == 1234 and parse_size("25MB") == 25_000_000 and parse_size("2KiB") == 2048
    assert parse_size("1.5 GB") == 1_500_000_000 and parse_size("300b") == 300
    with pytest.raises(UsageError):
        parse_size("lots")


def test_config_and_flags(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.spa.gate]\nmin-macs-reduction = 0.2\nmax_file_size = "5MB"\n'
        'batch = 8\ninputs = "data/x.npz"\n')
    monkeypatch.chdir(tmp_path)
    table, base = read_config()
    th = thresholds(table, {"min_macs_reduction": 0.4, "min_cosine": None}, base)
    assert th.min_macs_reduction == 0.4 and th.max_file_size == 5_000_000 and th.batch == 8
    assert th.inputs == str(tmp_path / "data" / "x.npz") and th.min_cosine is None
    assert th.given() == {"min_macs_reduction": 0.4, "max_file_size": 5_000_000}
    with pytest.raises(UsageError, match="unknown key"):
        thresholds({"min_cosin": 0.9}, {})
    with pytest.raises(UsageError, match="between 0 and 1"):
        thresholds({"min_top1": 2}, {})
    with pytest.raises(UsageError, match="batch"):
        thresholds({"batch": 1.5}, {})
    with pytest.raises(UsageError, match="no such config"):
        read_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[tool.spa.gate\n")
    with pytest.raises(UsageError, match="TOML"):
        read_config(tmp_path / "bad.toml")
    monkeypatch.chdir(tmp_path / "data")
    assert read_config() == ({}, None)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_exit_codes_and_reports(pair, tmp_path):
    res = invoke("gate", *pair)
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.stdout and "interface" in res.stdout
    res = invoke("gate", *pair, "--min-macs-reduction", "0.99", "--max-file-size", "1GB",
                 "--json-out", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.stdout and "FAILED (1 of 6 checks)" in res.stdout
    d = json.loads((tmp_path / "g.json").read_text())
    assert d["passed"] is False and d["thresholds"]["max_file_size"] == 10**9
    assert [c["name"] for c in d["checks"] if not c["passed"]] == ["macs_reduction"]
    suite = ET.parse(tmp_path / "g.xml").getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "1"
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["macs_reduction"]


def test_cli_json_to_stdout(pair):
    res = invoke("gate", *pair, "--json", "--min-cosine", "0.0")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["checks"][-1]["name"] == "cosine"


def test_cli_reads_pyproject(pair, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.spa.gate]\nmin_params_reduction = 0.99\n")
    monkeypatch.chdir(tmp_path)
    res = invoke("gate", *pair)
    assert res.exit_code == 1 and "params_reduction" in res.stdout
    res = invoke("gate", *pair, "--min-params-reduction", "0.1")
    assert res.exit_code == 0
    cfg = tmp_path / "other.toml"
    cfg.write_text("[tool.spa.gate]\nmax_file_size = 10\n")
    res = invoke("gate", *pair, "--config", cfg)
    assert res.exit_code == 1 and "file_size" in res.stdout


@pytest.mark.parametrize("args, code", [
    (["--min-cosine", "2"], 2), (["--max-file-size", "big"], 2), (["--config", "/nonexistent.toml"], 2),
    (["--input-shape", "bad"], 2), (["--device", "cuda", "--max-latency-ratio", "1"], 2)])
def test_cli_usage_errors(pair, args, code):
    res = invoke("gate", *pair, *args)
    if args[:2] == ["--device", "cuda"] and res.exit_code in (0, 1):
        pytest.skip("CUDA works here")
    assert res.exit_code == code, res.output
    assert res.stderr.startswith("spa: error:") and len(res.stderr.splitlines()) == 1


def test_cli_missing_pruned_file(pair, tmp_path):
    res = invoke("gate", pair[0], tmp_path / "none.onnx")
    assert res.exit_code == 3 and "no such file" in res.stderr


def test_junit_escapes_and_counts(pair):
    r = gate(*pair, Thresholds(max_file_size=1))
    root = ET.fromstring(junit_xml(r))
    assert root.get("failures") == "1" and root.find("testsuite/properties/property").get("value") == pair[0]

