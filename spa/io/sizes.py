"""Sizes for dynamic input dims that the user did not give: ones the model runs at.

A 1x1 image cannot pass a detector's stride-2 stack, so dynamic dims are not simply
set to 1. Each dynamic axis gets a kind: the leading axis of an input of rank 2 or more
is the batch (1); integer inputs and axes whose name says sequence take SEQUENCE; every
other axis (image height and width, audio samples) takes SPATIAL. Axes that share a
symbolic name take one size. The model's own hints come first (the size in its
metadata, the static size of the same axis of another input), then the ladders, rung
by rung (with three sequence axes, each rung also tries each one as the sum of the
other two: a KV cache's mask covers past and new tokens), then all ones (the old default). The first candidate that passes shape
inference and one onnxruntime run wins.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx

from ..errors import ModelError
from ..protos import NP_TYPES
from ..runtime import random_inputs, run, session
from .constants import MAX_ELEMENTS
from .skeleton import skeleton

SPATIAL = (32, 64, 128, 224, 320, 640)
SEQUENCE = (16, 128)
SEQUENCE_WORDS = re.compile(r"seq|len|token|word|step|past|total|decode", re.I)
SIZE_KEYS = re.compile(r"^(imgsz|img_size|image_size|input_size|input_shape|image_shape|shape|size)$", re.I)


def ones(dims) -> dict:
    """Declared dims with the dynamic ones set to 1 (the shapes read when nothing better runs)."""
    return {n: tuple(d if isinstance(d, int) else 1 for d in s) for n, s in dims.items()}


def declared(proto, overrides) -> dict:
    """Graph inputs (not initializers) -> their declared dims: int when static, else the
    symbolic name or None; inputs in `overrides` are taken as given."""
    inits = {t.name for t in proto.graph.initializer}
    out = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if vi.name in overrides:
            out[vi.name] = tuple(int(d) for d in overrides[vi.name])
            continue
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                             for d in vi.type.tensor_type.shape.dim)
    return out


def _kind(name, axis, rank, integer, symbol, grown=()):
    if axis == 0 and rank >= 2:
        return "batch"
    if integer or (symbol and (SEQUENCE_WORDS.search(symbol) or symbol in grown)):
        return "sequence"
    return "spatial"


def dynamic_axes(proto, dims) -> dict:
    """{key: (kind, [(input, axis), ...])} for every dynamic input axis; axes sharing a
    symbolic name share a key (a name like '?' or '-1' is not shared)."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in proto.graph.input}
    grown = _summed(proto)
    out = {}
    for name, shape in dims.items():
        integer = np.issubdtype(NP_TYPES.get(types.get(name), np.float32), np.integer)
        for axis, d in enumerate(shape):
            if isinstance(d, int):
                continue
            shared = isinstance(d, str) and re.search(r"[A-Za-z_]", d) and "?" not in d
            key = d if shared else f"{name}:{axis}"
            kind = _kind(name, axis, len(shape), integer, d if isinstance(d, str) else "", grown)
            old = out.get(key, ("batch", []))
            out[key] = (kind if old[0] == "batch" else old[0], old[1] + [(name, axis)])
    return out


def _summed(proto) -> set:
    """Symbols that a graph output's dim adds up ('s58 + s70': a KV cache grows by the new
    tokens): sequence lengths, whatever their names."""
    out = set()
    for vi in proto.graph.output:
        for d in vi.type.tensor_type.shape.dim:
            if "+" in d.dim_param:
                out.update(p.strip() for p in d.dim_param.split("+"))
    return out


def hints(proto, dims, axes) -> dict:
    """{key: size} the model suggests: a static dim at the same axis of another input of
    the same rank; a size in the metadata (Ultralytics' imgsz: [640, 640])."""
    out = {}
    for key, (kind, members) in axes.items():
        if kind != "spatial":
            continue
        for name, axis in members:
            for other, shape in dims.items():
                if other != name and len(shape) == len(dims[name]) and isinstance(shape[axis], int) \
                        and shape[axis] > 1:
                    out.setdefault(key, shape[axis])
    sizes = _metadata_sizes(proto)
    if sizes:
        for name, shape in dims.items():
            spatial = [k for k, d in enumerate(shape)
                       if not isinstance(d, int) and axes[_key_of(axes, name, k)][0] == "spatial"]
            for k, size in zip(spatial, sizes if len(sizes) == len(spatial) else [sizes[0]] * len(spatial)):
                out.setdefault(_key_of(axes, name, k), size)
    return out


def _key_of(axes, name, axis):
    return next(k for k, (_, members) in axes.items() if (name, axis) in members)


def _metadata_sizes(proto) -> list:
    for p in proto.metadata_props:
        if not SIZE_KEYS.match(p.key.strip()):
            continue
        try:
            value = json.loads(p.value.replace("(", "[").replace(")", "]"))
        except ValueError:
            continue
        value = value if isinstance(value, list) else [value]
        if value and all(isinstance(v, int) and 8 <= v <= 4096 for v in value):
            return value[-2:]
    return []


def candidates(dims, axes, hinted) -> list:
    """Input shapes to try, in order: the hints, the ladders rung by rung, all ones."""
    steps = []
    if hinted:
        steps.append({k: hinted.get(k, _ladder(kind)[0]) for k, (kind, _) in axes.items()})
    for i in range(len(SPATIAL)):
        step = {k: _ladder(kind)[min(i, len(_ladder(kind)) - 1)] for k, (kind, _) in axes.items()}
        steps += [step] + _sums(step, axes)
    steps.append({k: 1 for k in axes})
    out = []
    for step in steps:
        shapes = {name: list(shape) for name, shape in dims.items()}
        for key, (_, members) in axes.items():
            for name, axis in members:
                shapes[name][axis] = step[key]
        shapes = {n: tuple(s) for n, s in shapes.items()}
        if shapes not in out:
            out.append(shapes)
    return out


def _sums(step, axes) -> list:
    """With three sequence axes (a KV-cache decoder: new tokens, cached ones, and an
    attention mask over both), one of them may have to be the sum of the other two: a
    variant of the step for each choice."""
    seq = [k for k, (kind, _) in axes.items() if kind == "sequence"]
    if len(seq) != 3:
        return []
    return [{**step, k: sum(step[j] for j in seq if j != k)} for k in seq]


def _ladder(kind):
    return {"batch": (1,), "sequence": SEQUENCE, "spatial": SPATIAL}[kind]


def choose(proto, src, overrides, where, must_run=True) -> tuple:
    """Concrete input shapes for the model, and a note saying what was chosen (None when
    nothing needed choosing).

    Args:
        proto: the model (its weights may be external: only `src` is run).
        src: what onnxruntime runs: the model's path, or the proto.
        overrides: {input: shape} the user gave (--input-shape).
        where: the model's name for messages.
        must_run: False: a model that runs at none of the candidates gets all-ones dims
            and a note (analysis reads shapes only) instead of the error.

    Returns:
        ({input: shape}, note or None). A model that runs at none of the candidates is a
        ModelError naming --input-shape.
    """
    dims = declared(proto, overrides)
    axes = dynamic_axes(proto, dims)
    if all(kind == "batch" for kind, _ in axes.values()):
        return ones(dims), None
    hinted = hints(proto, dims, axes)
    tries = candidates(dims, axes, hinted)
    runner = _Runner(proto, src)
    for i, shapes in enumerate(tries):
        if runner.runs(shapes):
            how = ("the model's hint" if hinted and i == 0 else
                   "the old default" if i == len(tries) - 1 else "the smallest size tried that onnxruntime runs")
            said = ", ".join(f"{n} {list(s)}" for n, s in shapes.items() if s != dims[n])
            return shapes, f"no --input-shape: dynamic dims set to {said} ({how})"
    tried = "; ".join(", ".join(f"{n} {list(s)}" for n, s in shapes.items() if s != dims[n]) for shapes in tries)
    if not must_run:
        return ones(dims), ("no --input-shape: onnxruntime ran none of the sizes tried for the dynamic dims, so they "
                      "were read as 1; give them with --input-shape NAME:D1,D2,..")
    raise ModelError(f"{where}: onnxruntime runs the model at none of the sizes tried for its dynamic dims "
                     f"({tried}); give them with --input-shape NAME:D1,D2,..")


class _Runner:
    """Shape inference, then one run of one session; a model onnxruntime cannot load is
    judged by shape inference alone (its run fails later with its own message)."""

    def __init__(self, proto, src):
        self.proto, self.src, self.sess, self.loads = proto, src, None, True
        self.skeleton = skeleton(proto)

    def runs(self, shapes) -> bool:
        if any(int(np.prod(s, dtype=np.int64)) > MAX_ELEMENTS for s in shapes.values()):
            return False
        if not self._infers(shapes):
            return False
        if self.sess is None and self.loads:
            try:
                self.sess = session(self.src)
            except Exception:  # onnxruntime errors have no common base class
                self.loads = False
        if self.sess is None:
            return True
        try:
            run(self.sess, random_inputs(self.proto, shapes))
        except Exception:  # onnxruntime errors have no common base class
            return False
        return True

    def _infers(self, shapes) -> bool:
        model = onnx.ModelProto()
        model.CopyFrom(self.skeleton)
        del model.graph.value_info[:]
        for vi in model.graph.input:
            if vi.name in shapes:
                for d, v in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                    d.Clear()
                    d.dim_value = v
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # onnx raises several types here
            return False
        for vi in inferred.graph.value_info:  # declared outputs may say -1 for dynamic
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
            if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > MAX_ELEMENTS:
                return False
        return True
