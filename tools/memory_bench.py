"""Memory and time of pruning a large model with external data.

Builds a Llama-style stack of MLP blocks (x + W_down(Relu(x W_gate) * (x W_up))),
hidden 4096, intermediate 11008, float32 weights in one external data file (6 blocks:
3.25 GB), then measures, each in a fresh process:

- `cp` of the model and its data file (twice; the faster one is the yardstick);
  every timed step starts after a `sync` and ends after one, so each pays for writing its
  own data to disk and none for the writeback of the step before;
- pruning at --ratio (load, plan, rewrite, write; no verification): wall time, peak RSS;
- the onnxruntime verification of the written model (checker, original run, two runs
  of the pruned model): wall time, peak RSS;
- the whole `spa prune` command (verification included).

    python tools/memory_bench.py [--blocks 6] [--dir /tmp/spa-bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from spa.testing.mlp import build


def measure(cmd) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS in bytes, the JSON it printed) of a command in a fresh process.

    Peak RSS is the kernel's ru_maxrss for that process (wait4), file-backed pages included.
    """
    os.sync()  # start with no dirty pages: each step pays for its own writes only
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    os.sync()  # ... and ends when they are on disk
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[-3:])} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return wall, usage.ru_maxrss * 1024, json.loads(out.strip().splitlines()[-1])


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child(mode, model, out, ratio, criterion):
    """Run one stage in this process and print JSON with its peak RSS (VmHWM)."""
    t = time.perf_counter()
    if mode == "prune":
        import spa

        result = spa.prune(model, out, ratio=ratio, criterion=criterion, verify=False, force=True, external_data=True)
        info = {"timings": result.timings, "macs_reduction": result.macs_reduction,
                "before": result.before.file_size, "after": result.after.file_size}
    elif mode == "verify":
        from spa.io import load
        from spa.runtime import random_inputs
        from spa.verify import verify

        m = load(model)
        timings: dict = {}
        verify(model, out, random_inputs(m.proto, m.input_shapes, 0), None, timings, model)
        info = {"timings": timings}
    else:
        raise SystemExit(f"unknown mode {mode}")
    info.update(seconds=time.perf_counter() - t, peak_rss=peak_rss())
    print(json.dumps(info))


def cp_time(model, folder) -> float:
    dest = os.path.join(folder, "copy")
    os.makedirs(dest, exist_ok=True)
    os.sync()
    t = time.perf_counter()
    subprocess.run(["cp", model, model + ".data", dest], check=True)
    os.sync()
    took = time.perf_counter() - t
    shutil.rmtree(dest)
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=11008)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--criterion", default=None, help="SPA criterion (default: SPA's, which is l2 over 2 GB of weights)")
    ap.add_argument("--dir", default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the model files")
    ap.add_argument("--skip-cli", action="store_true", help="skip the full `spa prune` run")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.ratio, args.criterion)
    folder = args.dir or tempfile.mkdtemp(prefix="spa-bench-")
    os.makedirs(folder, exist_ok=True)
    try:
        t = time.perf_counter()
        model = build(folder, args.blocks, args.hidden, args.inter)
        size = os.path.getsize(model) + os.path.getsize(model + ".data")
        print(f"model: {model} + .data, {size / 1e9:.2f} GB, built in {time.perf_counter() - t:.1f} s")
        out = os.path.join(folder, "llama_mlp.pruned.onnx")
        pick = ["--criterion", args.criterion] if args.criterion else []
        me = [sys.executable, os.path.abspath(__file__), "--ratio", str(args.ratio)] + pick + ["--child"]
        cp1 = cp_time(model, folder)
        wall, rss, info = measure(me + ["prune", model, out])
        cp2 = cp_time(model, folder)
        cp = min(cp1, cp2)
        written = os.path.getsize(out) + os.path.getsize(out + ".data")
        vwall, vrss, vinfo = measure(me + ["verify", model, out])
        rows = [
            ("model size", f"{size / 1e9:.3f} GB"),
            ("pruned size", f"{written / 1e9:.3f} GB (MACs -{info['macs_reduction'] * 100:.1f}%)"),
            ("cp time", f"{cp:.2f} s (runs: {cp1:.2f} s, {cp2:.2f} s)"),
            ("prune wall time (process)", f"{wall:.2f} s = {wall / cp:.2f} x cp"),
            ("prune stages", ", ".join(f"{k} {v:.2f}" for k, v in info["timings"].items())),
            ("prune peak RSS", f"{rss / 1e9:.3f} GB = {rss / size * 100:.1f}% of the model"),
            ("verification wall time", f"{vwall:.2f} s ("
             + ", ".join(f"{k} {v:.2f}" for k, v in vinfo["timings"].items()) + ")"),
            ("verification peak RSS", f"{vrss / 1e9:.3f} GB"),
        ]
        if not args.skip_cli:
            spa_bin = os.path.join(os.path.dirname(sys.executable), "spa")
            t = time.perf_counter()
            cmd = [spa_bin, "prune", model, out, "--ratio", str(args.ratio), "--force", "--external-data"] + pick
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            cli_wall = time.perf_counter() - t
            proc.returncode = os.waitstatus_to_exitcode(status)
            rows.append(("`spa prune` with verification", f"{cli_wall:.2f} s, peak RSS {usage.ru_maxrss * 1024 / 1e9:.3f} GB,"
                         f" exit {proc.returncode}"))
        width = max(len(r[0]) for r in rows)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
        ok = rss < 0.5 * size and wall < 4 * cp
        print(f"targets (peak RSS < 50% of model, wall < 4x cp): {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
        elif not args.keep:
            for name in ("llama_mlp.onnx", "llama_mlp.onnx.data", "llama_mlp.pruned.onnx", "llama_mlp.pruned.onnx.data"):
                path = os.path.join(folder, name)
                if os.path.exists(path):
                    os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
