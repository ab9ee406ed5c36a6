"""A 200-case slice of the fuzzer (tools/fuzz.py, spa.testing.fuzz_run) (in-process, in killable workers), and checks
that the fuzzer's own detectors fire."""

from spa.testing import fuzz_run as fuzz

PROBLEMS = ["traceback", "hang", "crash", "internal", "leftover", "input-modified", "multiline", "bad-output"]


def test_fuzz_slice_finds_no_problem():
    counts, failures = fuzz.fuzz(200, seed=0, mode="worker", timeout=10, progress=False)
    assert counts["cases"] == 200
    assert counts["exit 0"] > 0 and counts["exit 3"] > 0  # the slice reaches both ends of the pipeline
    report = [f"case {i} ({label}): {p}" for i, label, _, problems in failures for p in problems]
    assert not any(counts[k] for k in PROBLEMS), "\n".join(report)


def test_detectors(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert fuzz.check_case(str(tmp_path), None, "") == [("hang", "")]
    kinds = [k for k, _ in fuzz.check_case(str(tmp_path), 3, "Traceback (most recent call last):\n  boom")]
    assert "traceback" in kinds and "multiline" in kinds
    (tmp_path / "out.onnx.spa.tmp").write_bytes(b"half")
    assert ("leftover", "out.onnx.spa.tmp") in fuzz.check_case(str(tmp_path), 3, "spa: error: bad")
    assert [k for k, _ in fuzz.check_case(str(tmp_path), 10, "spa: internal error: X")] == ["internal", "leftover"]
    assert fuzz.check_case(str(tmp_path), -11, "")[0][0] == "crash"


def test_worker_detects_a_hang_and_recovers(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    worker = fuzz.Worker()
    try:
        assert worker.run(["prune", str(model), "--ratio", "0.3"], timeout=0.001) == (None, "")
        code, text = worker.run(["prune", str(model), "--ratio", "0.3"], timeout=60)
        assert code == 3 and "not a readable ONNX model" in text
    finally:
        worker.close()
