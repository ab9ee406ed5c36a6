"""spa.sweep.sweep: prune every candidate, measure it, store the records, draw the report
and pick the fastest candidate that is close enough."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from ..errors import UsageError
from ..report import to_json
from ..view.pareto import page as pareto_page
from . import plan, store
from .engines import WorkerDied, local, on_ray
from .plan import Settings

REPORT = "report.html"
BEST = "best"


@dataclass(frozen=True)
class SweepResult:
    out: str  # the sweep folder
    records: tuple  # the record of every candidate of this sweep that finished, in candidate order
    reused: tuple  # ids of candidates found finished in results.jsonl (not run again)
    ran: tuple  # ids of candidates run now
    missing: tuple = ()  # ids left unfinished (a worker died)
    pick: object = None  # plan.Pick or None
    picked: dict = field(default_factory=dict)  # {model: record id of the fastest that meets it, or None}
    error: str = ""  # why candidates are missing

    @property
    def passed(self) -> bool:
        """Every candidate finished, and with --pick every model has a candidate that meets it."""
        return not self.missing and all(v is not None for v in self.picked.values())

    def to_dict(self):
        return {"out": self.out, "records": list(self.records), "reused": list(self.reused), "ran": list(self.ran),
                "missing": list(self.missing), "pick": None if self.pick is None else str(self.pick),
                "picked": self.picked, "error": self.error}


def sweep(models, out, *, ratios=(), target_macs=(), target_latency=(), criteria=(plan.DEFAULT,),
          settings: Settings = Settings(), jobs: int = 1, ray: bool = False, ray_address=None, pick=None,
          progress=None) -> SweepResult:
    """Prune and measure every candidate; resume from out/results.jsonl.

    Args:
        models: model files or folders of .onnx files.
        out: the sweep folder: results.jsonl, report.html, models/, best/.
        ratios, target_macs, target_latency: values of each way to say how much to prune.
        criteria: criterion names (plan.DEFAULT: spa.prune's own choice).
        settings: what every candidate shares (plan.Settings).
        jobs: local worker processes (without ray).
        ray: run candidates as Ray tasks; ray_address: an existing cluster's ("auto", "ip:port").
        pick: a plan.Pick (or its text): copy the fastest candidate of each model that meets it to out/best/.
        progress: optional callable(record, done, total) after each finished candidate.

    Returns:
        A SweepResult. Candidates found in results.jsonl with the same model file and
        settings are not run again; a candidate that fails is a record with its error.
    """
    if jobs < 1 or settings.threads < 1 or settings.runs < 1 or settings.warmup < 0 or settings.samples < 1:
        raise UsageError("--jobs, --threads, --runs and --samples must be at least 1, --warmup at least 0")
    pick = plan.parse_pick(pick) if isinstance(pick, str) else pick
    for name, path in (("--calib", settings.calib), ("--inputs", settings.inputs)):
        if path is not None and not os.path.exists(path):
            raise UsageError(f"{name} {path}: no such file or folder")
    files = plan.model_files(models)
    cands = plan.candidates(files, {"ratio": ratios, "target_macs": target_macs,
                                    "target_latency": target_latency}, criteria)
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    records = store.read(out)
    want = settings.to_dict()
    reused = tuple(c.id for c in cands if _reusable(records.get(c.id), c, want))
    todo = [c for c in cands if c.id not in reused]
    order = [c.id for c in cands]
    engine = (on_ray(todo, settings, out, ray_address) if ray or ray_address else local(todo, settings, out, jobs))
    ran, error = [], ""
    try:
        for rec in engine:
            records[rec["id"]] = rec
            ran.append(rec["id"])
            store.write(out, records, order)
            if progress:
                progress(rec, len(reused) + len(ran), len(cands))
    except WorkerDied as exc:
        error = str(exc)
    done = [records[i] for i in order if i in set(reused) | set(ran)]
    missing = tuple(c.id for c in todo if c.id not in set(ran))
    store.write(out, records, order)
    store.write_text(os.path.join(out, REPORT), pareto_page(done, out))
    picked = _pick(done, pick, out, [n for n, _ in files]) if pick is not None and not missing else {}
    return SweepResult(out, tuple(done), reused, tuple(sorted(ran, key=order.index)), missing, pick, picked, error)


def _reusable(rec, c, settings: dict) -> bool:
    return (rec is not None and rec.get("digest") == c.digest and rec.get("settings") == settings
            and rec.get("status") in ("ok", "error"))


def _pick(records, pick, out, models) -> dict:
    """Per model, the fastest candidate (lowest pruned / original p50) that meets `pick`,
    copied with its record to out/best/<model>.onnx and .json; {model: id or None}."""
    best_dir = os.path.join(out, BEST)
    if os.path.isdir(best_dir):
        shutil.rmtree(best_dir)
    picked = {}
    for m in models:
        ok = [r for r in records if r["model"] == m and r["status"] == "ok" and pick.meets(r["fidelity"])]
        if not ok:
            picked[m] = None
            continue
        r = min(ok, key=lambda r: (r["latency"]["ratio"], r["id"]))
        store.copy(os.path.join(out, r["file"]), os.path.join(best_dir, m + ".onnx"))
        store.write_text(os.path.join(best_dir, m + ".json"), to_json(r) + "\n")
        picked[m] = r["id"]
    return picked
