"""Killing a worker mid-sweep: the sweep stops with exit 1 and keeps what finished; the same
command then runs only the missing candidates (issue #23, done-when 3)."""

import json
import os
import signal
import subprocess
import sys
import time

from spa.testing import REPO

from .conftest import FAST, records

GRID = ["--ratios", "0.1,0.2,0.3,0.4,0.5", "--criteria", "obspa"]  # 10 candidates of about 0.3 s each


def _workers(pid) -> list:
    """The sweep's worker processes: its children that run multiprocessing's spawn_main."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        out.append(k)
            except OSError:
                pass
    return out


def _sweep(nets, out):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-m", "spa.cli", "sweep", str(nets), *GRID, *FAST, "--out", str(out),
                             "--json", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_kill_worker_then_resume(nets, tmp_path):
    out = tmp_path / "out"
    p = _sweep(nets, out)
    killed = None
    end = time.monotonic() + 120
    while time.monotonic() < end and p.poll() is None:
        if (out / "results.jsonl").exists() and records(out):
            workers = _workers(p.pid)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
                break
        time.sleep(0.02)
    stdout, stderr = p.communicate(timeout=120)
    assert killed is not None, stderr
    assert p.returncode == 1, stderr
    assert "worker process died" in stderr.strip().splitlines()[-1]
    first = json.loads(stdout)
    finished = (out / "results.jsonl").read_text().splitlines()
    assert 1 <= len(finished) < 10 and first["missing"]
    assert sorted(first["ran"]) == sorted(json.loads(line)["id"] for line in finished)
    assert len(first["ran"]) + len(first["missing"]) == 10

    p = _sweep(nets, out)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    second = json.loads(stdout)
    done_before = [json.loads(line)["id"] for line in finished]
    assert sorted(second["reused"]) == sorted(done_before)
    assert sorted(second["ran"]) == sorted(set(r["id"] for r in second["records"]) - set(done_before))
    assert len(second["records"]) == 10 and all(r["status"] == "ok" for r in second["records"])
    now = (out / "results.jsonl").read_text().splitlines()
    assert set(finished) <= set(now)  # the finished records (timings included) are kept as they were
