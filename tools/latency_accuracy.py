"""Accuracy at equal latency: `--target-latency` plans against `--target-macs` plans.

For each model, prune with `target_latency=R` for each R, and with `target_macs=T` over a
grid of T. Every pruned variant is then timed against the original by spa.bench, the two
alone and interleaved, as `--target-latency` times its plans (one batch, one thread by
default; the median ratio of neighbouring runs, averaged over --repeat timings: on a 2-core
box one timing of the same plan spread by +-3%), and scored. (All variants in one round
robin read ratios up to 8% lower than two models alone: each model then runs with cold
caches.) The MACs plans' scores are interpolated at each latency plan's measured latency:
"at equal measured latency, does the latency plan keep at least the accuracy of the MACs
plan?" (A latency plan faster than every MACs plan gets the fastest one's score, marked
"beyond the grid": that favours the MACs plan.)

Models: the ImageNet MobileNetV2 of tools/recover_bench.py (top-1 agreement with the
unpruned model on --views photo views, default 1000) and the MNIST bench nets of
tools/accuracy_bench.py (test accuracy on 10k images; trained and cached on first use).
With --calib the prunes get the calibration data (obs scores, measured sensitivity,
recovery); without it they are data-free (the default criterion).

    python tools/latency_accuracy.py --models mobilenetv2 --targets 0.5,0.7 [--calib]
    python tools/latency_accuracy.py --models resnet,vgg,mobilenet,vit --targets 0.5,0.7
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spa  # noqa: E402
from spa.errors import TargetMissed  # noqa: E402
from spa.measure.bench import BenchSettings, bench  # noqa: E402
from spa.report import table  # noqa: E402

MACS_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # 0.8: the fastest latency plans fall below x0.53
IMAGE = ("mobilenetv2", "efficientnet_lite0")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def subject(name, args):
    """(path, calib, score function, input shapes) of one model."""
    if name in IMAGE:
        import recover_bench
        recover_bench.SCORED_VIEWS = args.views
        path, calib, _, score, shapes = recover_bench.MODELS[name]("ts")
        return path, calib, score, shapes
    import accuracy_bench
    import torch
    xtr, _, xte, yte = accuracy_bench.mnist_data()
    model, _ = accuracy_bench.trained(name, (xtr, _, xte, yte))
    path, _ = accuracy_bench.exported(f"mnist_{name}", "ts", model, (torch.from_numpy(xte[:2]),))

    def score(m):
        import recover_bench
        return float((recover_bench.run(m, {"input": xte}, batch=500).argmax(1) == yte).mean())
    return str(path), {"input": xtr[:256]}, score, None


def interp(points, at):
    """Linear interpolation of (x, y) points at x = at (clamped to their range)."""
    points = sorted(points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return float(np.interp(at, xs, ys))


def run_model(name, args, work):
    path, calib, score, shapes = subject(name, args)
    common = dict(verify=False, input_shapes=shapes, threads=args.threads,
                  calib=calib if args.calib else None)
    variants = []  # (label, kind, setting, model proto, macs reduction)
    for r in args.target_list:
        t = time.perf_counter()
        try:
            res = spa.prune(path, None, target_latency=r, batch=args.batch, **common)
        except TargetMissed as exc:  # nothing to compare at this target
            log(f"{name}: --target-latency {r}: {exc}")
            continue
        log(f"{name}: --target-latency {r}: {res.latency.summary()} ({time.perf_counter() - t:.0f} s)")
        variants.append((f"latency {r}", "latency", r, res.model, res.macs_reduction))
    for tm in args.grid_list:
        t = time.perf_counter()
        res = spa.prune(path, None, target_macs=tm, **common)
        log(f"{name}: --target-macs {tm}: MACs -{res.macs_reduction:.1%} ({time.perf_counter() - t:.0f} s)")
        variants.append((f"macs {tm}", "macs", tm, res.model, res.macs_reduction))
    files = []
    for i, v in enumerate(variants):
        p = os.path.join(work, f"{name}.{i}.onnx")
        with open(p, "wb") as f:
            f.write(v[3].SerializeToString())
        files.append(p)
    settings = BenchSettings(batches=(args.batch,), warmup=3, runs=args.runs, threads=args.threads, memory=False,
                             input_shapes=shapes or {})
    lats = np.zeros(len(variants))
    for _ in range(args.repeat):  # fresh sessions each time: their layout moves a ratio by a few %
        for i, f in enumerate(files):  # each against the original alone, as spa.measure.target times a plan
            lats[i] += bench([path, f], settings).latency_ratio(1, args.batch) / args.repeat
    rows = []
    for i, (label, kind, setting, model, macs) in enumerate(variants):
        rows.append(dict(model=name, plan=kind, setting=setting, latency=float(lats[i]), macs_reduction=macs,
                         score=score(model)))
        log(json.dumps(rows[-1]))
    macs_points = [(r["latency"], r["score"]) for r in rows if r["plan"] == "macs"]
    for r in rows:
        if r["plan"] == "latency":
            r["macs_plan_score"] = interp(macs_points, r["latency"])
            r["beyond_grid"] = not min(p[0] for p in macs_points) <= r["latency"] <= max(p[0] for p in macs_points)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenetv2")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="timings of all variants, averaged")
    ap.add_argument("--grid", default=",".join(map(str, MACS_GRID)), help="--target-macs plans to compare with")
    ap.add_argument("--calib", action="store_true", help="prune with the calibration data (obs, sensitivity, "
                                                         "recovery)")
    ap.add_argument("--views", type=int, default=1000, help="photo views the ImageNet models are scored on "
                                                               "(top-1 agreement with the unpruned model)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    args.target_list = [float(t) for t in args.targets.split(",")]
    args.grid_list = [float(t) for t in args.grid.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="spa-latacc-") as work:
        for name in args.models.split(","):
            rows += run_model(name, args, work)
    out = [(r["model"], r["plan"], r["setting"], f"{r['latency']:.3f}", f"{r['macs_reduction']:.1%}",
            f"{r['score']:.2%}", "" if "macs_plan_score" not in r else
            f"{r['macs_plan_score']:.2%}" + (" (nearest: beyond the grid)" if r["beyond_grid"] else ""))
           for r in rows]
    print(table(out, ("model", "plan", "setting", "latency x", "MACs cut", "score", "MACs plan at same latency")))
    print(f"\nbatch {args.batch}, {args.threads} thread(s), latency: median ratio of {args.runs} interleaved rounds, "
          f"mean of {args.repeat} timings; "
          f"{'with calibration data' if args.calib else 'data-free'}; score: top-1 agreement (ImageNet) or "
          "test accuracy (MNIST)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
