"""Quantized constants: a DequantizeLinear whose inputs are all constant is a weight.

Its float value is (x - zero_point) * scale, per tensor, per channel (`axis`) or per
block (`block_size`, opset 21). Rules and scores read that value (rules.base.Ctx.const);
a write quantizes the new value back into the integers with the same scale and zero
point (requantize), so a pruned or compensated model stays quantized.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import ModelError
from .constants import const_value

DQ_OPS = ("DequantizeLinear",)
FIXED = "__spa_fixed"  # ends the name of a scale that must stay as it is (spa.io.qop: integer ops)
DQ_DOMAINS = ("", "ai.onnx", "com.microsoft")


def dq_node(t):
    """The DequantizeLinear that makes `t` from constants, or None."""
    if t is None or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op not in DQ_OPS or (node.domain or "") not in DQ_DOMAINS:
        return None
    ins = [i for i in node.inputs if i.name]
    if not ins or any(const_value(i) is None for i in ins) or not integral(const_value(ins[0]).dtype):
        return None
    return node


def integral(dtype) -> bool:
    """An integer type, int4 and uint4 included (float8 inputs are not handled)."""
    return np.dtype(dtype).kind in "iu" or np.dtype(dtype).name in ("int4", "uint4")


def parts(node):
    """(integers, scale, zero point or None) of a constant DequantizeLinear."""
    ins = node.inputs
    zp = const_value(ins[2]) if len(ins) > 2 and ins[2].name else None
    return const_value(ins[0]), const_value(ins[1]), zp


def expand(node, v, shape):
    """A scale or zero point broadcast against integers of `shape` (per tensor, per axis
    along `axis`, or repeated over blocks of `block_size`)."""
    v = np.asarray(v)
    if v.size == 1 and v.ndim <= 1:
        return v.reshape(())
    axis = int(node.attrs.get("axis", 1))
    block = int(node.attrs.get("block_size", 0))
    if not -len(shape) <= axis < len(shape) or not (
            block > 0 and v.ndim == len(shape) or v.ndim == 1 and v.size == shape[axis]):
        raise ModelError(f"DequantizeLinear {node.name!r}: its scale or zero point {list(v.shape)} does not fit "
                         f"integers of shape {list(shape)} (axis {axis}, block_size {block})")
    axis %= len(shape)
    if block:
        out = np.repeat(v, block, axis=axis)
        if any(a < d for a, d in zip(out.shape, shape)):
            raise ModelError(f"DequantizeLinear {node.name!r}: its {list(v.shape)} blocks of {block} do not "
                             f"cover integers of shape {list(shape)}")
        return out[tuple(slice(0, d) for d in shape)]
    view = [1] * len(shape)
    view[axis] = -1
    return v.reshape(view)


def dequantize(node, q=None, scale=None, zp=None) -> np.ndarray:
    """The float value of a constant DequantizeLinear (or of the given parts), computed
    in the scale's type as onnxruntime does."""
    q0, s0, z0 = parts(node)
    q, scale, zp = (q0 if q is None else q), (s0 if scale is None else scale), (z0 if zp is None else zp)
    q = np.asarray(q)
    ints = q.astype(np.int64)
    z = 0 if zp is None else expand(node, np.asarray(zp).astype(np.int64), q.shape)
    s = expand(node, scale, q.shape)
    return ((ints - z).astype(s.dtype) * s).astype(s.dtype)


def limits(dtype) -> tuple:
    """(lowest, highest) integer of a quantized type (int4/uint4 included)."""
    name = np.dtype(dtype).name
    if name in ("int4", "uint4"):
        return (-8, 7) if name == "int4" else (0, 15)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def requantize(node, value, grow=False) -> tuple:
    """(integers, scale or None): the integers that dequantize nearest to `value` with the
    node's zero point and scale (round half to even, saturated). With `grow`, a channel
    (or the tensor, or a block) whose values would saturate gets the smallest larger
    scale that holds them, returned as the new scale; otherwise the scheme is kept."""
    q0, s0, z0 = parts(node)
    q0, s0 = np.asarray(q0), np.asarray(s0)
    value = np.asarray(value, np.float64)
    s = expand(node, s0, q0.shape).astype(np.float64)
    z = 0 if z0 is None else expand(node, np.asarray(z0).astype(np.int64), q0.shape)
    lo, hi = limits(q0.dtype)
    new = None
    if grow:  # in magnitudes: a negative scale (MatMulNBits' symmetric blocks) flips the integers' sign
        sign = np.where(s < 0, -1.0, 1.0)
        room = np.where(value * sign > 0, hi - z, lo - z).astype(np.float64)  # integer steps each way
        need = np.where(room != 0, value * sign / np.where(room != 0, room, 1), np.where(value != 0, np.inf, 0))
        need = np.maximum(np.broadcast_to(need, q0.shape), 0)
        per = _reduce_to(node, need, s0, q0.shape)
        per = np.where(np.isfinite(per), per, 0)  # a zero point at the end of the range: saturate
        if np.any(per > np.abs(s0)):
            new = (np.where(s0 < 0, -1, 1) * np.maximum(np.abs(s0), per)).astype(s0.dtype)
            s = expand(node, new, q0.shape).astype(np.float64)
    q = np.clip(np.rint(value / s) + z, lo, hi)
    return q.astype(np.int64).astype(q0.dtype), new


def _reduce_to(node, need, s0, shape):
    """The largest `need` over the elements each entry of scale s0 covers."""
    if s0.size == 1 and s0.ndim <= 1:
        return np.asarray(need.max(), np.float64).reshape(s0.shape)
    axis = int(node.attrs.get("axis", 1)) % len(shape)
    block = int(node.attrs.get("block_size", 0))
    if block and s0.ndim == len(shape):
        pad = [(0, 0)] * len(shape)
        pad[axis] = (0, s0.shape[axis] * block - shape[axis])
        padded = np.pad(need, pad)
        split = padded.reshape(shape[:axis] + (s0.shape[axis], block) + shape[axis + 1:])
        return split.max(axis=axis + 1)
    others = tuple(a for a in range(len(shape)) if a != axis)
    return need.max(axis=others).reshape(s0.shape)


def past_fake_quant(t):
    """The tensor after a QuantizeLinear -> DequantizeLinear pair that alone reads `t`
    (the float value again, rounded), else `t` itself."""
    if len(t.outputs) == 1 and t.outputs[0].op == "QuantizeLinear":
        q = t.outputs[0].outputs[0]
        if len(q.outputs) == 1 and q.outputs[0].op == "DequantizeLinear" and q.outputs[0].inputs[0] is q:
            return q.outputs[0].outputs[0]
    return t


def quantized_bias(graph, node, value, kept=None):
    """A new bias for a Conv or Gemm whose weight and input are quantized: int32 with
    scale input scale x weight scale (the scheme a QLinear fusion expects), read through
    a DequantizeLinear added to `graph`; None where the scales are not constants.
    `kept`: the output channels the weight keeps, when `value` is already cut to them."""
    w, x = dq_node(node.inputs[1]), node.inputs[0]
    xq = x.inputs[0] if len(x.inputs) == 1 and x.inputs[0].op == "DequantizeLinear" else None
    xs = const_value(xq.inputs[1]) if xq is not None else None
    if w is None or xs is None or xs.size != 1 or w.inputs[1].name.endswith(FIXED):
        return None
    ws = np.asarray(parts(w)[1]).reshape(-1)
    if ws.size != 1:
        ws = ws if kept is None else ws[kept]
    if ws.size not in (1, value.size):
        return None
    scale = np.broadcast_to(ws * xs.reshape(-1)[0], value.shape).astype(np.float32)
    q = np.clip(np.rint(value / scale), *limits(np.int32)).astype(np.int32)
    name = f"{node.name or node.outputs[0].name}_spa_bias"
    ins = [gs.Constant(f"{name}_quantized", q), gs.Constant(f"{name}_scale", scale),
           gs.Constant(f"{name}_zero_point", np.zeros(value.shape, np.int32))]
    out = gs.Variable(name, np.float32, value.shape)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", {"axis": 0}, ins, [out]))
    return out
