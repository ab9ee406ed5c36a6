"""Does pruning make models faster in onnxruntime? SPA against Torch-Pruning, on CPU (or CUDA).

For ResNet-50, MobileNetV2 (224x224), ViT-B/16 (224x224) and a MiniLM-like BERT (sequence
128), all hand-written in tools/models_torch.py with random weights, in one process:
  - export the torch model to ONNX (opset 17, TorchScript exporter);
  - prune the ONNX file with SPA at each ratio (`spa.prune`, L2 magnitude, --round-to);
  - prune the torch model with Torch-Pruning at the same ratio (MagnitudeImportance(p=2),
    its defaults; the classifier or pooler left alone, attention heads declared) and export it;
  - time every variant of one network together with spa.bench (same session options,
    pinned threads, warm-up, alternating blocks) at batch 1 and --batch (8), and report p50.
MACs are counted by SPA's counter on each ONNX graph, so both pruners are measured alike.
The last column checks the target: at --batch, latency ratio <= 1.15 x MACs ratio.
With --target-latency R, each model also gets SPA's `--target-latency R` prune (planned
and measured by SPA at --batch with the same threads), timed in the same interleaved run;
its check is: measured latency ratio at --batch <= 1.05 x R. A missed target (SPA writes nothing) is a NO.

Usage: python tools/speed_bench.py [--models resnet50,mobilenetv2,vit_b16,minilm]
       [--ratios 0.3,0.5] [--target-latency 0.5] [--device cuda] [--batch 8] [--no-tp] [--round-to auto] [--runs 8] [--threads 1] [--work DIR]
Needs the bench extra: pip install -e ".[bench]".
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter

import models_torch  # a sibling: tools/ is the script's folder
import onnxruntime as ort

import spa
from spa.errors import NothingToPrune, TargetMissed
from spa.graph.macs import param_count, total_macs
from spa.io import load
from spa.measure.bench import BenchSettings, bench, cpu_info
from spa.report import table
from spa.rules.base import Ctx

BOUND = 1.15
LATENCY_BOUND = 1.05  # a --target-latency prune's measured ratio within 5% of its target


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "GPU unknown"


def stats(path):
    m = load(path)
    ctx = Ctx(m)
    return total_macs(m.graph.nodes, ctx), param_count(m.graph, ctx)


def tp_prune(model, name, ratio):
    """Torch-Pruning with its defaults: MagnitudeImportance(p=2), local, uniform ratio."""
    import torch_pruning as tp
    model = copy.deepcopy(model)
    heads = {}
    for m in model.modules():
        if isinstance(m, models_torch.Attention):
            heads.update({m.query: m.num_heads, m.key: m.num_heads, m.value: m.num_heads})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, models_torch.example_inputs(name),
                                      importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                      ignored_layers=[model.get_submodule(models_torch.HEADS[name])],
                                      num_heads=heads)
        pruner.step()
    return model.eval()


def spa_note(result):
    pairs = Counter((c.before, c.after) for c in result.changes)
    text = ", ".join(f"{b}->{a} x{n}" for (b, a), n in pairs.most_common(3))
    return text + (f" +{len(pairs) - 3} more" if len(pairs) > 3 else "")


def variants(name, work, ratios, round_to, seq, latencies=(), threads=1, device="cpu", tp=True, batch=8):
    """(label, ratio, path, note) of the original and each pruned export; a --target-latency
    prune's ratio is the string "latency R"."""
    torch_model = models_torch.build(name)
    orig = os.path.join(work, f"{name}.onnx")
    if not os.path.exists(orig):
        models_torch.export(torch_model, name, orig, seq)
    out = [("original", None, orig, "")]
    for ratio in ratios:
        path = os.path.join(work, f"{name}.spa{ratio}.onnx")
        t = time.perf_counter()
        try:
            res = spa.prune(orig, path, ratio=ratio, round_to=round_to, criterion="l2", force=True)
            out.append(("SPA", ratio, path, spa_note(res)))
        except NothingToPrune as exc:
            out.append(("SPA", ratio, None, f"nothing pruned: {exc}"))
        log(f"{name}: SPA {ratio} in {time.perf_counter() - t:.1f} s")
        if not tp:
            continue
        t = time.perf_counter()
        path = os.path.join(work, f"{name}.tp{ratio}.onnx")
        models_torch.export(tp_prune(torch_model, name, ratio), name, path, seq)
        out.append(("Torch-Pruning", ratio, path, ""))
        log(f"{name}: Torch-Pruning {ratio} and export in {time.perf_counter() - t:.1f} s")
    for target in latencies:
        path = os.path.join(work, f"{name}.spa-latency{target}.onnx")
        t = time.perf_counter()
        try:
            res = spa.prune(orig, path, target_latency=target, batch=batch, threads=threads, device=device,
                            round_to=round_to, criterion="l2", force=True)
        except TargetMissed as exc:
            log(f"{name}: SPA --target-latency {target}: {exc}")
            out.append(("SPA latency", f"latency {target}", None, f"missed: {exc}"))
            continue
        log(f"{name}: SPA --target-latency {target} in {time.perf_counter() - t:.1f} s (plan "
            f"{res.timings.get('plan', 0):.1f} s): {res.latency.summary()}")
        out.append(("SPA latency", f"latency {target}", path,
                    f"SPA measured x{res.latency.measured:.3f}, plan {res.timings.get('plan', 0):.0f} s"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2,vit_b16,minilm")
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--target-latency", default="", help="comma-separated latency targets for SPA rows")
    ap.add_argument("--round-to", default="auto", type=lambda v: v if v == "auto" else int(v),
                    help="SPA's --round-to (default: SPA's default, auto)")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1: the ratios then measure the kernels, not thread-pool "
                         "scaling, and stay stable on a shared machine)")
    ap.add_argument("--batch", type=int, default=8,
                    help="the batch --target-latency plans at and the second timed batch (the first is 1)")
    ap.add_argument("--no-tp", action="store_true", help="no Torch-Pruning rows (SPA's only)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where every variant is timed and --target-latency plans (cuda: onnxruntime-gpu)")
    ap.add_argument("--seq", type=int, default=128, help="MiniLM sequence length")
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    args = ap.parse_args()
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    work = args.work or tempfile.mkdtemp(prefix="spa-speed-")
    os.makedirs(work, exist_ok=True)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    big = args.batch
    settings = BenchSettings(device=args.device, batches=(1, big), warmup=args.warmup, runs=args.runs, threads=args.threads,
                             memory=False)
    rows, verdicts, latency_verdicts = [], [], []
    for name in args.models.split(","):
        latencies = [float(r) for r in args.target_latency.split(",") if r]
        vs = variants(name, work, ratios, args.round_to, args.seq, latencies, args.threads, args.device,
                      not args.no_tp, big)
        timed = [v for v in vs if v[2]]
        log(f"{name}: timing {len(timed)} variants at batch 1 and {big}")
        r = bench([v[2] for v in timed], settings)
        base_macs, base_params = stats(timed[0][2])
        for label, ratio, path, note in vs:
            if path is None:
                rows.append((name, label, ratio, "", "", "", "", "", "", "", "", note))
                if isinstance(ratio, str):
                    latency_verdicts.append((name, float(ratio.split()[1]), None, "NO"))
                continue
            i = [v[2] for v in timed].index(path)
            macs, params = stats(path)
            mr = macs / base_macs
            t1, t8, b1, b8 = r.timing(i, 1), r.timing(i, big), r.timing(0, 1), r.timing(0, big)
            l1, l8 = t1.p50_ms / b1.p50_ms, t8.p50_ms / b8.p50_ms
            if isinstance(ratio, str):  # a latency target: within LATENCY_BOUND of it
                goal = float(ratio.split()[1])
                ok = "yes" if l8 <= LATENCY_BOUND * goal else "NO"
                latency_verdicts.append((name, goal, l8, ok))
            else:
                ok = "" if ratio is None else ("yes" if l8 <= BOUND * mr else "NO")
                if ratio is not None:
                    verdicts.append((name, label, ratio, l8 / mr, ok))
            rows.append((name, label, "" if ratio is None else ratio, f"{params / base_params:.3f}", f"{mr:.3f}",
                         f"{t1.p50_ms:.1f}", f"{t8.p50_ms:.1f}", f"{l1:.3f}", f"{l8:.3f}",
                         "" if ratio is None or isinstance(ratio, str) else f"{l8 / mr:.2f}", ok, note))
        log(f"{name}: done")
    print(table(rows, ("model", "pruner", "ratio", "params", "MACs", "p50 b1 ms", f"p50 b{big} ms", "lat b1",
                       f"lat b{big}", f"lat/MACs b{big}", f"<= {BOUND}",
                       "SPA channel changes (before->after x groups)")))
    cpu, _ = cpu_info()
    where = "CUDA (" + gpu_name() + "), host " if args.device == "cuda" else "CPU, "
    print(f"\nparams, MACs, lat: pruned / original. onnxruntime {ort.__version__} {where}{cpu}, "
          f"{os.cpu_count()} logical CPUs, {args.threads} intra-op threads, opt level all, warm-up {args.warmup}, "
          f"{args.runs} runs in alternating blocks, p50. SPA --round-to {args.round_to}. "
          f"Wall time {time.perf_counter() - start:.0f} s; load average {load_start:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; models in {work}")
    if latency_verdicts:
        hits = sum(v[3] == "yes" for v in latency_verdicts)
        print(f"target: --target-latency R measures lat b{big} <= {LATENCY_BOUND} x R: {hits} of "
              f"{len(latency_verdicts)} (" + ", ".join(f"{n} {g}: " + ("missed" if m is None else f"{m:.3f}")
                                                       for n, g, m, _ in latency_verdicts) + ")")
    misses = [v for v in verdicts if v[4] == "NO"]
    print(f"target lat b{big} <= {BOUND} x MACs: {len(verdicts) - len(misses)} of {len(verdicts)} pruned variants meet it"
          + ("; missed by: " + ", ".join(f"{n} {p} {r} ({x:.2f})" for n, p, r, x, _ in misses) if misses else ""))


if __name__ == "__main__":
    main()
