"""Time `spa prune` end to end on a model, verification included, and say where the time goes.

Usage: python tools/time_prune.py [MODEL] [--ratio 0.3] [--repeat 3]
Default MODEL: onnx's own light_resnet50.onnx (ConstantOfShape weights).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import onnx

import spa


def default_model():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=default_model())
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--criterion", default="l2", help="SPA criterion (default l2)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.onnx")
        walls, stages = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = spa.prune(args.model, out, ratio=args.ratio, criterion=args.criterion, force=True)
            walls.append(time.perf_counter() - t)
            stages.append(r.timings)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spa.cli", "prune", args.model, out, "--ratio", str(args.ratio),
                        "--criterion", args.criterion, "--force"], check=True, stdout=subprocess.DEVNULL)
        cli = time.perf_counter() - t
    print(f"model: {args.model}")
    print(f"MACs reduction {r.macs_reduction:.1%}, params reduction {r.params_reduction:.1%}")
    print(f"API prune, median of {args.repeat}: {statistics.median(walls):.2f} s")
    print(f"CLI process end to end (interpreter start and imports included): {cli:.2f} s")
    print("stage medians:")
    for k in stages[0]:
        print(f"  {k:14s} {statistics.median(s[k] for s in stages):.3f} s")


if __name__ == "__main__":
    main()
