"""Held-out check: architectures the project never tested, from timm, as a new user would prune them.

Step 1 (in the torchvision/timm virtual environment, never a project dependency):
    /work/tvenv/bin/python tools/heldout_timm.py export --out /tmp/timm
exports each model of MODELS (random weights, seed 0, made distinct as tools/export_zoo.py's
`distinct` does: no two tensors alike, as in trained weights; eval mode, 1x3x224x224, dynamic batch)
with both torch exporters (`ts`: dynamo=False, opset 17; `dynamo`: dynamo=True, opset 18).

Step 2 (in the project's environment):
    python tools/heldout_timm.py prune --out /tmp/timm
prunes every exported file with `spa.prune` at `--ratio 0.3` (default criterion) and at
`--target-macs 0.3` with the default criterion and with l2, and prints one markdown row per
model: MACs removed per setting and export, and the ts/dynamo gap at ratio 0.3.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

MODELS = ("resnest14d", "regnetx_002", "ghostnet_100", "convnext_atto", "repvgg_a0", "dla34", "skresnet18",
          "res2net50_14w_8s", "mobilevitv2_050", "hrnet_w18_small", "efficientvit_b0", "fastvit_t8")


def export_one(name, exporter, out):
    import timm
    import torch
    from export_zoo import distinct
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False).eval()
    distinct(m)
    x = torch.randn(2, 3, 224, 224)
    path = os.path.join(out, f"{name}_{exporter}.onnx")
    kw = dict(input_names=["input"], output_names=["logits"])
    if exporter == "ts":
        torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17, dynamic_axes={"input": {0: "N"}}, **kw)
    else:
        torch.onnx.export(m, (x,), path, dynamo=True, opset_version=18,
                          dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=64)}}, **kw)


def export(args):
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        for exporter in ("ts", "dynamo"):
            path = os.path.join(args.out, f"{name}_{exporter}.onnx")
            if os.path.exists(path):
                continue
            code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import heldout_timm as h; "
                    f"h.export_one({name!r}, {exporter!r}, {args.out!r})")
            try:
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
                print(name, exporter, "ok" if r.returncode == 0 else "failed: " + r.stderr.strip()[-300:], flush=True)
            except subprocess.TimeoutExpired:
                print(name, exporter, "export timed out", flush=True)


def prune(args):
    import spa
    settings = {"ratio 0.3": dict(ratio=0.3), "target 0.3": dict(target_macs=0.3),
                "target 0.3 l2": dict(target_macs=0.3, criterion="l2")}
    rows = {}
    for path in sorted(glob.glob(os.path.join(args.out, "*.onnx"))):
        name, exporter = os.path.basename(path)[:-5].rsplit("_", 1)
        for label, kw in settings.items():
            t = time.perf_counter()
            try:
                r = spa.prune(path, **kw)
                v = r.verdict
                cell = dict(macs=r.macs_reduction, ok=bool(v and v.checker and v.runs and v.outputs_match and v.deterministic),
                            notes=list(r.notes), s=time.perf_counter() - t)
            except Exception as exc:  # report the failure, go on
                cell = dict(error=f"{type(exc).__name__}: {exc}"[:300])
            rows.setdefault(name, {}).setdefault(label, {})[exporter] = cell
            print(json.dumps(dict(model=name, exporter=exporter, setting=label, **cell)), file=sys.stderr, flush=True)
    print("| model | " + " | ".join(f"{s} ts / dynamo" for s in settings) + " | ratio gap |")
    print("| --- " * (len(settings) + 2) + "|")
    for name, by in rows.items():
        cells = []
        for s in settings:
            pair = [by.get(s, {}).get(e, {}) for e in ("ts", "dynamo")]
            cells.append(" / ".join(f"{c['macs'] * 100:.1f}%" + ("" if c.get("ok", True) else " (unverified)")
                                    if "macs" in c else ("error" if c else "-") for c in pair))
        pair = [by.get("ratio 0.3", {}).get(e, {}).get("macs") for e in ("ts", "dynamo")]
        gap = f"{abs(pair[0] - pair[1]) * 100:.1f}" if None not in pair else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {gap} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("export", "prune"))
    ap.add_argument("--out", default="/tmp/timm")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    (export if args.step == "export" else prune)(args)


if __name__ == "__main__":
    main()
