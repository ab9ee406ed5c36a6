"""onnxruntime's per-kernel profile of one model under the bench settings, on CPU or CUDA.

CPU: the profiler's node events time each kernel as it runs.

CUDA: kernels run asynchronously, so a node's event times its launch, not its work. The
profile is taken in a child process with CUDA_LAUNCH_BLOCKING=1, where each launch returns
once its kernel has finished: an event then holds the node's GPU time plus one launch and
wait. That per-node cost is estimated as the shortest event the CUDA provider ran (a node
with next to no work) and taken off each CUDA event. The wall time per run is measured in
this process with launches not blocking, inputs and outputs bound on the GPU (as spa.bench
runs it), so what the kernels do not account for (launch-bound stretches, copies) is wall
time beyond the kernels.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import onnx

from ..errors import ModelError, first_line
from ..runtime import random_feeds
from .bench import BenchSettings, Runner, input_specs, make_session, model_name, model_source, session_options

CUDA_PROVIDER = "CUDAExecutionProvider"


def kernel_events(model, settings: BenchSettings, runs: int) -> tuple[list, float]:
    """(onnxruntime's kernel events of the last `runs` runs, in execution order; wall ms per run)
    under the benchmark's settings at its first batch. On CUDA each event's "dur" is the
    node's GPU time (see the module's note)."""
    if settings.device == "cuda":
        return _cuda_events(model, settings, runs)
    with tempfile.TemporaryDirectory(prefix="spa-profile-") as tmp:
        events, wall = _profiled(model, settings, runs, tmp)
    return events, wall


def _profiled(model, settings: BenchSettings, runs: int, tmp: str) -> tuple[list, float]:
    """Profile `runs` runs after the warm-up in this process: (kernel events, wall ms per run)."""
    warmup = max(settings.warmup, 1)
    opts = session_options(settings)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "profile")
    sess = make_session(model, settings, opts)
    run = Runner(sess, random_feeds(input_specs(sess, settings.batches[0], settings.input_shapes), settings.seed),
                 settings.device)
    for _ in range(warmup):
        run()
    t = time.perf_counter()
    for _ in range(runs):
        run()
    wall = (time.perf_counter() - t) * 1000 / runs
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    return kernels[len(kernels) - len(kernels) // (warmup + runs) * runs:], wall


def _cuda_events(model, settings: BenchSettings, runs: int) -> tuple[list, float]:
    with tempfile.TemporaryDirectory(prefix="spa-profile-") as tmp:
        if isinstance(model, onnx.ModelProto):
            path = os.path.join(tmp, "model.onnx")
            onnx.save(model, path)
        else:
            path = os.path.abspath(model_source(model))
        req = {"model": path, "settings": {**asdict(settings), "batches": list(settings.batches)},
               "runs": runs, "tmp": tmp}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        p = subprocess.run([sys.executable, "-c", "from spa.measure.profile import _child_main; _child_main()"],
                           input=json.dumps(req), capture_output=True, text=True, env=env, timeout=3600)
        if p.returncode != 0:
            raise ModelError(f"{model_name(model, 0)}: the CUDA profile failed "
                             f"({first_line(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode)})")
        with open(p.stdout.strip()) as f:
            events = json.load(f)
        wall = _wall(path, settings, runs)
    cuda = [e["dur"] for e in events if e["args"].get("provider") == CUDA_PROVIDER]
    floor = min(cuda) if cuda else 0
    for e in events:
        if e["args"].get("provider") == CUDA_PROVIDER:
            e["dur"] -= floor
    return events, wall


def _wall(path, settings: BenchSettings, runs: int) -> float:
    """Median wall ms per run, launches not blocking."""
    sess = make_session(path, settings)
    run = Runner(sess, random_feeds(input_specs(sess, settings.batches[0], settings.input_shapes), settings.seed),
                 settings.device)
    for _ in range(max(settings.warmup, 1)):
        run()
    return statistics.median(run.timed(n=max(runs, 10)))


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
