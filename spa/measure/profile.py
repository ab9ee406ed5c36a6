"""onnxruntime's per-kernel profile of one model under the bench settings, on CPU or CUDA.

CPU: the profiler's node events time each kernel as it runs.

CUDA: kernels run asynchronously, so a node's event times its host work (launches), not its
GPU work. Two profiles are taken: one as the model runs, and one in a child process with
CUDA_LAUNCH_BLOCKING=1, where each launch returns once its kernel has finished. A node's GPU
time is its blocking event less its host event (both carry the profiler's own cost). Two
wall times are measured without the profiler, inputs and outputs bound on the GPU as
spa.bench runs them: the run (`wall_ms`), and the run with onnxruntime's closing
synchronisation turned off (`issue_ms`: the host's time to issue the run's work). A run
whose issue time is close to its wall time is launch-bound: fewer channels shorten the GPU
work, not the launches, so its latency cannot fall much below issue / wall.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import onnx
import onnxruntime as ort

from ..errors import ModelError, first_line
from ..runtime import random_feeds
from .bench import (BenchSettings, Runner, child_env, input_specs, make_session, model_name, model_source,
                    session_options)

CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class Profile:
    events: list  # onnxruntime's kernel events of the profiled runs, in execution order ("dur" in us)
    wall_ms: float  # per run
    issue_ms: float | None = None  # CUDA: host time to issue one run's work, not waiting for it


def kernel_events(model, settings: BenchSettings, runs: int) -> Profile:
    """The kernel events of `runs` runs after the warm-up under the benchmark's settings at its
    first batch. On CUDA each event's "dur" is the node's GPU time (see the module's note)."""
    if settings.device == "cuda":
        return _cuda_profile(model, settings, runs)
    with tempfile.TemporaryDirectory(prefix="spa-profile-") as tmp:
        return Profile(*_profiled(model, settings, runs, tmp))


def _profiled(model, settings: BenchSettings, runs: int, tmp: str) -> tuple[list, float]:
    """Profile `runs` runs after the warm-up in this process: (kernel events, wall ms per run)."""
    warmup = max(settings.warmup, 1)
    opts = session_options(settings)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "profile")
    sess, run = _warm(model, settings, opts)
    t = time.perf_counter()
    for _ in range(runs):
        run()
    wall = (time.perf_counter() - t) * 1000 / runs
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    return kernels[len(kernels) - len(kernels) // (warmup + runs) * runs:], wall


def _cuda_profile(model, settings: BenchSettings, runs: int) -> Profile:
    with tempfile.TemporaryDirectory(prefix="spa-profile-") as tmp:
        if isinstance(model, onnx.ModelProto):
            path = os.path.join(tmp, "model.onnx")
            onnx.save(model, path)
        else:
            path = os.path.abspath(model_source(model))
        host, _ = _profiled(path, settings, runs, tmp)  # first: a missing GPU is a DeviceError here
        req = {"model": path, "settings": {**asdict(settings), "batches": list(settings.batches)},
               "runs": runs, "tmp": tmp}
        p = subprocess.run([sys.executable, "-c", "from spa.measure.profile import _child_main; _child_main()"],
                           input=json.dumps(req), capture_output=True, text=True,
                           env=child_env(CUDA_LAUNCH_BLOCKING="1"), timeout=3600)
        if p.returncode != 0:
            why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit code {p.returncode}"
            raise ModelError(f"{model_name(model, 0)}: the CUDA profile failed ({first_line(why, 200)})")
        with open(p.stdout.strip()) as f:
            blocking = json.load(f)
        wall, issue = _walls(path, settings, runs)
    host_us: dict = {}
    for e in host:
        host_us[e["name"]] = host_us.get(e["name"], 0.0) + e["dur"] / runs
    for e in blocking:
        e["dur"] = max(0.0, e["dur"] - host_us.get(e["name"], 0.0))
    return Profile(blocking, wall, issue)


def _warm(model, settings: BenchSettings, opts=None):
    """(session, Runner at the settings' first batch) after the warm-up (at least one run)."""
    sess = make_session(model, settings, opts)
    run = Runner(sess, random_feeds(input_specs(sess, settings.batches[0], settings.input_shapes), settings.seed),
                 settings.device)
    for _ in range(max(settings.warmup, 1)):
        run()
    return sess, run


def _walls(model, settings: BenchSettings, runs: int = 20) -> tuple[float, float]:
    """(median ms per run, median ms to issue a run without its closing synchronisation: on CUDA
    the host's share of the run)."""
    sess, run = _warm(model, settings)
    nosync = ort.RunOptions()
    nosync.add_run_config_entry("disable_synchronize_execution_providers", "1")
    issue = []
    for _ in range(max(runs, 10)):
        t = time.perf_counter_ns()
        if run.io is not None:
            sess.run_with_iobinding(run.io, nosync)
        else:  # the CPU runs synchronously: issue time is run time
            sess.run(None, run.feeds, nosync)
        issue.append((time.perf_counter_ns() - t) / 1e6)
        run()  # waits for both runs: the next one starts on an idle GPU
    return statistics.median(run.timed(n=max(runs, 10))), statistics.median(issue)


def _child_main():
    """In a child started with CUDA_LAUNCH_BLOCKING=1: profile, write the kernel events to a
    file in the request's folder, print its path."""
    req = json.load(sys.stdin)
    s = BenchSettings(**{**req["settings"], "batches": tuple(req["settings"]["batches"])})
    events, _ = _profiled(req["model"], s, req["runs"], req["tmp"])
    out = os.path.join(req["tmp"], "kernels.json")
    with open(out, "w") as f:
        json.dump(events, f)
    print(out)
