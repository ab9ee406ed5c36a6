"""Export every torchvision classification model to the zoo, with both torch ONNX exporters.

    /work/tvenv/bin/python tools/export_zoo.py                 # every model, both exporters
    /work/tvenv/bin/python tools/export_zoo.py --only resnet18 vit_b_16 --exporters ts
    nohup /work/tvenv/bin/python tools/export_zoo.py > /tmp/export_zoo.log 2>&1 &

Models are `torchvision.models.list_models(module=torchvision.models)` built with random
weights (`weights=None`, seed 0; see `distinct`: no two tensors alike), in eval mode, cheapest first (by the GFLOPs that
torchvision's weight metadata lists). Input 1x3xSxS: S is the model's own image size
(ViTs), else the smallest crop size among its pretrained weights (224 for most, 299 for
inception_v3, up to 600 for efficientnet_b7; 224 for regnet_y_128gf, whose SWAG weights
come at 224 and 384). The batch axis is dynamic.

`ts` is the TorchScript exporter (`dynamo=False`, opset 17), `dynamo` the torch.export one
(`dynamo=True`, opset 18, onnxscript's optimizer on). Each export runs in its own process
with a time limit (--timeout, 600 s); the result is checked in onnxruntime against torch
at batch 2 and saved in the zoo's weightless format (tools/zoo_format.py) as
models/zoo/torchvision/<name>_{ts,dynamo}.onnx. manifest.json records for every model
and exporter the inputs, outputs, node count, file size and the error against torch, or
torch's error verbatim where it could not export. Node doc strings and metadata (stack
traces) are dropped. The manifest is rewritten after every
export, so a run can be stopped and resumed: exports already in it are skipped unless
--force.

Needs torch and torchvision (a separate virtual environment: they are never project
dependencies); the tests and tools/coverage.py need neither.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ZOO = os.path.join(ROOT, "models", "zoo", "torchvision")
EXPORTERS = {"ts": dict(dynamo=False, opset_version=17), "dynamo": dict(dynamo=True, opset_version=18)}
INPUT, OUTPUT = "x", "logits"


def catalogue():
    """[(name, gflops, params, image size)] of every classification model, cheapest first."""
    import torchvision

    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        weights = torchvision.models.get_model_weights(name)
        meta = weights.DEFAULT.meta if hasattr(weights, "DEFAULT") else list(weights)[0].meta
        crop = min(w.transforms().crop_size[0] for w in weights)
        out.append((name, float(meta.get("_ops", 0.0)), int(meta.get("num_params", 0)), int(crop)))
    return sorted(out, key=lambda t: (t[1], t[2], t[0]))


def build(name, crop):
    """The model (random weights, eval mode) and its input size."""
    import torch
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None).eval()
    size = getattr(model, "image_size", None) or crop  # ViTs fix their size at construction
    return distinct(model), int(size)


def distinct(model):
    """Give every parameter and buffer distinct values, as trained weights have.

    Freshly initialised models have many identical tensors (BatchNorm's ones and zeros,
    zero biases, LayerNorm weights, layer scales), and both exporters store identical
    tensors once: the TorchScript exporter after folding BatchNorm into the convs (one
    bias initializer behind many Identity nodes), the dynamo one for LayerNorm weights.
    A shared tensor ties the channels of every op that reads it, which no pretrained
    export would do. BatchNorm gets random statistics; any other constant-valued float
    tensor gets 1% noise.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                for name, lo, hi in (("weight", 0.5, 1.5), ("running_var", 0.5, 1.5)):
                    t = getattr(mod, name, None)
                    if t is not None:
                        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))
                for name in ("bias", "running_mean"):
                    t = getattr(mod, name, None)
                    if t is not None:
                        t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.numel() > 1 and bool((t == t.reshape(-1)[0]).all()):
                scale = float(t.reshape(-1)[0].abs()) or 1.0
                t.add_(0.01 * scale * torch.randn(t.shape, generator=gen))
    return model


def export(model, size, exporter, path):
    """Export to `path`; returns the batch-2 example input and torch's output on it."""
    import torch

    kw = dict(EXPORTERS[exporter])
    if exporter == "ts":
        kw["dynamic_axes"] = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
        example = torch.randn(1, 3, size, size)
    else:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
        kw["optimize"] = True
        example = torch.randn(2, 3, size, size)  # a batch of 1 would be specialised
    log = io.StringIO()
    # not under torch.no_grad(): there nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the TorchScript exporter cannot export
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, input_names=[INPUT], output_names=[OUTPUT], **kw)
    with torch.no_grad():
        check = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        want = model(check).numpy()
    return check.numpy(), want


def check(path, x, want):
    """Largest |onnxruntime - torch| at batch 2, relative to the output scale."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    err = float(np.max(np.abs(got - want)))
    scale = max(1.0, float(np.max(np.abs(want))))
    if got.shape != want.shape or not err <= 1e-3 * scale:
        raise RuntimeError(f"onnxruntime output {got.shape} differs from torch {want.shape} by {err}")
    return err / scale


def slim(proto):
    """Drop what only documents the export: node doc strings and metadata (the dynamo
    exporter records a stack trace and module path per node, most of a stripped file)."""
    graphs = [proto.graph] + [a.g for n in proto.graph.node for a in n.attribute if a.HasField("g")]
    for graph in graphs:
        for node in graph.node:
            node.ClearField("doc_string")
            node.ClearField("metadata_props")
    return proto


def _dims(vi):
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def export_one(name, exporter, crop, out_dir):
    """Export one model with one exporter; the manifest entry (never raises)."""
    import onnx
    import torch

    from spa.testing.zoo import strip

    torch.set_num_threads(int(os.environ.get("ZOO_THREADS", "1")))
    path = os.path.join(out_dir, f"{name}_{exporter}.onnx")
    entry = {"file": os.path.basename(path), "exporter": exporter, "opset": EXPORTERS[exporter]["opset_version"],
             "torch": torch.__version__}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        try:
            model, size = build(name, crop)
            entry["input_size"] = size
            x, want = export(model, size, exporter, raw)
            entry["export_seconds"] = round(time.perf_counter() - t0, 1)
            entry["max_rel_error_vs_torch"] = check(raw, x, want)
            proto = onnx.load(raw)  # pulls in external data, if any
        except Exception as exc:  # torch raises many types; the message is what the manifest keeps
            entry["error"] = f"{type(exc).__name__}: {str(exc).strip()}"[:4000]
            entry["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
            if os.path.exists(path):
                os.unlink(path)
            return entry
    entry["inputs"] = [[i.name, _dims(i)] for i in proto.graph.input]
    entry["outputs"] = [[o.name, _dims(o)] for o in proto.graph.output]
    entry["nodes"] = len(proto.graph.node)
    entry["ops"] = sorted({n.op_type for n in proto.graph.node})
    onnx.save(strip(slim(proto)), path + ".part")
    os.replace(path + ".part", path)
    entry["bytes"] = os.path.getsize(path)
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def _child(args):
    entry = export_one(args.child[0], args.child[1], int(args.child[2]), args.out)
    with open(args.child[3], "w") as f:
        json.dump(entry, f)


def run_child(name, exporter, crop, out_dir, timeout):
    """export_one in a fresh process (own session, killed whole at the time limit)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--out", out_dir, "--child", name, exporter, str(crop), result]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        with open(result) as f:
            entry = json.load(f)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        entry = {"file": f"{name}_{exporter}.onnx", "exporter": exporter,
                 "error": f"timeout: the export took over {timeout} s and was stopped"}
    except (OSError, ValueError):
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        entry = {"file": f"{name}_{exporter}.onnx", "exporter": exporter,
                 "error": f"the export process died (exit {proc.returncode}): {' | '.join(tail)}"[:4000]}
    finally:
        if os.path.exists(result):
            os.unlink(result)
    entry["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def load_manifest(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"format": "stripped ONNX (tools/zoo_format.py): fill the weights before running", "models": {}}


def write_manifest(manifest, path):
    import onnx
    import torch
    import torchvision

    manifest["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                            "onnx": onnx.__version__}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="models to export (default: all)")
    ap.add_argument("--exporters", nargs="*", choices=list(EXPORTERS), default=list(EXPORTERS))
    ap.add_argument("--out", default=ZOO, help="zoo directory (default: models/zoo/torchvision)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per export (default 600)")
    ap.add_argument("--force", action="store_true", help="redo exports already in the manifest")
    ap.add_argument("--max-gflops", type=float, default=None, help="skip models above this cost")
    ap.add_argument("--max-params", type=float, default=None, help="skip models with more parameters")
    ap.add_argument("--jobs", type=int, default=1, help="exports at once (default 1)")
    ap.add_argument("--list", action="store_true", help="print the catalogue and exit")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    cat = catalogue()
    if args.list:
        for name, gflops, params, crop in cat:
            print(f"{name:28s} {gflops:8.2f} GFLOPs {params / 1e6:8.1f} M params  {crop}px")
        return
    os.makedirs(args.out, exist_ok=True)
    mpath = os.path.join(args.out, "manifest.json")
    manifest = load_manifest(mpath)
    known = {c[0] for c in cat}
    unknown = set(args.only or ()) - known
    if unknown:
        ap.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    todo = []
    for name, gflops, params, crop in cat:
        if args.only and name not in args.only or args.max_gflops is not None and gflops > args.max_gflops \
                or args.max_params is not None and params > args.max_params:
            continue
        entry = manifest["models"].setdefault(name, {"exports": {}})
        entry.update(gflops=gflops, params=params, crop=crop)
        todo += [(name, exporter, crop) for exporter in args.exporters
                 if exporter not in entry["exports"] or args.force]
    lock = threading.Lock()

    def one(name, exporter, crop):
        result = run_child(name, exporter, crop, args.out, args.timeout)
        with lock:
            manifest["models"][name]["exports"][exporter] = result
            write_manifest(manifest, mpath)
        status = result["error"].splitlines()[0][:200] if "error" in result else \
            f"{result['bytes']} bytes, {result['nodes']} nodes, {result['wall_seconds']} s"
        print(f"{name:24s} {exporter:7s} {status}", flush=True)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for fut in [pool.submit(one, *t) for t in todo]:
            fut.result()
    write_manifest(manifest, mpath)


if __name__ == "__main__":
    main()
