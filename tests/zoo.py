"""The committed model zoo: manifest, loading with seeded weights, and inputs.

Only numpy, onnx and onnxruntime are needed (no torch, no transformers): the models are
stored weightless (tools/zoo_format.py) and `load` fills them with seeded random values.
"""

import json
import os
import sys

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "models", "zoo")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from zoo_format import fill, placeholders  # noqa: E402,F401

TRANSFORMERS = os.path.join(ZOO, "transformers")


def manifest(folder=TRANSFORMERS) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


def exports(folder=TRANSFORMERS):
    """(model name, exporter, manifest entry, export entry) for every export in the manifest,
    including those torch could not produce (their export entry has "error")."""
    for name, entry in manifest(folder)["models"].items():
        for exporter, ex in entry["exports"].items():
            yield name, exporter, entry, ex


def load(name, exporter, folder=TRANSFORMERS, seed=0) -> onnx.ModelProto:
    """A zoo model with seeded random weights in place of its placeholders."""
    return fill(onnx.load(os.path.join(folder, f"{name}_{exporter}.onnx")), seed)


def shapes(entry, batch=1, seq=7) -> dict:
    """Concrete input shapes: symbolic dims "batch" and "sequence" take the given sizes."""
    sizes = {"batch": batch, "sequence": seq}
    return {i["name"]: tuple(sizes[d] if isinstance(d, str) else d for d in i["shape"]) for i in entry["inputs"]}


def has_sequence(entry) -> bool:
    return any("sequence" in i["shape"] for i in entry["inputs"])


def feeds(entry, batch=2, seq=7, seed=0) -> dict:
    """Seeded inputs within each input's value range; an attention mask keeps its first token."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes(entry, batch, seq).items():
        spec = next(i for i in entry["inputs"] if i["name"] == name)
        if spec["dtype"] == "int64":
            lo, hi = spec["range"]
            value = rng.integers(lo, hi, size=shape, dtype=np.int64)
            if name == "attention_mask":
                value[:, 0] = 1
        else:
            value = rng.standard_normal(shape).astype(np.float32)
        out[name] = value
    return out
