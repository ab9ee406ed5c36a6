"""Quantized test models: onnxruntime's static and dynamic quantizers over a float
model, with seeded random calibration inputs; the float-equivalent (dequantized) graph
of a QDQ model; and the float weights of a model, to check that a prune added none.
"""

from __future__ import annotations

import os
import tempfile

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from spa.io import const_value, nbits
from spa.io.quant import dequantize, dq_node, limits
from spa.verify import masked

from .oracle import feeds


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over seeded inputs."""

    def __init__(self, model, batches, batch):
        self.data = [feeds(model, batch=batch, seed=100 + s) for s in range(batches)]

    def get_next(self):
        return self.data.pop() if self.data else None

    def rewind(self):  # some onnxruntime versions call it between passes
        pass


def quantize(model: onnx.ModelProto, fmt="qdq", per_channel=True, batches=4, batch=1, weight="int8",
             activation="int8", **options) -> onnx.ModelProto:
    """The model quantized by onnxruntime: fmt "qdq" or "qop" (QOperator: QLinearConv...)
    with static calibration on `batches` seeded random batches, or "dynamic"
    (quantize_dynamic: MatMulInteger / ConvInteger with DynamicQuantizeLinear)."""
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "quant.onnx")
        onnx.save(model, src)
        if fmt == "dynamic":
            quantize_dynamic(src, dst, per_channel=per_channel, weight_type=types[weight], **options)
        else:
            quantize_static(src, dst, _Reader(model, batches, batch),
                            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                            per_channel=per_channel, weight_type=types[weight], activation_type=types[activation],
                            **options)
        return onnx.load(dst)


def matmul_mlp(dims=(64, 256, 256, 32), bias=True, seed=0):
    """x -> [MatMul -> Add -> Relu] x 2 -> MatMul -> Add: the float model to quantize."""
    rng = np.random.default_rng(seed)
    nodes, inits, h = [], [], "x"
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"], name=f"fc{i}"))
        h = f"m{i}"
        if bias:
            inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(b)).astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Add", [h, f"b{i}"], [f"a{i}"], name=f"add{i}"))
            h = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [h], [f"r{i}"], name=f"relu{i}"))
            h = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["N", dims[-1]])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def quantize_nbits(model: onnx.ModelProto, bits=4, block_size=32, symmetric=False, **options) -> onnx.ModelProto:
    """The model's MatMul weights quantized by onnxruntime's MatMulNBitsQuantizer
    (MatMulNBits, com.microsoft; the input model is left as it is)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    q = MatMulNBitsQuantizer(copy, bits=bits, block_size=block_size, is_symmetric=symmetric, **options)
    q.process()
    return q.model.model


def with_g_idx(model: onnx.ModelProto, shuffled=False, seed=0) -> onnx.ModelProto:
    """A copy whose MatMulNBits nodes read a g_idx: the trivial one (i // block_size), or
    that one shuffled (act-order)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for node in (n for n in out.graph.node if n.op_type == "MatMulNBits"):
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        g = np.arange(a["K"], dtype=np.int32) // a["block_size"]
        out.graph.initializer.append(numpy_helper.from_array(rng.permutation(g) if shuffled else g, f"{node.name}_g_idx"))
        ins = list(node.input[:4]) + [""] * (4 - len(node.input[:4])) + [f"{node.name}_g_idx"] + list(node.input[5:])
        del node.input[:]
        node.input.extend(ins)
    return out


def with_float_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose MatMulNBits zero points are floats of the scales' type (the same values)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for node in (n for n in out.graph.node if n.op_type == "MatMulNBits" and len(n.input) > 3 and n.input[3]):
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        blocks = -(-a["K"] // a["block_size"])
        z = nbits.unpack(numpy_helper.to_array(inits[node.input[3]]).reshape(a["N"], -1), a["bits"], blocks)
        scale = numpy_helper.to_array(inits[node.input[2]])
        inits[node.input[3]].CopyFrom(numpy_helper.from_array(z.astype(scale.dtype).reshape(scale.shape), node.input[3]))
    return out


def dequantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float-equivalent graph of a QDQ model: every DequantizeLinear of constants
    becomes a float initializer under its output's name, and every QuantizeLinear ->
    DequantizeLinear pair on an activation is dropped (its consumers read the float);
    MatMulNBits becomes MatMul by its dequantized weight."""
    graph = gs.import_onnx(nbits.lift(model)[0])
    outputs = {t.name for t in graph.outputs}
    for node in list(graph.nodes):
        y = node.outputs[0] if node.outputs else None
        if node.op == "DequantizeLinear" and dq_node(y) is not None:
            value = dequantize(node)
            const = gs.Constant(y.name, np.ascontiguousarray(value))
            _rewire(y, const)
            node.outputs.clear()
        elif node.op == "QuantizeLinear" and all(u.op == "DequantizeLinear" for u in y.outputs):
            clipped = _saturation(graph, node)
            for dq in list(y.outputs):
                if dq.outputs[0].name not in outputs:
                    _rewire(dq.outputs[0], clipped)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = model.ir_version
    return out


def _saturation(graph, q):
    """A Clip of the QuantizeLinear's input to the range its integers can hold: the
    quantizer drops a Relu or Clip that the saturation does anyway."""
    scale, zp = const_value(q.inputs[1]), const_value(q.inputs[2]) if len(q.inputs) > 2 else None
    if scale is None or scale.size != 1:
        return q.inputs[0]
    dtype = zp.dtype if zp is not None else np.uint8
    lo, hi = limits(dtype)
    z = 0 if zp is None else int(zp.reshape(-1)[0])
    s = float(scale.reshape(-1)[0])
    bounds = [gs.Constant(f"{q.name}_lo", np.array((lo - z) * s, np.float32)),
              gs.Constant(f"{q.name}_hi", np.array((hi - z) * s, np.float32))]
    out = gs.Variable(f"{q.name}_float", np.float32)
    graph.nodes.append(gs.Node("Clip", f"{q.name}_clip", inputs=[q.inputs[0], *bounds], outputs=[out]))
    return out


def _rewire(old, new):
    """Make every consumer of tensor `old` read `new` instead."""
    for user in list(old.outputs):
        for i, t in enumerate(user.inputs):
            if t is old:
                user.inputs[i] = new


def float_weights(model: onnx.ModelProto, least=16) -> dict:
    """{name: element count} of the float initializers and Constant nodes with at least
    `least` elements, (de)quantization scales left out: the weights a model keeps in float."""
    scales = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    scales |= {n.input[2] for n in model.graph.node if n.op_type == "MatMulNBits"}
    out = {}
    for t in model.graph.initializer:
        if t.name in scales:
            continue
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            n = int(np.prod(t.dims))
            if n >= least:
                out[t.name] = n
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            v = numpy_helper.to_array(node.attribute[0].t)
            if v.dtype.kind == "f" and v.size >= least:
                out[node.output[0]] = v.size
    return out


def quantized(w, axis=0, dtype=np.int8, zero=False, block=0):
    """(integers, scale, zero point or None) of float weights `w`: per channel along
    `axis` (axis None: per tensor; `block`: per block of that many along `axis`),
    symmetric, or asymmetric with a zero point (`zero`)."""
    dt = {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4}.get(dtype, dtype)
    lo, hi = limits(dt)
    if axis is None:
        span = np.abs(w).max(keepdims=True).reshape(())
        lo_v, hi_v = w.min(), w.max()
    else:
        moved = np.moveaxis(w, axis, 0)
        if block:
            moved = moved.reshape(moved.shape[0] // block, block, *moved.shape[1:])
        lo_v, hi_v = moved.min(axis=1 if block else tuple(range(1, moved.ndim))), \
            moved.max(axis=1 if block else tuple(range(1, moved.ndim)))
        span = np.maximum(np.abs(lo_v), np.abs(hi_v))
        if block:
            span, lo_v, hi_v = (np.moveaxis(v, 0, axis) for v in (span, lo_v, hi_v))
    if zero:
        scale = ((hi_v - lo_v) / (hi - lo)).astype(np.float32)
        zp = np.clip(np.rint(lo - lo_v / scale), lo, hi)
    else:
        scale = (span / min(hi, -lo if lo < 0 else hi)).astype(np.float32)
        zp = None
    full = np.repeat(scale, block, axis=axis) if block else (scale if axis is None else np.expand_dims(
        scale, tuple(a for a in range(w.ndim) if a != axis)))
    zfull = 0 if zp is None else (np.repeat(zp, block, axis=axis) if block else (zp if axis is None else np.expand_dims(
        zp, tuple(a for a in range(w.ndim) if a != axis))))
    q = np.clip(np.rint(w / full) + zfull, lo, hi).astype(np.int64).astype(dt)
    return q, scale, None if zp is None else zp.astype(np.int64).astype(dt)


def qweight(g, name, w, axis=0, dtype=np.int8, zero=False, block=0):
    """Store `w` quantized in graph builder `g` (spa.testing.graphs.Graph) and return the
    output of its DequantizeLinear: `name`_q, `name`_scale, `name`_zp, node `name`_dq."""
    q, scale, zp = quantized(w, axis, dtype, zero, block)
    ins = [g.init(f"{name}_q", q), g.init(f"{name}_scale", scale)]
    if zp is not None:
        ins.append(g.init(f"{name}_zp", zp))
    attrs = {} if axis is None else {"axis": axis}
    if block:
        attrs["block_size"] = block
    return g.op("DequantizeLinear", ins, name=f"{name}_dq", **attrs)


def float_same_way(float_model: onnx.ModelProto, quantized: onnx.ModelProto, result, input_shapes=None) -> onnx.ModelProto:
    """The float model that MatMulNBitsQuantizer read, masked like `result` (a prune of
    `quantized`): the lifted integers and weight of each MatMulNBits map to the weight of
    the float MatMul with the same output; its scales and zero points have no float twin."""
    lifted = nbits.lift(quantized)[0]
    weights = {n.output[0]: n.input[1] for n in float_model.graph.node if n.op_type == "MatMul"}
    names, skip = {}, set()
    for dq in (n for n in lifted.graph.node if n.name.endswith(nbits.DQ)):
        mm = next(n for n in lifted.graph.node if n.op_type == "MatMul" and n.input[1] == dq.output[0])
        names[dq.input[0]] = names[dq.output[0]] = weights[mm.output[0]]
        skip.update(dq.input[1:])
    sinks = [(names.get(n, n), axis, idx) for n, axis, idx in result.sinks if n not in skip]
    updates = [(kind, names.get(t, t), v) for kind, t, v in result.updates]
    return masked(float_model, sinks, updates, input_shapes)
