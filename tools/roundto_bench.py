"""Which --round-to makes SPA-pruned CNNs fastest on onnxruntime CPU: 1 (none), 8 or 16?

Exports the hand-written torch ResNet-50 and MobileNetV2 (random weights, 224x224), prunes
each at the given ratios with every --round-to, and times all variants of one network
together (spa.bench: same session options, alternating blocks) at batch 1 and 8.

Usage: python tools/roundto_bench.py [--ratios 0.3,0.5] [--runs 15] [--threads 2] [--work DIR]
Needs the bench extra (torch).
"""

import argparse
import os
import sys
import tempfile

import models_torch  # a sibling: tools/ is the script's folder

import spa
from spa.measure.bench import BenchSettings, bench, block_warnings, cpu_block_size
from spa.report import table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--round-to", default="1,8,16")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the exported and pruned models")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="spa-roundto-")
    os.makedirs(work, exist_ok=True)
    ratios = [float(r) for r in args.ratios.split(",")]
    rounds = [int(r) for r in args.round_to.split(",")]
    settings = BenchSettings(batches=(1, 8), warmup=args.warmup, runs=args.runs, threads=args.threads,
                             memory=False)
    rows = []
    for name in args.models.split(","):
        src = models_torch.exported(name, work)
        variants = [(None, None, src, None)]
        for ratio in ratios:
            for rt in rounds:
                out = os.path.join(work, f"{name}.r{ratio}.rt{rt}.onnx")
                res = spa.prune(src, out, ratio=ratio, round_to=rt, criterion="l2", force=True)
                variants.append((ratio, rt, out, res.after.macs / res.before.macs))
        print(f"timing {len(variants)} variants of {name} ...", file=sys.stderr, flush=True)
        r = bench([v[2] for v in variants], settings)
        for i, (ratio, rt, path, macs) in enumerate(variants):
            t1, t8 = r.timing(i, 1), r.timing(i, 8)
            b1, b8 = r.timing(0, 1), r.timing(0, 8)
            lat8 = t8.p50_ms / b8.p50_ms
            rows.append((name, "original" if ratio is None else ratio, "" if rt is None else rt,
                         "1.000" if macs is None else f"{macs:.3f}", f"{t1.p50_ms:.1f}", f"{t8.p50_ms:.1f}",
                         f"{t1.p50_ms / b1.p50_ms:.3f}", f"{lat8:.3f}",
                         f"{lat8 / (macs or 1.0):.2f}", len(block_warnings(path))))
    print(table(rows, ("model", "ratio", "round-to", "MACs ratio", "p50 ms b1", "p50 ms b8",
                       "lat. ratio b1", "lat. ratio b8", "lat/MACs b8", "NCHWc misses")))
    env = r.environment
    print(f"\nonnxruntime {env['onnxruntime']}, {env['cpu']} ({env['logical_cpus']} logical CPUs, "
          f"NCHWc block {cpu_block_size()}), threads {args.threads}, warm-up {args.warmup}, "
          f"{args.runs} runs, p50; models in {work}")


if __name__ == "__main__":
    main()
