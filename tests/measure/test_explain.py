"""spa bench --explain: the explanation's structure on a small model (never its timings)."""

import json

import onnx
import pytest
from click.testing import CliRunner

import spa
from spa.cli import main
from spa.errors import UsageError
from spa.measure.bench import BenchSettings
from spa.measure.explain import conv_kind, explain, explain_text
from spa.measure.profile import _cuda_profile, kernel_events
from spa.testing.nets import ALL

QUICK = BenchSettings(batches=(2,), warmup=1, runs=3, threads=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    orig = str(d / "mobilenetv2.onnx")
    onnx.save(ALL["mobilenetv2"](), orig)
    pruned = str(d / "mobilenetv2.pruned.onnx")
    spa.prune(orig, pruned, ratio=0.5, criterion="l2")
    return orig, pruned


def test_conv_kinds_from_shapes():
    assert conv_kind([1, 32, 8, 8], [32, 1, 3, 3]) == "Conv depthwise"
    assert conv_kind([1, 32, 8, 8], [64, 16, 3, 3]) == "Conv grouped"
    assert conv_kind([1, 32, 8, 8], [64, 32, 1, 1]) == "Conv 1x1"
    assert conv_kind([1, 3, 8, 8], [16, 3, 3, 3]) == "Conv kxk"


def test_explanation_structure(pair):
    e = explain(pair, QUICK, runs=3)
    kinds = {k.kind: k for k in e.kinds}
    assert {"Conv depthwise", "Conv 1x1"} <= set(kinds)
    for k in e.kinds:  # pruning removes MACs, never adds them; kernel counts are whole
        assert k.macs_after <= k.macs_before and k.before_ms >= 0 and k.after_ms >= 0
    conv = kinds["Conv 1x1"]
    assert 0 < conv.macs_after < conv.macs_before and conv.kernels_before >= 1
    assert e.total_ms[0] == pytest.approx(sum(k.before_ms for k in e.kinds))
    assert e.shrank_least in kinds and set(e.lagging) <= set(kinds)
    assert all(len(t) <= 10 for t in e.top) and e.top[0][0].ms >= e.top[0][-1].ms
    d = json.loads(json.dumps(e.to_dict()))
    assert d["kinds"][0]["time_ratio"] is not None and d["batch"] == 2
    text = explain_text(e)
    assert "shrank least: " + e.shrank_least in text and "layout reorders per run" in text
    assert text.count("\n") < 60  # one screen


def test_explain_needs_two_models(pair):
    with pytest.raises(UsageError, match="two models"):
        explain(pair[:1], QUICK)


def test_cli_explain(pair):
    r = CliRunner().invoke(main, ["bench", "--explain", *pair, "--batch", "2", "--runs", "3", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "op kind" in r.output and "Conv depthwise" in r.output
    r = CliRunner().invoke(main, ["bench", "--explain", pair[0]])
    assert r.exit_code != 0 and "two models" in r.output and "Traceback" not in r.output


def test_two_profile_plumbing_of_cuda_runs_on_the_cpu(pair):
    """CUDA's profile (a blocking profile in a child process, less the host profile; issue and
    wall times) run with CPU settings: there both profiles time the same kernels, so what is
    left per node is noise around zero, and a run is issued as long as it runs."""
    host = kernel_events(pair[0], QUICK, 3)
    p = _cuda_profile(pair[0], QUICK, 3)
    assert [e["name"] for e in p.events] == [e["name"] for e in host.events]
    assert all(e["dur"] >= 0 for e in p.events)
    assert sum(e["dur"] for e in p.events) < sum(e["dur"] for e in host.events)
    assert host.issue_ms is None and p.issue_ms > 0.3 * p.wall_ms > 0
