"""`spa sweep` at scale (issue #23).

Usage:
  python tools/sweep_bench.py timing [--folder DIR] [--repeat 1]
      Done-when 2: a 20-candidate sweep (the zoo's MobileNetV2 and SqueezeNet 1.1, TorchScript
      exports with seeded random weights, x ratios 0.1-0.5 x criteria obspa, l2), run as
      `spa sweep ... --jobs 1` and `--jobs 2` in child processes, each into a fresh folder,
      interleaved (jobs 1, jobs 2, jobs 1, ...). Prints the wall times and jobs 2 / jobs 1.
      Needs 2 free cores: each --jobs 2 worker is pinned to one.
  python tools/sweep_bench.py same [--folder DIR] [--jobs-only]
      Done-when 1: 4 models (those two, and the test nets resnet and mobilenetv2) x 5 ratios
      x 2 criteria, swept with --jobs 1, --jobs 2 and --ray-address on a two-node Ray cluster
      started on this machine (spa.testing.raycluster); checks that the three results.jsonl
      are equal timings aside and prints which Ray nodes ran tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import onnx

from spa.sweep import comparable
from spa.testing import zoo
from spa.testing.nets import ALL

RATIOS = "0.1,0.2,0.3,0.4,0.5"
CRITERIA = "obspa,l2"


def build(folder, small=False) -> str:
    os.makedirs(folder, exist_ok=True)
    for name in ("mobilenet_v2_ts", "squeezenet1_1_ts"):
        path = os.path.join(folder, name + ".onnx")
        if not os.path.exists(path):
            onnx.save(zoo.fill(onnx.load(os.path.join(zoo.ZOO, "torchvision", name + ".onnx")), seed=0), path)
    for name in ("resnet", "mobilenetv2") if small else ():
        path = os.path.join(folder, name + ".onnx")
        if not os.path.exists(path):
            onnx.save(ALL[name](), path)
    return folder


def sweep(folder, out, *extra) -> float:
    """Wall seconds of one `spa sweep` child process."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "spa.cli", "sweep", folder, "--ratios", RATIOS, "--criteria", CRITERIA,
                        "--out", out, "-q", *extra], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(r.stderr[-800:])
    return took


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def timing(args):
    folder = build(os.path.join(args.folder, "timing"))
    walls = {1: [], 2: []}
    for k in range(args.repeat):
        for jobs in (1, 2):
            out = tempfile.mkdtemp(prefix=f"sweep-j{jobs}-", dir=args.folder)
            walls[jobs].append(sweep(folder, out, "--jobs", str(jobs)))
            n = len(records(out))
            print(f"run {k + 1}: --jobs {jobs}: {walls[jobs][-1]:.1f} s for {n} candidates", flush=True)
    a, b = min(walls[1]), min(walls[2])
    print(f"best of {args.repeat}: --jobs 1 {a:.1f} s, --jobs 2 {b:.1f} s: ratio {b / a:.3f} (target <= 0.65); "
          f"load average {os.getloadavg()[0]:.1f}")


def same(args):
    folder = build(os.path.join(args.folder, "same"), small=True)
    outs = {}
    for jobs in (1, 2):
        outs[f"jobs {jobs}"] = tempfile.mkdtemp(prefix=f"same-j{jobs}-", dir=args.folder)
        print(f"--jobs {jobs}: {sweep(folder, outs[f'jobs {jobs}'], '--jobs', str(jobs)):.1f} s", flush=True)
    if not args.jobs_only:
        from spa.testing.raycluster import TwoNodes  # Ray is optional: only this mode needs it
        with TwoNodes(cpus=1) as cluster:
            outs["ray"] = tempfile.mkdtemp(prefix="same-ray-", dir=args.folder)
            print(f"--ray-address (two nodes): {sweep(folder, outs['ray'], '--ray-address', cluster.address):.1f} s")
        nodes = {}
        for r in records(outs["ray"]):
            nodes[r["node"]["ray_node"][:12]] = nodes.get(r["node"]["ray_node"][:12], 0) + 1
        print(f"Ray tasks per node: {nodes}")
    base = [comparable(r) for r in records(outs["jobs 1"])]
    print(f"{len(base)} candidates, {sum(r['status'] == 'ok' for r in base)} ok")
    for name, out in outs.items():
        print(f"{name}: results.jsonl {'equal' if [comparable(r) for r in records(out)] == base else 'DIFFERENT'} "
              f"to --jobs 1, timings aside ({out})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("timing", "same"))
    p.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "spa-sweep-bench"))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--jobs-only", action="store_true", help="same: skip the Ray run")
    args = p.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    (timing if args.mode == "timing" else same)(args)


if __name__ == "__main__":
    main()
