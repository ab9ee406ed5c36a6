"""The default prune against `--criterion l2`, end to end, as a new user runs it (issue #20).

Usage: python tools/time_default.py [--models resnet50,mobilenetv2,vit_b16,minilm] [--repeat 2] [--threads 1]
       [--folder DIR]

Each model (tools/models_torch.py, real-size random weights, exported once to --folder) is
pruned by `spa prune MODEL OUT --ratio 0.3 --force -q` with the default criterion and with
`--criterion l2`, in child processes timed by /usr/bin/time -v (wall seconds, peak RSS),
interleaved (default, l2, default, l2, ...) so both see the same machine. Prints one markdown
row per model: medians, their ratio, peak RSS over the model's weight bytes, and the default
prune's stages (from `--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def timed(args) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child."""
    r = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-500:])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    h, m, s = wall.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    return int(h or 0) * 3600 + int(m) * 60 + float(s), rss, r.stdout


def weight_bytes(path) -> int:
    m = onnx.load(path)
    return sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in m.graph.initializer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2,vit_b16,minilm")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to both prunes (default: not given)")
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "spa-time-default"))
    args = ap.parse_args()
    import models_torch
    os.makedirs(args.folder, exist_ok=True)
    spa = [sys.executable, "-m", "spa.cli", "prune"]
    print("| model | weights MB | default s | l2 s | ratio | default peak RSS / weights | l2 peak RSS / weights "
          "| default stages (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        path = models_torch.exported(name, args.folder)
        out = os.path.join(args.folder, f"{name}.pruned.onnx")
        wb = weight_bytes(path)
        runs = {"default": [], "l2": []}
        stages = {}
        for _ in range(args.repeat):
            for label, extra in (("default", []), ("l2", ["--criterion", "l2"])):
                threads = [] if args.threads is None else ["--threads", str(args.threads)]
                wall, rss, stdout = timed([*spa, path, out, "--ratio", "0.3", "--force", "--json", *threads, *extra])
                runs[label].append((wall, rss))
                if label == "default":
                    stages = json.loads(stdout).get("timings", {})
        d = statistics.median(w for w, _ in runs["default"])
        l2 = statistics.median(w for w, _ in runs["l2"])
        rd = max(r for _, r in runs["default"]) / wb
        rl = max(r for _, r in runs["l2"]) / wb
        top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:4])
        print(f"| {name} | {wb / 1e6:.1f} | {d:.1f} | {l2:.1f} | {d / l2:.2f} | {rd:.1f}x | {rl:.1f}x | {top} |",
              flush=True)


if __name__ == "__main__":
    main()
