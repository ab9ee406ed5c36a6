"""Load an ONNX model: read, check, infer shapes, import into graphsurgeon."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from .errors import ModelError, UsageError


@dataclass
class Model:
    """A loaded model: the original proto, its graphsurgeon graph and tensor shapes.

    `shapes` maps tensor name to a tuple of dims at the concrete input shapes (dynamic
    input dims are 1 unless given); a dim ONNX cannot infer is a str or None.
    `input_shapes` holds concrete shapes for the graph inputs, used to run the model.
    """

    proto: onnx.ModelProto
    graph: gs.Graph
    shapes: dict
    input_shapes: dict
    path: str | None = None
    opset: int = 0
    file_size: int = 0
    dynamic: set = field(default_factory=set)  # (tensor, axis) whose size follows a dynamic input dim
    _consts: dict = field(default_factory=dict, repr=False)


def parse_input_shapes(specs) -> dict:
    """Parse ["name:1,3,224,224", ...] into {name: (1, 3, 224, 224)}."""
    out = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = None
        if not sep or not name or not shape or min(shape) < 1:
            raise UsageError(f"bad --input-shape {spec!r}: expected name:d1,d2,... with positive dims")
        out[name] = shape
    return out


def read_proto(src) -> tuple[onnx.ModelProto, str | None, int]:
    """Read a model from a path or take a ModelProto as is."""
    if isinstance(src, onnx.ModelProto):
        return src, None, src.ByteSize()
    path = os.fspath(src)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise ModelError(f"{path}: file is empty")
    try:
        proto = onnx.load(path)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from exc
    if not proto.graph.node:
        raise ModelError(f"{path}: the model graph has no nodes")
    return proto, path, size


def load(src, input_shapes=None) -> Model:
    """Load a model from a path or ModelProto.

    Args:
        src: path to an .onnx file, or an onnx.ModelProto.
        input_shapes: optional {input name: shape} to make dynamic inputs concrete.

    Returns:
        A Model with shapes inferred for every tensor ONNX can infer.
    """
    proto, path, size = read_proto(src)
    where = path or "<model>"
    input_shapes = dict(input_shapes or {})
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{where}: invalid ONNX model ({_first_line(exc)})") from exc
    names = {i.name for i in proto.graph.input}
    unknown = set(input_shapes) - names
    if unknown:
        raise UsageError(f"--input-shape names unknown input(s): {', '.join(sorted(unknown))}")
    concrete = _concrete_inputs(proto, input_shapes)
    inferred = _infer(proto, concrete, where)
    graph = gs.import_onnx(inferred)
    shapes = _collect_shapes(inferred, graph)
    _fill_unknown(shapes, proto, graph, concrete)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    dynamic = _dynamic_axes(proto, graph, shapes, concrete, where)
    return Model(proto, graph, shapes, concrete, path, opset, size, dynamic)


def _concrete_inputs(proto, overrides) -> dict:
    """Concrete shapes for graph inputs; unknown or symbolic dims become 1."""
    inits = {t.name for t in proto.graph.initializer}
    out = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if vi.name in overrides:
            out[vi.name] = overrides[vi.name]
            continue
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)
    return out


def _infer(proto, overrides, where) -> onnx.ModelProto:
    """Shape inference on a copy whose inputs are made concrete."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    del model.graph.value_info[:]
    for vi in model.graph.input:
        if vi.name in overrides:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(overrides[vi.name]):
                raise UsageError(f"--input-shape for {vi.name!r} has rank {len(overrides[vi.name])}, model says {len(dims)}")
            for d, v in zip(dims, overrides[vi.name]):
                d.Clear()
                d.dim_value = v
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises several types here
        raise ModelError(f"{where}: shape inference failed ({_first_line(exc)})") from exc


def _collect_shapes(proto, graph) -> dict:
    shapes = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(_dim(d) for d in tt.shape.dim)
    for name, t in graph.tensors().items():
        if isinstance(t, gs.Constant):
            shapes[name] = tuple(t.shape)
    return shapes


def _dynamic_axes(proto, graph, shapes, concrete, where) -> set:
    """Axes whose size follows a dynamic input dim (batch, sequence): those that change
    when every dynamic input dim grows by one."""
    bumped = {}
    for vi in proto.graph.input:
        if vi.name in concrete:
            dims = vi.type.tensor_type.shape.dim
            bumped[vi.name] = tuple(v if d.HasField("dim_value") and d.dim_value > 0 else v + 1
                                    for d, v in zip(dims, concrete[vi.name]))
    if bumped == concrete:
        return set()
    other = _collect_shapes(_infer(proto, bumped, where), graph)
    _fill_unknown(other, proto, graph, bumped)
    return {(n, a) for n, dims in shapes.items() if n in other and len(other[n]) == len(dims)
            for a, (d, e) in enumerate(zip(dims, other[n])) if d != e}


def _fill_unknown(shapes, proto, graph, concrete):
    """Tensors ONNX inference left without concrete dims get them from one
    onnxruntime run at the concrete input shapes."""
    def unknown(name):
        dims = shapes.get(name)
        return dims is None or not all(isinstance(d, int) for d in dims)

    names = [n for n, t in graph.tensors().items() if isinstance(t, gs.Variable) and t.inputs and unknown(n)]
    if names:
        shapes.update(_run_shapes(proto, concrete, names))


def _run_shapes(proto, concrete, names) -> dict:
    """Shapes of `names` from one onnxruntime run on seeded inputs; {} if it cannot run."""
    from .verify import random_inputs, run  # verify imports this module

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    declared = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in declared)
    try:
        outs = run(model, random_inputs(proto, concrete))
    except Exception:  # a model ORT cannot run keeps its unknown shapes
        return {}
    return {n: tuple(outs[n].shape) for n in names if n in outs}


def _dim(d):
    if d.HasField("dim_value"):
        return d.dim_value if d.dim_value >= 0 else None  # some exporters write -1
    return d.dim_param or None


def const_value(tensor) -> np.ndarray | None:
    """The value of a tensor known before run time, or None.

    Handles initializers, `Constant` node outputs and `ConstantOfShape` with a constant shape.
    """
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Constant":
        return _constant_attr(node)
    if node.op == "ConstantOfShape" and isinstance(node.inputs[0], gs.Constant):
        fill = node.attrs.get("value")
        value = fill.values.reshape(-1)[0] if fill is not None else np.float32(0)
        return np.full(tuple(node.inputs[0].values.tolist()), value, dtype=np.asarray(value).dtype)
    return None


def _constant_attr(node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        return attrs["value"].values
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None


def _first_line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
