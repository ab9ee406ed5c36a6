"""Apply a plan: slice parameters, let rules fix attributes and shape constants,
drop stale shapes, and export a new ModelProto."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from ..graph import ChannelGraph
from ..io import const_value, infer, with_shapes
from ..io.external import NOT_MAPPED, WRITE_FROM, ExternalValues, constants
from ..io import nbits
from ..io.qop import lower
from ..io.quant import FIXED, dequantize, dq_node, requantize
from .interface import with_sizes


PACKED = ("int4", "uint4")  # two values a byte in ONNX


def keep_map(cg: ChannelGraph, removed: dict) -> dict:
    return {(n, a): np.setdiff1d(np.arange(cg.ctx.dim(cg.ctx.tensors[n], a)), gone) for (n, a), gone in removed.items()}


def apply(cg: ChannelGraph, keep: dict, sink=None) -> onnx.ModelProto:
    """Rewrite the model's graph in place and export it.

    Args:
        cg: the channel graph; its model's graph is edited.
        keep: {(tensor, axis): kept indices}.
        sink: an io.DataFile that large tensors are written to, or None to hold
            every tensor in the returned proto.
    """
    ctx, graph = cg.ctx, cg.model.graph
    changed = {name for name, _ in keep}
    for node, rule, _ in cg.flows:
        if rule is not None and any(t.name in changed for t in list(node.inputs) + list(node.outputs)):
            rule.shrink(node, ctx, keep)
    axes: dict = {}
    dequantized = []  # a quantized weight's integers, scale and zero point are cut instead
    for (name, axis), idx in keep.items():
        t = ctx.tensors[name]
        if dq_node(t) is not None:
            dequantized.append(t)
        elif ctx.const(t) is not None:
            axes.setdefault(name, []).append((axis, idx))
    for name, cuts in axes.items():
        value = ctx.const(ctx.tensors[name])
        for axis, idx in cuts:
            value = np.take(value, idx, axis=axis)
        write_const(ctx, ctx.tensors[name], value, sink)
    for t in dequantized:
        ctx.remember(t, dequantize(dq_node(t)))
    io = {t.name for t in list(graph.inputs) + list(graph.outputs)}
    return export(cg.model, graph, sink, {s: len(idx) for s, idx in keep.items() if s[0] in io})


def write_const(ctx, t, value, sink=None):
    """Store a new value for a parameter wherever it comes from (`sink`: see apply); a
    quantized weight (spa.io.quant) stores it requantized with its own scheme."""
    dq = dq_node(t)
    if dq is not None:
        _write_quantized(ctx, t, dq, value, sink)
        return
    ctx.remember(t, value)
    if isinstance(t, gs.Constant):
        _store(ctx.model, t, value, sink)
        return
    node = t.inputs[0]
    if node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        first = fill.values.reshape(-1)[0] if fill is not None else 0
        flat = np.ravel(value)
        if not flat.size or np.all(flat == flat[0]):  # still one value: still a fill
            node.inputs[0] = ctx.fill_shape(value.shape)
            if flat.size and flat[0] != first:  # a uniform bias fold
                node.attrs["value"] = gs.Constant(f"{t.name}_fill", np.asarray(flat[:1]))
            return
        node.op, node.inputs = "Constant", []
    node.attrs.clear()
    node.attrs["value"] = gs.Constant(f"{t.name}_value", np.ascontiguousarray(value))


def _write_quantized(ctx, t, dq, value, sink):
    """Requantize a new value of weight `t` into its integers. A channel whose values no
    longer fit gets a larger scale, where the scale is the weight's own and the int32
    bias of each layer reading it can follow (its scale is input scale x weight scale,
    which a QLinear fusion relies on); elsewhere the values saturate."""
    biases = _coupled_biases(t, dq)
    q, scale = requantize(dq, value, grow=biases is not None)
    if scale is not None:
        ratio = (scale.astype(np.float64) / const_value(dq.inputs[1])).reshape(-1)
        for b in biases:
            bias_dq, current = dq_node(b), ctx.const(b)
            old = const_value(bias_dq.inputs[1])
            write_const(ctx, bias_dq.inputs[1], (old.reshape(-1) * ratio).astype(old.dtype).reshape(old.shape), sink)
            write_const(ctx, b, current, sink)
        write_const(ctx, dq.inputs[1], scale, sink)
    write_const(ctx, dq.inputs[0], q, sink)
    ctx.remember(t, dequantize(dq))


def _coupled_biases(t, dq):
    """The quantized biases of the layers that read weight `t`, or None when its scale
    may not change (shared with another node, or a bias that cannot follow it)."""
    scale = dq.inputs[1]
    if len(scale.outputs) != 1 or scale.name.endswith(FIXED):
        return None
    n, out = const_value(scale).size, []
    for user in t.outputs:
        if user.op not in ("Conv", "Gemm") or user.inputs[1] is not t or len(user.inputs) < 3:
            continue
        bias_dq = dq_node(user.inputs[2])
        if bias_dq is None:
            continue
        bias_scale = bias_dq.inputs[1]
        if len(bias_scale.outputs) != 1 or (n != 1 and const_value(bias_scale).size != n):
            return None
        out.append(user.inputs[2])
    return out


def _store(model, t, value, sink):
    """A constant's new value; a large one goes straight to the data file being written,
    except 4-bit values (numpy holds them a byte each: _to_data_file packs them) and the
    parts of a lifted MatMulNBits weight (lowering repacks them)."""
    if sink is None or value.nbytes < WRITE_FROM or value.dtype.name in PACKED or nbits.lifted_part(t):
        t.values = value
        t.data_location = None
        return
    old = t._values
    data_type = old.tensor.data_type if isinstance(old, LazyValues) else onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    offset = sink.put_array(value)
    t.values = sink.values(t.name, data_type, value.shape, offset, value.nbytes)
    t.data_location = TensorProto.EXTERNAL
    model.release()


def _to_data_file(graph, sink):
    """Put every large initializer into the data file being written, copying unchanged
    external data in chunks; attribute and subgraph tensors stay in the proto."""
    done = set()
    for node in graph.nodes:
        for c in node.inputs:
            if not isinstance(c, gs.Constant) or id(c) in done:
                continue
            done.add(id(c))
            v = c._values
            if isinstance(v, SparseValues) or (isinstance(v, ExternalValues) and v.path == sink.path):
                continue
            if isinstance(v, ExternalValues):
                data_type, n = v.tensor.data_type, v.nbytes
                offset = sink.put_copy(v.path, v.offset, n)
            elif isinstance(v, LazyValues):  # onnx's reader keeps types numpy lacks (bfloat16)
                data_type = v.tensor.data_type
                if data_type in NOT_MAPPED or v.nbytes < WRITE_FROM:
                    continue
                value = onnx.numpy_helper.to_array(v.tensor)
                n, offset = value.nbytes, sink.put_array(value)
            else:
                if v.dtype.kind in "OSU" or v.nbytes < WRITE_FROM:
                    continue
                data_type = onnx.helper.np_dtype_to_tensor_dtype(v.dtype)
                raw = np.frombuffer(onnx.numpy_helper.from_array(v).raw_data, np.uint8) if v.dtype.name in PACKED else v
                n, offset = raw.nbytes, sink.put_array(raw)  # 4-bit values two a byte, as ONNX stores them
            c.values = sink.values(c.name, data_type, v.shape, offset, n)
            c.data_location = TensorProto.EXTERNAL


def _materialise(graph, keep=None):
    """Read every lazily mapped tensor into memory, except those in the data file `keep`."""
    for c in constants(graph):
        v = c._values
        if isinstance(v, ExternalValues) and v.path != keep:
            c.values = np.array(v.load())
            c.data_location = None


def _pack(graph):
    """Hand 4-bit constants to graphsurgeon as packed protos: it would export them a byte each."""
    for c in constants(graph):
        v = c._values
        if isinstance(v, np.ndarray) and v.dtype.name in PACKED:
            c.values = LazyValues(onnx.numpy_helper.from_array(v, c.name))


def export(model, graph, sink=None, resized=None) -> onnx.ModelProto:
    """Export with intermediate shapes dropped and re-inferred; keep model metadata.

    With a `sink` (io.DataFile), large initializers are written to that data file and the
    returned proto refers to it; otherwise every tensor is held in the proto. `resized`:
    {(graph input or output, axis): new size} where pruning changed the interface.
    """
    io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for name, t in graph.tensors().items():
        if isinstance(t, gs.Variable) and name not in io:
            t.shape = None
    _untype_non_tensors(graph)
    graph.cleanup().toposort()
    if model.lifted:  # before the data file is written: lowering makes new constants (packed MatMulNBits weights)
        lower(graph)
        nbits.lower(graph)
    if sink is not None:
        _to_data_file(graph, sink)
    _materialise(graph, sink.path if sink is not None else None)
    _pack(graph)
    out = gs.export_onnx(graph, do_type_check=False)
    del out.graph.value_info[:]
    src = model.proto
    inits = {t.name for t in src.graph.initializer}
    declared = {vi.name: with_sizes(vi, resized or {}) for vi in list(src.graph.input) + list(src.graph.output)
                if vi.name not in inits}
    for vi in list(out.graph.input) + list(out.graph.output):
        if vi.name in declared:  # keep dynamic dims as the original declares them
            vi.CopyFrom(declared[vi.name])
    out.ir_version = src.ir_version
    if src.ir_version < 4:  # IR 3 wants every initializer listed as a graph input
        listed = {i.name for i in out.graph.input}
        for init in out.graph.initializer:
            if init.name not in listed:
                out.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    del out.opset_import[:]
    out.opset_import.extend(src.opset_import)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(src, field))
    del out.metadata_props[:]
    out.metadata_props.extend(src.metadata_props)
    # annotate only what the original annotated: extra shapes change which fusions onnxruntime applies
    out = with_shapes(out, infer(out), {vi.name for vi in src.graph.value_info})
    for vi in list(out.graph.input) + list(out.graph.output):
        if vi.name in declared:  # inference may have made declared dims more specific
            vi.CopyFrom(declared[vi.name])
    _retype_non_tensors(out.graph, dict(_non_tensor_types(src.graph)))
    return out


def _graphs(graph):
    """A graphsurgeon graph and every subgraph in its node attributes."""
    yield graph
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _graphs(value)


def _untype_non_tensors(graph):
    """Drop the types of sequence, optional, map and sparse values: graphsurgeon cannot
    export most of them (_retype_non_tensors puts the original types back). A copied
    graph's tensors lose `type`; an optional or map keeps a TypeProto as its dtype."""
    for g in _graphs(graph):
        for t in g.tensors().values():
            if isinstance(t, gs.Variable) and (t.type != "tensor_type" or isinstance(t.dtype, onnx.TypeProto)):
                t.dtype, t.shape = None, None


def _proto_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            subs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            for sub in subs:
                yield from _proto_graphs(sub)


def _non_tensor_types(graph: onnx.GraphProto):
    """(name, TypeProto) of every value of a graph and its subgraphs whose type is not a tensor."""
    for g in _proto_graphs(graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.WhichOneof("value") not in (None, "tensor_type"):
                yield vi.name, vi.type


def _retype_non_tensors(graph: onnx.GraphProto, types: dict):
    """Give the inputs and outputs of a graph and its subgraphs that were not tensors
    their original type (a copied graph exports a sequence as a tensor)."""
    for g in _proto_graphs(graph):
        for vi in list(g.input) + list(g.output):
            if vi.name in types:
                vi.type.CopyFrom(types[vi.name])
