"""The committed model zoo: its weightless model format, manifest, loading with
seeded weights, and inputs.

The format: graphs without their large float weights.

A *stripped* model is an ordinary ONNX file in which every floating-point initializer
(and every floating-point `Constant` node value) with more than `LIMIT` elements keeps
its name, dims and data type but carries no data. The model's `metadata_props` gets
one entry, `spa.placeholders`, a JSON list of the stripped tensors: the initializer
name, or for a `Constant` node its output name. Integer and bool tensors (shape
vectors, token ids, masks) and small float tensors are kept as they are, so the graph
is complete except for weight values.

`fill` gives the placeholders seeded random values: 1-D tensors (biases, norm scales)
uniform(0.5, 1.5), all others normal * sqrt(1 / fan_in), with fan_in read from the
tensor's consumer (MatMul, Gemm, Conv, Gather...). The filled model passes
`onnx.checker` and runs; its outputs stay finite.

`strip` and `fill` as a script: tools/zoo_format.py. Only numpy and onnx are needed
(no torch, no transformers): the tests load the zoo with `load`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import REPO

LIMIT = 64
KEY = "spa.placeholders"
FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}
ZOO = os.path.join(REPO, "models", "zoo")
TRANSFORMERS = os.path.join(ZOO, "transformers")
DATA_FIELDS = ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data", "string_data")


def _numel(t: TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1


def _strippable(t: TensorProto) -> bool:
    return (t.data_type in FLOATS or t.data_type == TensorProto.BFLOAT16) and _numel(t) > LIMIT \
        and t.data_location != TensorProto.EXTERNAL


def _clear(t: TensorProto):
    for f in DATA_FIELDS:
        t.ClearField(f)


def _constant_tensors(graph):
    """(output name, TensorProto) of every Constant node's `value` attribute."""
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    yield node.output[0], a.t


def placeholders(model: onnx.ModelProto) -> list:
    """Names of the tensors `strip` emptied, in file order; [] for an ordinary model."""
    for p in model.metadata_props:
        if p.key == KEY:
            return json.loads(p.value)
    return []


def strip(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every float tensor of more than LIMIT elements emptied."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = placeholders(out)
    for t in out.graph.initializer:
        if _strippable(t):
            _clear(t)
            names.append(t.name)
    for name, t in _constant_tensors(out.graph):
        if _strippable(t):
            _clear(t)
            names.append(name)
    keep = [p for p in out.metadata_props if p.key != KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(keep)
    if names:
        out.metadata_props.append(onnx.StringStringEntryProto(key=KEY, value=json.dumps(names)))
    return out


def _consumers(graph):
    users = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                users.setdefault(name, []).append((node, i))
    return users


def _follow(name, users, depth=0):
    """The first consumer that says what a weight's fan-in is, looking through the
    ops torch puts between a parameter and its use (Transpose, Cast, Identity...)."""
    for node, i in users.get(name, []):
        if node.op_type in ("Transpose", "Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze") and depth < 4:
            found = _follow(node.output[0], users, depth + 1)
            if found is not None:
                return found[0], found[1], node.op_type == "Transpose" or found[2]
            continue
        return node, i, False
    return None


def _fan_in(name, dims, users) -> int:
    dims = [int(d) for d in dims]
    found = _follow(name, users)
    if found is not None and not found[2]:
        node, i, _ = found
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul" and len(dims) >= 2:
            return dims[-2] if i == 1 else dims[-1]
        if node.op_type == "Gemm" and i < 2 and len(dims) == 2:
            trans = attrs.get("transB" if i == 1 else "transA", 0)
            if i == 1:
                return dims[1] if trans else dims[0]
            return dims[0] if trans else dims[1]
        if node.op_type in ("Conv", "ConvTranspose") and i == 1:
            return int(np.prod(dims[1:]))
        if node.op_type == "Gather" and i == 0:
            return dims[-1]  # embeddings: rows of unit-ish norm
    if found is not None and found[2] and len(dims) == 2:
        return dims[1]  # a Linear weight [out, in] that reaches its MatMul through a Transpose
    return int(np.prod(dims[1:])) if len(dims) > 1 else 1


def _random(rng, dims, dtype, fan_in):
    if len(dims) == 1:
        value = rng.uniform(0.5, 1.5, dims)
    else:
        value = rng.standard_normal(dims) * np.sqrt(1.0 / max(fan_in, 1))
    return value.astype(dtype)


def fill(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of a stripped model with seeded random values in every placeholder.

    A model without placeholders comes back unchanged (as a copy).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = placeholders(out)
    if not names:
        return out
    rng = np.random.default_rng(seed)
    users = _consumers(out.graph)
    tensors = {t.name: t for t in out.graph.initializer}
    tensors.update(dict(_constant_tensors(out.graph)))
    for name in names:
        t = tensors.get(name)
        if t is None:
            raise ValueError(f"placeholder {name!r} names no initializer or Constant in the model")
        dims = tuple(int(d) for d in t.dims)
        if t.data_type == TensorProto.BFLOAT16:
            value = _random(rng, dims, np.float32, _fan_in(name, dims, users))
            new = helper.make_tensor(t.name, TensorProto.BFLOAT16, dims, value.reshape(-1).tolist())
        else:
            value = _random(rng, dims, FLOATS[t.data_type], _fan_in(name, dims, users))
            new = numpy_helper.from_array(value, t.name)
        doc = t.doc_string
        t.CopyFrom(new)
        t.doc_string = doc
    keep = [p for p in out.metadata_props if p.key != KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(keep)
    return out


# -- the committed zoo ----------------------------------------------------------------
def manifest(folder=TRANSFORMERS) -> dict:
    """The manifest.json of a zoo folder."""
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
    """Whether an input of the export has a "sequence" dim."""
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
