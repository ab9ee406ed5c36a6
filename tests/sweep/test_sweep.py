"""spa sweep in local processes: records, table, resume, failing candidates, --pick, --jobs."""

import json
import os

import onnx

import spa
from spa.sweep import comparable, front

from .conftest import FAST, GRID, invoke, records

IDS = [f"{m}/ratio={r}/{c}" for m in ("mobilenetv2", "resnet") for r in ("0.2", "0.5") for c in ("l2", "obspa")]


def test_local_sweep_records(local_sweep):
    out, res = local_sweep
    recs = records(out)
    assert [r["id"] for r in recs] == IDS  # sorted, one line per candidate
    assert res["ran"] == IDS and res["reused"] == [] and res["missing"] == []
    for r in recs:
        assert r["status"] == "ok", r
        assert r["before"]["macs"] > r["after"]["macs"] and r["after"]["file_size"] < r["before"]["file_size"]
        pruned = onnx.load(os.path.join(out, r["file"]))
        assert r["used_criterion"] == r["criterion"]
        assert 0 < r["fidelity"]["cosine"] <= 1 + 1e-6 and r["fidelity"]["samples"] == 8
        assert r["latency"]["runs"] == 3 and r["latency"]["ratio"] == (r["latency"]["pruned_p50_ms"]
                                                                        / r["latency"]["original_p50_ms"])
        assert {"prune_s", "compare_s", "bench_s", "total_s"} <= set(r["timings"])
        assert len(pruned.graph.node) > 0
    by = {r["id"]: r for r in recs}
    for m in ("mobilenetv2", "resnet"):  # a larger ratio removes more
        assert by[f"{m}/ratio=0.5/l2"]["macs_reduction"] > by[f"{m}/ratio=0.2/l2"]["macs_reduction"]


def test_records_match_spa_prune(local_sweep, nets, tmp_path):
    """A record's MACs are those of the file it names, and of spa prune with the same settings."""
    out, _ = local_sweep
    r = next(r for r in records(out) if r["id"] == "resnet/ratio=0.5/obspa")
    assert spa.analyze(os.path.join(out, r["file"])).stats.macs == r["after"]["macs"]
    res = invoke("prune", nets / "resnet.onnx", tmp_path / "p.onnx", "--ratio", "0.5", "--criterion", "obspa",
                 "--threads", "1", "--json", "-q")
    after = json.loads(res.stdout)["after"]
    assert (after["params"], after["macs"]) == (r["after"]["params"], r["after"]["macs"])


def test_rerun_reuses_everything(local_sweep, nets):
    out, _ = local_sweep
    before = (out / "results.jsonl").read_text()
    res = json.loads(invoke("sweep", nets, *GRID, *FAST, "--out", out, "--json", "-q").stdout)
    assert res["ran"] == [] and res["reused"] == IDS
    assert (out / "results.jsonl").read_text() == before  # timings included: nothing was redone


def test_table_and_report(local_sweep, nets):
    out, _ = local_sweep
    text = invoke("sweep", nets, *GRID, *FAST, "--out", out, "-q").stdout
    assert all(i in text for i in IDS) and "8 candidates: 0 run now, 8 reused" in text
    page = (out / "report.html").read_text()
    assert "<script src" not in page and "<link" not in page and page.count("<svg") == 4


def test_jobs_2_gives_the_same_records(local_sweep, nets, tmp_path):
    out, _ = local_sweep
    invoke("sweep", nets, *GRID, *FAST, "--out", tmp_path / "j2", "--jobs", "2", "-q")
    assert [comparable(r) for r in records(tmp_path / "j2")] == [comparable(r) for r in records(out)]


def test_failing_candidate_is_recorded(nets, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    (d / "broken.onnx").write_bytes(b"not onnx at all")
    (d / "resnet.onnx").write_bytes((nets / "resnet.onnx").read_bytes())
    res = json.loads(invoke("sweep", d, "--ratios", "0.3", "--criteria", "l2", *FAST, "--out", tmp_path / "o",
                            "--json", "-q").stdout)
    recs = {r["id"]: r for r in res["records"]}
    assert recs["broken/ratio=0.3/l2"]["status"] == "error" and recs["broken/ratio=0.3/l2"]["exit_code"] == 3
    assert recs["broken/ratio=0.3/l2"]["stage"] == "prune" and "broken.onnx" in recs["broken/ratio=0.3/l2"]["error"]
    assert recs["resnet/ratio=0.3/l2"]["status"] == "ok"
    assert "broken" in (tmp_path / "o" / "report.html").read_text()


def test_pick(local_sweep, nets, tmp_path):
    out, _ = local_sweep
    recs = records(out)
    limit = sorted(r["fidelity"]["cosine"] for r in recs if r["model"] == "resnet")[1]  # all but the worst meet it
    res = invoke("sweep", nets / "resnet.onnx", *GRID, *FAST, "--out", out, "--pick", f"cosine>={limit!r}", "--json",
                 "-q")
    picked = json.loads(res.stdout)["picked"]
    ok = [r for r in recs if r["model"] == "resnet" and r["fidelity"]["cosine"] >= limit]
    want = min(ok, key=lambda r: (r["latency"]["ratio"], r["id"]))
    assert picked == {"resnet": want["id"]}
    assert (out / "best" / "resnet.onnx").read_bytes() == (out / want["file"]).read_bytes()
    assert json.loads((out / "best" / "resnet.json").read_text())["id"] == want["id"]


def test_pick_none_qualifies(local_sweep, nets):
    out, _ = local_sweep
    res = invoke("sweep", nets, *GRID, *FAST, "--out", out, "--pick", "cosine>=1.5", "-q", code=1)
    assert "no candidate of mobilenetv2, resnet meets --pick cosine>=1.5" in res.output
    assert not (out / "best" / "resnet.onnx").exists()


def test_bad_arguments(nets, tmp_path):
    out = tmp_path / "o"
    for args, text in ((["--ratios", "0.3", "--pick", "accuracy>0.9"], "--pick"),
                       ([], "give --ratios, --target-macs or --target-latency"),
                       (["--ratios", "1.5"], "--ratios needs numbers between 0 and 1"),
                       (["--ratios", "0.3", "--criteria", "l7"], "unknown criterion l7"),
                       (["--ratios", "0.3", "--jobs", "2", "--ray"], "--jobs runs local processes")):
        res = invoke("sweep", nets, *args, "--out", out, code=2)
        assert res.output.strip().splitlines()[-1].startswith("spa: error:") and text in res.output, res.output
    res = invoke("sweep", tmp_path / "nothing.onnx", "--ratios", "0.3", "--out", out, code=2)
    assert "no such file or folder" in res.output


def test_front():
    pts = [(0.5, 0.9), (0.6, 0.95), (0.7, 0.9), (0.4, 0.5), (1.0, 1.0)]
    assert front(pts) == [3, 0, 1, 4]
