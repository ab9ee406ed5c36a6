"""Load an ONNX model: read, check, infer shapes, import into graphsurgeon."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx_graphsurgeon.logger import G_LOGGER

from ..errors import ModelError, UsageError, first_line
from ..runtime import options, random_inputs, run, session
from .constants import MAX_ELEMENTS
from .external import Store, attach, bad_name, bind, tensor_array
from . import nbits
from .fold import evaluates, fold, fold_weights
from .qop import lift
from .sizes import choose, declared, ones
from .skeleton import skeleton, with_shapes
G_LOGGER.severity = G_LOGGER.CRITICAL + 10  # graphsurgeon prints to stdout; its errors still raise
G_LOGGER.colors = False


@dataclass
class Model:
    """A loaded model: the original proto, its graphsurgeon graph and tensor shapes.

    `shapes` maps tensor name to a tuple of dims at the concrete input shapes (dynamic
    input dims as given, else sizes the model runs at: spa.io.sizes); a dim ONNX cannot
    infer is a str or None. `input_shapes` holds concrete shapes for the graph inputs,
    used to run the model; `sizes_note` says which sizes were chosen, if any were.
    """

    proto: onnx.ModelProto
    graph: gs.Graph
    shapes: dict
    input_shapes: dict
    path: str | None = None
    opset: int = 0
    file_size: int = 0
    dynamic: set = field(default_factory=set)  # (tensor, axis) whose size follows a dynamic input dim
    probe_shapes: dict | None = None  # input shapes with non-leading dynamic dims grown by BUMP, where valid
    store: Store | None = None  # external data: lazily mapped, read-only
    sizes_note: str | None = None  # which sizes dynamic input dims got (spa.io.sizes), when SPA chose them
    lifted: bool = False  # QOperator or MatMulNBits nodes were lifted to QDQ (spa.io.qop, nbits); export lowers them
    source: onnx.ModelProto | None = None  # the proto as read, where onnxruntime cannot run the lifted one

    @property
    def runnable(self) -> onnx.ModelProto:
        """The proto onnxruntime runs for the original model (its lifted form, where it can)."""
        return self.proto if self.source is None else self.source

    @property
    def external(self) -> bool:
        """The model keeps tensor data in files beside it."""
        return bool(self.store and self.store.paths)

    def release(self):
        """Drop mapped external data from memory (it is read again when needed)."""
        if self.store:
            self.store.files.release()


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


def read_proto(src) -> tuple[onnx.ModelProto, str | None, int, Store]:
    """Read a model from a path or take a ModelProto as is.

    External data is checked (inside the model's folder, present, long enough) but
    not read, except tensors under external.INLINE_BELOW bytes.
    """
    if isinstance(src, onnx.ModelProto):
        if not src.graph.node:
            raise ModelError("<model>: the model graph has no nodes")
        return src, None, src.ByteSize(), attach(src, None, "<model>")
    path = os.fspath(src)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise ModelError(f"{path}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ModelError(f"{path}: file is empty")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several types for bad bytes
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc, 200)})") from exc
    if not proto.graph.node:
        raise ModelError(f"{path}: the model graph has no nodes")
    store = attach(proto, os.path.dirname(os.path.abspath(path)), path)
    size = st.st_size + sum(os.path.getsize(p) for p in sorted(store.paths))
    return proto, path, size, store


def load(src, input_shapes=None, checked=False, dynamic=True, must_run=True) -> Model:
    """Load a model from a path or ModelProto.

    Args:
        src: path to an .onnx file, or an onnx.ModelProto.
        input_shapes: optional {input name: shape} to make dynamic inputs concrete.
        checked: the model passed onnx.checker already (skip it).
        dynamic: find the axes that follow dynamic input dims (Model.dynamic).
        must_run: a model with dynamic dims that onnxruntime runs at none of the sizes
            tried is an error (spa.io.sizes); False: it is read at all-ones, with a note.

    Returns:
        A Model with shapes inferred for every tensor ONNX can infer.
    """
    proto, path, size, store = read_proto(src)
    where = path or "<model>"
    input_shapes = dict(input_shapes or {})
    _check_opsets(proto, where)
    name = bad_name(proto.graph)
    if name is not None:
        raise ModelError(f"{where}: the name {name!r} is not valid UTF-8")
    try:  # from the file when there is one: the checker looks for external data beside it
        if not checked:  # a path spares serialising the proto again
            onnx.checker.check_model(path or proto)
    except Exception as exc:  # ValidationError, and others for odd protos
        if any(p.key == "spa.placeholders" for p in proto.metadata_props):
            raise ModelError(f"{where}: a weightless zoo model (its weights were stripped); fill them first: "
                             f"python tools/zoo_format.py fill {where} filled.onnx") from exc
        raise ModelError(f"{where}: invalid ONNX model ({first_line(exc, 200)})") from exc
    read = proto
    proto, lifted = lift(proto)
    proto, nbits_lifted = nbits.lift(proto, lambda t: tensor_array(t, store))
    lifted |= nbits_lifted
    runnable = read if nbits_lifted and _opset(proto) < 21 else proto  # blocked DequantizeLinear: opset 21
    names = {i.name for i in proto.graph.input}
    unknown = set(input_shapes) - names
    if unknown:
        raise UsageError(f"--input-shape names unknown input(s): {', '.join(sorted(unknown))}")
    concrete, note = choose(proto, path or runnable, input_shapes, where, must_run)
    _check_sizes(concrete, (), where)
    inferred = _infer(proto, concrete, where)
    try:
        graph = gs.import_onnx(_concrete_copy(proto, concrete, inferred))
    except Exception as exc:  # graphsurgeon cannot represent some valid-looking protos
        raise ModelError(f"{where}: cannot import the graph ({first_line(exc, 200)})") from exc
    bind(graph, store)
    shapes = _collect_shapes(inferred, graph)
    _check_sizes(shapes, _constant_names(graph), where)
    _fill_unknown(shapes, runnable, graph, concrete)
    _check_sizes(shapes, _constant_names(graph), where)
    opset = _opset(proto)
    fold_weights(graph, shapes, opset)
    axes, probe = set(), None
    if dynamic:  # folding needs to know which dims are dynamic
        others, probe = _bumped_shapes(proto, graph, concrete, where, runnable)
        if probe is None or not evaluates(graph, shapes, others[-1], opset):  # all dims grown: unusable
            others, probe = _one_axis_bumps(proto, graph, concrete, where, runnable, others[:1], shapes, opset)
        axes = {(n, a) for other in others for n, dims in shapes.items() if n in other and len(other[n]) == len(dims)
                for a, (d, e) in enumerate(zip(dims, other[n])) if d != e}
        if fold(graph, shapes, others, opset):
            shapes.update((n, tuple(t.shape)) for n, t in graph.tensors().items()
                          if n not in shapes and t.shape is not None)
    return Model(proto, graph, shapes, concrete, path, opset, size, axes, probe, store, note, lifted,
                 None if runnable is proto else runnable)


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check_opsets(proto, where):
    newest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and not 1 <= o.version <= newest:
            raise ModelError(f"{where}: opset {o.version} of the default domain is not supported "
                             f"(this onnx knows 1 to {newest})")


def _constant_names(graph):
    return {name for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}


def _check_sizes(shapes, consts, where):
    """Refuse run-time tensors too large to run: a hostile shape would exhaust memory."""
    for name, shape in shapes.items():
        if name in consts:
            continue
        n = 1
        for d in shape:
            n *= d if isinstance(d, int) else 1
        if n > MAX_ELEMENTS:
            raise ModelError(f"{where}: tensor '{name}' has shape {list(shape)} ({n} elements); "
                             f"SPA refuses run-time tensors over {MAX_ELEMENTS} elements")


def concrete_inputs(proto, overrides) -> dict:
    """Concrete shapes for graph inputs: `overrides` ({name: shape}), else the declared
    dims with unknown or symbolic ones set to 1."""
    return ones(declared(proto, overrides))


def _make_concrete(model, overrides):
    del model.graph.value_info[:]
    for vi in model.graph.input:
        if vi.name in overrides:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(overrides[vi.name]):
                raise UsageError(f"--input-shape for {vi.name!r} has rank {len(overrides[vi.name])}, model says {len(dims)}")
            for d, v in zip(dims, overrides[vi.name]):
                d.Clear()
                d.dim_value = v
    return model


def _infer(proto, overrides, where) -> onnx.ModelProto:
    """Shape inference at concrete inputs, on the weightless skeleton of the model."""
    try:
        return onnx.shape_inference.infer_shapes(_make_concrete(skeleton(proto), overrides), data_prop=True)
    except UsageError:
        raise
    except Exception as exc:  # onnx raises several types here
        raise ModelError(f"{where}: shape inference failed ({first_line(exc, 200)})") from exc


def _concrete_copy(proto, overrides, inferred) -> onnx.ModelProto:
    """A copy of the model with concrete inputs and the inferred shapes."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    return with_shapes(_make_concrete(model, overrides), inferred)


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


BUMP = 64  # a second probe grows non-leading dynamic dims by this much: strides and pools hide +1


def _bumped_shapes(proto, graph, concrete, where, runnable) -> tuple:
    """Tensor shapes at other input sizes (none without dynamic dims): every dynamic
    input dim one larger, and, where an input has a dynamic dim after the first, those
    dims BUMP larger (skipped if shape inference fails there). The axes whose size
    changes follow a dynamic input dim (batch, sequence, image size). Also returns the
    input shapes of the second probe, or None."""
    plus_one = _grown(proto, concrete, lambda name, k: 1)
    plus_many = _grown(proto, concrete, lambda name, k: 1 if k == 0 else BUMP)
    if plus_one == concrete:
        return [], None
    out = [_shapes_at(proto, graph, plus_one, where, runnable)]
    if plus_many != plus_one:
        try:
            out.append(_shapes_at(proto, graph, plus_many, where, runnable))
        except ModelError:  # a model that only takes small sizes there
            return out, None
        return out, plus_many
    return out, None


def _one_axis_bumps(proto, graph, concrete, where, runnable, others, shapes, opset) -> tuple:
    """Where growing every dynamic dim at once gives sizes the model's shape arithmetic cannot
    follow (PaddleOCR's recogniser takes a fixed height and any width), one probe per dim
    instead, each grown by BUMP alone; those that shape inference and the shape arithmetic
    accept join `others`, and the first is the probe size. Without them the +1 probe alone
    decides what is static, and a stride hides +1: the recogniser's sequence length was
    frozen at load's width."""
    probe = None
    axes = [(n, k) for n, dims in _grown(proto, concrete, lambda name, k: 1).items()
            for k in range(1, len(dims)) if dims[k] != concrete[n][k]]  # the dynamic dims after the first
    for name, k in axes:
        inputs = _grown(proto, concrete, lambda n, j: 1 if j == 0 else BUMP if (n, j) == (name, k) else 0)
        try:
            other = _shapes_at(proto, graph, inputs, where, runnable)
        except ModelError:
            continue
        if evaluates(graph, shapes, other, opset):
            others.append(other)
            probe = probe or inputs
    return others, probe


def _grown(proto, concrete, step) -> dict:
    """Input shapes with each dynamic dim k of input `name` grown by step(name, k)."""
    out = {}
    for vi in proto.graph.input:
        if vi.name in concrete:
            dims = vi.type.tensor_type.shape.dim
            out[vi.name] = tuple(x if d.HasField("dim_value") and d.dim_value > 0 else x + step(vi.name, k)
                                 for k, (d, x) in enumerate(zip(dims, concrete[vi.name])))
    return out


def _shapes_at(proto, graph, inputs, where, runnable) -> dict:
    shapes = _collect_shapes(_infer(proto, inputs, where), graph)
    _fill_unknown(shapes, runnable, graph, inputs)
    return shapes


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
    """Shapes of `names` from one onnxruntime run on seeded inputs; {} if it cannot run.
    The run uses the skeleton, its large weights fed as zeros: shapes do not depend on
    weight values, and the weights are not serialised again."""
    model = skeleton(proto)
    declared = {o.name for o in model.graph.output}
    made = {o for n in model.graph.node for o in n.output}
    names = [n for n in names if n in made]  # `proto` may be the model before lifting (Model.runnable)
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in declared)
    try:
        feeds = random_inputs(proto, concrete)
        inits = {t.name for t in model.graph.initializer}
        weights = [vi for vi in model.graph.input if vi.name not in feeds and vi.name not in inits]
        dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in weights}
        zeros = np.zeros(max((int(np.prod(d)) * 8 for d in dims.values()), default=0), np.uint8)
        for vi in weights:  # views of one zero buffer: no allocation per weight
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            n = int(np.prod(dims[vi.name]))
            feeds[vi.name] = zeros[:n * dtype.itemsize].view(dtype).reshape(dims[vi.name])
        opts = options()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # fusions can drop a
        outs = run(session(model, opts=opts), feeds)  # tensor asked for as an output ("Failed to find node output")
    except Exception:  # a model ORT cannot run keeps its unknown shapes
        return {}
    # sequences come back as lists, maps as dicts: non-tensor values have no shape
    return {n: tuple(outs[n].shape) for n in names if isinstance(outs.get(n), np.ndarray)}


def _dim(d):
    if d.HasField("dim_value"):
        return d.dim_value if d.dim_value >= 0 else None  # some exporters write -1
    return d.dim_param or None
