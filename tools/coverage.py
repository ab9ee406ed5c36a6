"""Coverage: prune every zoo model and every real model, and report what happened.

    python tools/coverage.py                          # everything: reports/coverage.{md,json}
    python tools/coverage.py --only 'resnet*' 'ppocr_*' --jobs 2 --out /tmp/cov
    python tools/coverage.py --no-real --exporters ts

Zoo models (models/zoo/*/manifest.json, weightless) get seeded random weights
(spa.testing.zoo.fill, seed 0); real models come from tools/real_models.py (fetched into
~/.cache/spa/real; onnx's Caffe2 `light_*` models get seeded random weights in place of
their constant fills, so that channels differ). Each model is pruned with
`spa.prune(ratio=0.3)` (L2, local; `--criterion` picks another) in its own process with a time limit
(--timeout).

One row per model:

- status: `ok`, or the error class (`ModelError`, `NothingToPrune`, `VerifyError`,
  `timeout`, `crash` for an unexpected exception, `died` for a killed process) and its
  first line.
- checker, ort, shapes: the pruned model passes `onnx.checker` (full check), runs in
  onnxruntime, and has the original's output shapes on the same inputs.
- params and MACs before and after, and the MACs reduction.
- prunable MACs: the sum of `macs_share` over the prunable groups of `spa.analyze`,
  capped at 100%. A conv's MACs count in the group of its input channels and in the
  group of its output channels, so the sum overstates the share of MACs that pruning can
  touch; 0% means nothing that carries MACs is prunable.
- time: seconds in `spa.prune` (verification included).
- masked diff: max |pruned - masked original| / max(|masked original|, |original|) over
  the float outputs (`spa.masked(model, result.sinks, result.updates)`; the original's scale too, since
  masking can drive an output such as a sigmoid to ~0): 0 up to float rounding when the pruned
  model is exactly the original with the removed channels zeroed. Only meaningful when
  the result is exact (no "hidden" group that passes a normalisation); `~` marks the
  others.

Totals (pruned ok / total, median MACs reduction over the models pruned) are printed
and written at the top of the report.

Why a tool and not a `spa` subcommand: it needs the repository's zoo files
(models/zoo, weightless, filled by spa.testing.zoo) and the real-model fetcher, and it
writes the project's own reports/coverage.{md,json}; none of that ships with the
package. A user's batch prune-and-measure over a folder of their models is the planned
`spa sweep` command (issue #23).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ZOO = os.path.join(ROOT, "models", "zoo")
PROTO_LIMIT = 1_800_000_000  # bytes of weights above which models go through external data files


# ---------------------------------------------------------------- which models


def _given_shapes(entry):
    """Shapes from a manifest's model-level input specs (the transformers zoo): symbolic
    batch 1, other symbolic dims (sequence) 7."""
    return {i["name"]: [d if isinstance(d, int) else 1 if d == "batch" else 7 for d in i["shape"]]
            for i in entry.get("inputs", []) if isinstance(i, dict) and "shape" in i}


def zoo_entries(zoo=ZOO, exporters=None, families=None):
    """Coverage jobs for every exported model of every zoo directory with a manifest."""
    jobs = []
    for mpath in sorted(glob.glob(os.path.join(zoo, "*", "manifest.json"))):
        family = os.path.basename(os.path.dirname(mpath))
        if families and family not in families:
            continue
        with open(mpath) as f:
            manifest = json.load(f)
        for name, entry in sorted(manifest.get("models", {}).items(), key=lambda kv: kv[1].get("gflops", 0)):
            for exporter, ex in sorted(entry.get("exports", {}).items()):
                if exporters and exporter not in exporters:
                    continue
                path = os.path.join(os.path.dirname(mpath), ex.get("file", f"{name}_{exporter}.onnx"))
                job = {"name": f"{name}_{exporter}", "source": f"zoo/{family}", "kind": "zoo",
                       "path": path, "input_shapes": _given_shapes(entry)}
                if "error" in ex or not os.path.exists(path):
                    job["export_error"] = ex.get("error", "file missing")
                jobs.append(job)
    return jobs


def real_entries(download=True):
    import real_models  # a sibling: tools/ is the script's folder

    return [{"name": name, "source": info["framework"], "kind": "real", "path": info["path"],
             "input_shapes": info["input_shapes"]}
            for name, info in real_models.models(download=download).items()]


# ---------------------------------------------------------------- one model (child process)


def _random_fills(model, seed=0):
    """Seeded random values in place of ConstantOfShape weight fills (onnx's light_* models)."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            value_attr = [a for a in node.attribute if a.name == "value"]
            if value_attr and value_attr[0].t.data_type not in (1, 10, 11):
                continue  # integer fills are shapes or indices, not weights
            shape = inits[node.input[0]]
            if len(shape) > 1:
                value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
            else:  # biases and norm parameters; BatchNorm variances must stay positive
                value = rng.uniform(0.5, 1.5, shape)
            node.op_type, node.input[:] = "Constant", []
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value.astype(np.float32))))
    return model


def _load(job):
    import onnx

    model = onnx.load(job["path"])
    if job["kind"] == "zoo":
        from spa.testing.zoo import fill

        return fill(model, 0)
    if os.path.basename(job["path"]).startswith("light_"):
        return _random_fills(model)
    return model


def _compare(pruned, masked, original):
    """max |pruned - masked| / max(|masked|, |original|) over float outputs; share of
    differing elements for the others."""
    import numpy as np

    worst = 0.0
    for name, want in masked.items():
        got = pruned[name]
        if got.shape != want.shape:
            return float("inf")
        if np.issubdtype(want.dtype, np.floating):
            scale = max(float(np.max(np.abs(want))), float(np.max(np.abs(original[name])))) if want.size else 0.0
            diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
            worst = max(worst, diff / scale if scale else diff)
        elif want.size:
            worst = max(worst, float(np.mean(got != want)))
    return worst


def measure(job, goal, seed=0, criterion="l2"):
    """Prune one model; the report row (raises only on a bug in this tool)."""
    with tempfile.TemporaryDirectory(prefix="spa-cov-") as tmp:
        return _measure(job, goal, seed, criterion, tmp)


def _measure(job, goal, seed, criterion, tmp):
    import numpy as np
    import onnx

    import spa
    from spa.io import concrete_inputs
    from spa.runtime import random_inputs, run

    row = {k: job[k] for k in ("name", "source", "kind")}
    if "export_error" in job:
        row.update(status="export failed", error=job["export_error"].splitlines()[0][:300])
        return row
    model = _load(job)
    shapes = concrete_inputs(model, job["input_shapes"])
    row["input_shapes"] = {k: list(v) for k, v in shapes.items()}
    weight_bytes = sum(t.ByteSize() for t in model.graph.initializer) + \
        sum(n.ByteSize() for n in model.graph.node if n.op_type == "Constant")
    src, output = model, None
    if weight_bytes > PROTO_LIMIT:  # past protobuf's 2 GB: files with external data
        src = os.path.join(tmp, "model.onnx")
        onnx.save(model, src, save_as_external_data=True, location="model.data")
        output = os.path.join(tmp, "pruned.onnx")
    try:
        analysis = spa.analyze(src, input_shapes=shapes)
        row["groups"] = len(analysis.groups)
        row["prunable_groups"] = len(analysis.prunable)
        row["prunable_macs_share"] = min(1.0, sum(g.macs_share for g in analysis.prunable))
        row["blocked_ops"] = [list(x) for x in analysis.blocked_ops]
        reasons = Counter()
        for g in analysis.groups:
            if not g.prunable:
                for part in g.reason.split("; "):
                    reasons[part.split(" (+")[0][:160]] += 1
        row["block_reasons"] = reasons.most_common(8)
        t0 = time.perf_counter()
        result = spa.prune(src, output, **goal, input_shapes=shapes, seed=seed, criterion=criterion)
        row["prune_seconds"] = round(time.perf_counter() - t0, 2)
    except spa.SpaError as exc:
        row.update(status=type(exc).__name__, error=str(exc).splitlines()[0][:400])
        return row
    except Exception as exc:  # noqa: BLE001 - an unexpected exception is a bug to report
        row.update(status="crash", error=f"{type(exc).__name__}: {str(exc).strip()}".splitlines()[0][:400],
                   traceback=traceback.format_exc().strip().splitlines()[-8:])
        return row
    row.update(status="ok", params_before=result.before.params, params_after=result.after.params,
               macs_before=result.before.macs, macs_after=result.after.macs,
               macs_reduction=result.macs_reduction, params_reduction=result.params_reduction,
               exact=result.exact, checker=result.verdict.checker, timings=result.timings,
               pruned_groups=len(result.changes), notes=list(result.notes))
    if output is not None:  # the oracle needs protos under 2 GB
        row.update(ort=result.verdict.runs, shapes=result.verdict.outputs_match, masked_diff=None)
        return row
    feeds = random_inputs(model, shapes, seed + 1)
    try:
        original = run(model, feeds)
        pruned = run(result.model, feeds)
        row["ort"] = True
    except Exception as exc:  # noqa: BLE001
        row.update(ort=False, shapes=False, error=f"onnxruntime: {str(exc).splitlines()[0][:300]}")
        return row
    row["shapes"] = all(pruned[k].shape == v.shape for k, v in original.items())
    row["finite"] = bool(all(np.all(np.isfinite(v)) for v in original.values()
                             if np.issubdtype(v.dtype, np.floating)))
    try:
        masked = run(spa.masked(model, result.sinks, result.updates), feeds)
        row["masked_diff"] = _compare(pruned, masked, original)
        row["masking_changes_output"] = _compare(original, masked, original) > 1e-6
    except Exception as exc:  # noqa: BLE001
        row["masked_diff"] = None
        row["masked_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return row


def _child(job_path, goal, result_path, criterion="l2"):
    with open(job_path) as f:
        job = json.load(f)
    try:
        row = measure(job, goal, criterion=criterion)
    except Exception as exc:  # noqa: BLE001 - reported as a row, not lost
        row = {k: job[k] for k in ("name", "source", "kind")}
        row.update(status="crash", error=f"coverage tool: {type(exc).__name__}: {exc}".splitlines()[0][:400],
                   traceback=traceback.format_exc().strip().splitlines()[-8:])
    with open(result_path, "w") as f:
        json.dump(row, f)


def code_stamp():
    """A digest of SPA's source: rows measured by other code are measured again."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(ROOT, "spa", "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def _current(row, job):
    """A kept row still describes the model file (not re-exported since) and the code."""
    return row is not None and row.get("measured_at", 0) > os.path.getmtime(job["path"]) \
        and row.get("spa_code") == code_stamp()


def run_job(job, goal, timeout, criterion="l2"):
    """measure() in a fresh process, killed whole at the time limit."""
    tmp = tempfile.mkdtemp(prefix="spa-cov-job-")
    job_path, result_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "row.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    (key, value), = goal.items()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", job_path, result_path,
           "--" + key.replace("_", "-"), str(value), "--criterion", criterion]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    row = {k: job[k] for k in ("name", "source", "kind")}
    try:
        out, _ = proc.communicate(timeout=timeout)
        with open(result_path) as f:
            row = json.load(f)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        row.update(status="timeout", error=f"over {timeout:g} s")
    except (OSError, ValueError):
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        row.update(status="died", error=f"exit {proc.returncode}: {' | '.join(tail)}"[:400])
    finally:
        for p in (job_path, result_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(tmp)
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    row["measured_at"] = time.time()
    row["spa_code"] = code_stamp()
    row["criterion"] = criterion
    return row


# ---------------------------------------------------------------- the report


def totals(rows):
    ok = [r for r in rows if r.get("status") == "ok"]
    attempted = [r for r in rows if r.get("status") != "export failed"]
    reductions = [r["macs_reduction"] for r in ok]
    return {"models": len(rows), "attempted": len(attempted), "pruned_ok": len(ok),
            "export_failed": len(rows) - len(attempted),
            "verified": sum(bool(r.get("checker") and r.get("ort") and r.get("shapes")) for r in ok),
            "median_macs_reduction": statistics.median(reductions) if reductions else None,
            "statuses": dict(Counter(r.get("status") for r in rows))}


def _m(v):
    return "" if v is None else f"{v / 1e9:.3g}G" if v >= 1e8 else f"{v / 1e6:.3g}M"


def _pct(v):
    return "" if v is None else f"{100 * v:.1f}%"


def _yes(v):
    return "" if v is None else ("yes" if v else "**no**")


def markdown(rows, t, setting):
    crits = ", ".join(sorted({r.get("criterion", "l2") for r in rows}))
    lines = [f"# SPA coverage at {setting}, --criterion {crits}", "",
             f"Pruned ok: **{t['pruned_ok']} / {t['attempted']}** models "
             f"({t['export_failed']} more could not be exported by torch); "
             f"verified (checker, onnxruntime, shapes): {t['verified']}; "
             f"median MACs reduction: **{_pct(t['median_macs_reduction'])}**.", "",
             "Columns: see `tools/coverage.py`. *prunable MACs* is the capped sum of `macs_share` of the "
             "prunable groups; *masked diff* is max |pruned - masked original| / max(|masked original|, |original|) "
             "(`~`: not exact, a hidden-size group passes a normalisation).", "",
             "Rows were measured by SPA code " + ", ".join(
                 f"`{c}` ({n} rows)" for c, n in Counter(r.get("spa_code", "?") for r in rows).most_common())
             + " (`spa_code`: a digest of spa/).", "",
             "| model | source | status | checker | ort | shapes | params | MACs | MACs -% | prunable MACs "
             "| time s | masked diff | error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        params = f"{_m(r['params_before'])} → {_m(r['params_after'])}" if "params_before" in r else ""
        macs = f"{_m(r['macs_before'])} → {_m(r['macs_after'])}" if "macs_before" in r else ""
        diff = r.get("masked_diff")
        diff = "" if diff is None else f"{'' if r.get('exact', True) else '~'}{diff:.1e}"
        err = (r.get("error") or r.get("masked_error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['name']} | {r['source']} | {r.get('status')} | {_yes(r.get('checker'))} "
                     f"| {_yes(r.get('ort'))} | {_yes(r.get('shapes'))} | {params} | {macs} "
                     f"| {_pct(r.get('macs_reduction'))} | {_pct(r.get('prunable_macs_share'))} "
                     f"| {r.get('prune_seconds', '')} | {diff} | {err[:200]} |")
    lines += ["", "## What stays blocked", "",
              "Per model with less than 95% of its MACs in prunable groups: the most frequent reasons "
              "of its blocked groups (count of groups), and ops without a rule.", ""]
    for r in rows:
        share = r.get("prunable_macs_share")
        if share is None or share >= 0.95:
            continue
        why = "; ".join(f"{text[:160]} ({n})" for text, n in (r.get("block_reasons") or [])[:3])
        ops = ", ".join(f"{op} ({n})" for op, n in r.get("blocked_ops") or [])
        lines.append(f"- **{r['name']}** ({_pct(share)} prunable): {why}" + (f"; no rule: {ops}" if ops else ""))
    return "\n".join(lines) + "\n"


def write_reports(rows, out, setting):
    t = totals(rows)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump({"setting": setting, "totals": t, "rows": rows}, f, indent=1)
        f.write("\n")
    with open(out + ".md", "w") as f:
        f.write(markdown(rows, t, setting))
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--target-macs", type=float, help="prune to this MACs reduction instead of --ratio")
    ap.add_argument("--criterion", default="l2", help="importance criterion (default l2; data-free ones only)")
    ap.add_argument("--out", default=os.path.join(ROOT, "reports", "coverage"),
                    help="report path without extension (default reports/coverage): .md and .json")
    ap.add_argument("--only", nargs="*", help="glob patterns of model names")
    ap.add_argument("--exporters", nargs="*", help="zoo exporters to include (default: all)")
    ap.add_argument("--families", nargs="*", help="zoo folders to include (default: all, e.g. torchvision)")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-download", action="store_true", help="real models: only those already cached")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per model (default 600)")
    ap.add_argument("--jobs", type=int, default=1, help="models pruned at once (default 1)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of the existing report for model files measured since they were written")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="write --out from the rows of these reports (a later row replaces one of the same "
                         "model) instead of measuring")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    goal = {"target_macs": args.target_macs} if args.target_macs is not None else {"ratio": args.ratio}
    setting = "--" + " ".join(f"{k.replace('_', '-')} {v:g}" for k, v in goal.items())
    if args.child:
        return _child(args.child[0], goal, args.child[1], args.criterion)
    if args.merge:
        merged = {}
        for path in args.merge:
            with open(path) as f:
                merged.update((r["name"], r) for r in json.load(f)["rows"])
        t = write_reports(sorted(merged.values(), key=lambda r: (r["source"], r.get("macs_before") or 0, r["name"])),
                          args.out, setting)
        print(f"{len(merged)} rows, pruned ok {t['pruned_ok']}/{t['attempted']}, median MACs reduction "
              f"{_pct(t['median_macs_reduction'])}; {args.out}.md")
        return None
    jobs = ([] if args.no_zoo else zoo_entries(exporters=args.exporters, families=args.families)) + \
        ([] if args.no_real else real_entries(download=not args.no_download))
    if args.only:
        jobs = [j for j in jobs if any(fnmatch.fnmatch(j["name"], p) for p in args.only)]
    rows = [None] * len(jobs)
    if args.resume and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            old = {r["name"]: r for r in json.load(f)["rows"] if r.get("status") not in ("export failed", None)}
        rows = [old.get(j["name"]) if "export_error" not in j and _current(old.get(j["name"]), j) else None
                for j in jobs]
    todo = [i for i, r in enumerate(rows) if r is None]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_job, jobs[i], goal, args.timeout, args.criterion): i for i in todo}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            i = futures[fut]
            rows[i] = r = fut.result()
            red = f" MACs -{_pct(r['macs_reduction'])}" if "macs_reduction" in r else ""
            print(f"{r['name']:32s} {r.get('status')}{red} {(r.get('error') or '')[:150]}", flush=True)
            write_reports([x for x in rows if x is not None], args.out, setting)
    t = write_reports(rows, args.out, setting)
    print(f"pruned ok {t['pruned_ok']}/{t['attempted']} (export failed: {t['export_failed']}), "
          f"verified {t['verified']}, median MACs reduction {_pct(t['median_macs_reduction'])}; "
          f"{args.out}.md")


if __name__ == "__main__":
    main()
