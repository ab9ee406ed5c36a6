"""One candidate of a sweep: prune, then fidelity with the `spa compare` protocol and
latency with the `spa bench` protocol (original and pruned timed interleaved). Runs in a
worker process or a Ray task; returns a plain record (JSON-ready dict), never raises for
the candidate's own failures."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict

from .. import api
from ..errors import INTERNAL_EXIT_CODE, SpaError, first_line
from ..io import parse_input_shapes
from ..measure.bench import BenchSettings, bench
from ..measure.compare import compare
from .plan import DEFAULT, Candidate, Settings

TIMING_KEYS = ("latency", "timings", "node")  # what differs between two runs of the same sweep


def comparable(record: dict) -> dict:
    """A record without its timings, latency and node: equal between two runs of a sweep."""
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def run_candidate(c: Candidate, s: Settings, out_dir: str, node: dict | None = None) -> dict:
    """Prune, compare and time one candidate.

    Args:
        c: the candidate.
        s: the sweep's shared settings.
        out_dir: the sweep folder; the pruned model goes to out_dir/c.file.
        node: where it runs ({"host": ..., "ray_node": ...}); default: this host.

    Returns:
        The record of results.jsonl: status "ok" with the figures, or "error" with the
        one-line error and the stage that failed.
    """
    start = time.perf_counter()
    rec = {"id": c.id, "model": c.model, "source": c.path, "digest": c.digest, "knob": c.knob,
           "value": c.value, "criterion": c.criterion, "settings": s.to_dict(), "file": c.file}
    timings, stage = {}, "prune"
    node = {"host": socket.gethostname(), **(node or {})}
    try:
        out = os.path.join(out_dir, c.file)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        t = time.perf_counter()
        r = api.prune(c.path, out, **{c.knob: c.value}, criterion=None if c.criterion == DEFAULT else c.criterion,
                      calib=s.calib, inputs=s.inputs, input_shapes=list(s.input_shapes), seed=s.seed,
                      threads=s.threads, batch=s.batch, force=True)
        timings["prune_s"], timings["stages"] = time.perf_counter() - t, dict(r.timings)
        rec.update(used_criterion=r.criterion, before=asdict(r.before), after=asdict(r.after),
                   macs_reduction=r.macs_reduction, params_reduction=r.params_reduction,
                   changes=[[g.id, g.before, g.after] for g in r.changes], notes=list(r.notes))
        stage, t = "compare", time.perf_counter()
        cmp = compare(c.path, out, inputs=s.inputs, batch=s.samples, input_shapes=_shapes(s), seed=s.seed,
                      threads=s.threads)
        timings["compare_s"] = time.perf_counter() - t
        rec["fidelity"] = _fidelity(cmp)
        stage, t = "bench", time.perf_counter()
        b = bench([c.path, out], BenchSettings(batches=(s.batch,), warmup=s.warmup, runs=s.runs, threads=s.threads,
                                                input_shapes=_shapes(s), seed=s.seed, memory=False))
        timings["bench_s"] = time.perf_counter() - t
        a, p = b.timing(0, s.batch), b.timing(1, s.batch)
        rec["latency"] = {"batch": s.batch, "runs": p.runs, "original_p50_ms": a.p50_ms, "pruned_p50_ms": p.p50_ms,
                          "original_p90_ms": a.p90_ms, "pruned_p90_ms": p.p90_ms, "ratio": p.p50_ms / a.p50_ms,
                          "load_average": b.environment.get("load_average")}
        rec["status"] = "ok"
    except SpaError as exc:
        rec.update(status="error", stage=stage, error=first_line(exc, 400), exit_code=exc.exit_code)
    except Exception as exc:  # a bug in SPA: recorded so that the other candidates go on
        rec.update(status="error", stage=stage, error=f"internal error: {type(exc).__name__}: {first_line(exc, 300)}",
                   exit_code=INTERNAL_EXIT_CODE)
    timings["total_s"] = time.perf_counter() - start
    rec["timings"], rec["node"] = timings, node
    return rec


def _shapes(s: Settings) -> dict:
    return parse_input_shapes(list(s.input_shapes))


def _fidelity(cmp) -> dict:
    """The worst figures over the outputs, and each output's."""
    outs = [asdict(o) for o in cmp.outputs]

    def worst(key, fn):
        vals = [o[key] for o in outs if o[key] is not None]
        return fn(vals) if vals else None

    return {"cosine": worst("cosine", min), "top1": worst("top1", min), "top5": worst("top5", min),
            "max_abs": worst("max_abs", max), "inputs": cmp.inputs, "samples": cmp.samples,
            "outputs": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()} for o in outs]}
