"""Is a default prune faster? The bundled torchvision zoo, pruned as a user would.

For each model of models/zoo/torchvision (the skeletons filled with seeded random weights),
prune with default options and `--ratio R` or `--target-macs T`, time the pruned model against
the original (spa.bench: the two alone, interleaved; the median ratio of neighbouring runs),
and list every model whose latency ratio is above its MACs ratio by more than --slack, with
`spa bench --explain`'s headline for it: the op kind whose time shrank least, reorders pruning
added, channel counts off the NCHWc block.

    python tools/zoo_speed.py --target-macs 0.3 [--batch 1] [--only resnet18_ts mobilenet_v2_ts]
    python tools/zoo_speed.py --target-latency 0.6 --exporter both
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import onnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spa  # noqa: E402
from spa.measure.bench import BenchSettings, bench  # noqa: E402
from spa.measure.explain import explain  # noqa: E402
from spa.report import table  # noqa: E402
from spa.testing import zoo  # noqa: E402

LARGE = ("convnext_large", "convnext_base", "regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf", "regnet_x_32gf",
         "regnet_x_16gf", "regnet_y_8gf", "regnet_x_8gf", "vit_", "swin_", "maxvit", "efficientnet_v2_",
         "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "vgg", "wide_resnet", "resnext101", "resnet152",
         "densenet")  # slow to prune and time here (--all adds them)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    goal = ap.add_mutually_exclusive_group()
    goal.add_argument("--ratio", type=float)
    goal.add_argument("--target-macs", type=float)
    goal.add_argument("--target-latency", type=float, help="planned at --batch and --threads; also lists what "
                                                             "SPA measured while planning")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--exporter", default="ts", help="ts, dynamo or both")
    ap.add_argument("--only", nargs="*", help="model names (file names without .onnx)")
    ap.add_argument("--all", action="store_true", help="also the largest models (slow on this machine)")
    ap.add_argument("--slack", type=float, default=0.15, help="flag latency ratio > MACs ratio + slack")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.ratio is not None:
        goal = {"ratio": args.ratio}
    elif args.target_latency is not None:
        goal = {"target_latency": args.target_latency, "batch": args.batch, "threads": args.threads}
    else:
        goal = {"target_macs": args.target_macs or 0.3}
    paths = sorted(glob.glob(os.path.join(zoo.ZOO, "torchvision", "*.onnx")))
    if args.only:
        paths = [p for p in paths if os.path.basename(p)[:-5] in args.only]
    else:
        paths = [p for p in paths if args.exporter == "both" or p.endswith(f"_{args.exporter}.onnx")]
        paths = [p for p in paths if args.all or not any(os.path.basename(p).startswith(s) for s in LARGE)]
    settings = BenchSettings(batches=(args.batch,), warmup=3, runs=args.runs, threads=args.threads, memory=False)
    rows, out = [], []
    for p in paths:
        name = os.path.basename(p)[:-5]
        model = zoo.fill(onnx.load(p), seed=0)
        t = time.perf_counter()
        try:
            res = spa.prune(model, None, verify=False, **goal)
        except spa.SpaError as exc:  # TargetMissed among them: a row without a pruned model
            print(f"{name}: {exc}", file=sys.stderr)
            out.append((name, "", "", "", "", f"{type(exc).__name__}: {str(exc)[:120]}"))
            continue
        seconds = time.perf_counter() - t
        ratio = bench([model, res.model], settings).latency_ratio(1, args.batch)
        macs = 1 - res.macs_reduction
        row = dict(model=name, macs=macs, latency=ratio, prune_s=seconds,
                   spa_measured=res.latency.measured if res.latency is not None else None)
        if ratio > macs + args.slack:
            e = explain([model, res.model], settings)
            row.update(shrank_least=e.shrank_least, reorders=list(e.reorders), off_block=len(e.off_block),
                       lagging=[k.kind for k in e.lagging])
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        out.append((name, f"{macs:.3f}", f"{ratio:.3f}", "" if row["spa_measured"] is None else f"{row['spa_measured']:.3f}",
                    f"{seconds:.1f}", "" if "reorders" not in row else
                    f"shrank least: {row['shrank_least']}; reorders {row['reorders'][0]} -> {row['reorders'][1]}; "
                    f"{row['off_block']} counts off the block"))
    print(table(out, ("model", "MACs x", "latency x", "SPA measured", "prune s",
                      "explanation (latency > MACs + slack)")))
    flagged = sum("reorders" in r for r in rows)
    print(f"\n{flagged} of {len(rows)} over MACs x + {args.slack:g}; batch {args.batch}, {args.threads} thread(s), "
          f"{args.runs} interleaved runs, {goal}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
