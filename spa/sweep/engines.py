"""Where candidates run: local worker processes (--jobs N), each pinned to its own CPUs, or
Ray tasks (--ray), each asking Ray for as many CPUs as it uses threads. Both yield records
as candidates finish; the caller stores them."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..errors import SpaError, UsageError
from .store import write_bytes
from .task import run_candidate


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where spa is imported from


class WorkerDied(SpaError):
    """A worker process ended without a result (killed, out of memory)."""

    exit_code = 1


# -- local processes --------------------------------------------------------------------------
def cpu_slots(jobs: int, threads: int) -> list:
    """CPU sets for `jobs` workers of `threads` threads each, from this process's CPUs; [] when
    they do not fit (the workers are then not pinned)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if jobs * threads > len(cpus):
        return []
    return [cpus[i * threads:(i + 1) * threads] for i in range(jobs)]


def _pin(slots):
    """Worker start-up: take the next free CPU set and keep to it."""
    if slots is not None:
        os.sched_setaffinity(0, slots.get())


def local(candidates, settings, out_dir, jobs: int):
    """Run candidates in `jobs` worker processes; yield each record as it finishes.

    Raises:
        WorkerDied: a worker ended without a result; the records yielded so far stand.
    """
    if not candidates:
        return
    jobs = min(jobs, len(candidates))
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding BLAS and onnxruntime threads
    slots = None
    sets = cpu_slots(jobs, settings.threads)
    if sets:
        slots = ctx.Queue()
        for s in sets:
            slots.put(s)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_pin, initargs=(slots,)) as pool:
        futures = [pool.submit(run_candidate, c, settings, out_dir) for c in candidates]
        try:
            for f in as_completed(futures):
                yield f.result()
        except BrokenProcessPool as exc:
            raise WorkerDied("a worker process died before finishing its candidate; the finished candidates "
                             "are saved: run the same command again to finish the rest") from exc
        finally:
            for f in futures:
                f.cancel()


# -- Ray ----------------------------------------------------------------------------------------
def on_ray(candidates, settings, out_dir, address=None):
    """Run candidates as Ray tasks on a local Ray instance (address None) or a cluster; yield
    each record as it finishes. The pruned model comes back through Ray's object store, so
    the nodes need not share DIR (they do need MODEL, --calib and --inputs at the same paths)."""
    if not candidates:
        return
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install \"spa-prune[ray]\"") from None
    env = {"PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False,
                     log_to_driver=False, logging_level="error", configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"--ray-address {address}: cannot connect to Ray ({exc})") from exc
    try:
        task = ray.remote(num_cpus=settings.threads, max_retries=1)(_ray_task)
        pending, lost = [task.remote(c, settings) for c in candidates], 0
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    rec, data = ray.get(ref)
                except ray.exceptions.RayError:  # the worker or its node died (after Ray's retry)
                    lost += 1
                    continue
                if data is not None:
                    write_bytes(os.path.join(out_dir, rec["file"]), data)
                yield rec
        if lost:
            raise WorkerDied(f"{lost} Ray task(s) died before finishing their candidate; the finished candidates "
                             "are saved: run the same command again to finish the rest")
    finally:
        if started:
            ray.shutdown()


def _ray_task(c, settings):
    """In a Ray worker: run the candidate in a scratch folder; return its record and the pruned
    model's bytes (None when it failed)."""
    import ray
    ctx = ray.get_runtime_context()
    node = {"ray_node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address()}
    scratch = tempfile.mkdtemp(prefix="spa-sweep-")
    try:
        rec = run_candidate(c, settings, scratch, node)
        path = os.path.join(scratch, c.file)
        data = None
        if rec["status"] == "ok" and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
        return rec, data
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
