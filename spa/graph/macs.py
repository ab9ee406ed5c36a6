"""Multiply-accumulate counts of the ops that carry them, and which channel spaces
scale them. Symbolic dims count as 1 (batch 1)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def _vol(shape):
    if shape is None:
        return None
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64))


def node_macs(node, ctx):
    """(macs, factor spaces) for one node: its MACs scale with kept/size of each factor space."""
    op = node.op
    if op in ("Conv", "ConvTranspose"):
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ws, g = ctx.shape(w), int(node.attrs.get("group", 1))
        out, inp = _vol(ctx.shape(y)), _vol(ctx.shape(x))
        if ws is None or out is None or inp is None:
            return 0, []
        if op == "Conv":
            macs = out * _vol(ws[1:])
            factors = [(x.name, 1), (y.name, 1)] if g == 1 else [(y.name, 1)]
        else:
            macs = inp * _vol(ws[1:])
            factors = [(x.name, 1), (y.name, 1)] if g == 1 else [(x.name, 1)]
        return macs, factors
    if op in ("Gemm", "MatMul"):
        a, y = node.inputs[0], node.outputs[0]
        sa, sy = ctx.shape(a), ctx.shape(y)
        if sa is None or sy is None or not sa:
            return 0, []
        if op == "Gemm":
            k_axis = 0 if node.attrs.get("transA", 0) else 1
            return _vol(sy) * _d(sa[k_axis]), [(a.name, k_axis), (y.name, 1)]
        if len(sa) < 2 or len(sy) < 2:
            return 0, []
        return _vol(sy) * _d(sa[-1]), [(a.name, len(sa) - 1), (y.name, len(sy) - 1)]
    return 0, []


def _d(v):
    return v if isinstance(v, int) else 1


def total_macs(nodes, ctx) -> int:
    return sum(node_macs(n, ctx)[0] for n in nodes)


def param_count(graph, ctx) -> int:
    """Elements of every floating-point constant: initializers, Constant nodes, fills."""
    total = 0
    for t in graph.tensors().values():
        shape = ctx.shape(t)
        if shape is None or not _is_param(t, ctx):
            continue
        total += _vol(shape)
    return total


def _is_param(t, ctx):
    if isinstance(t, gs.Constant):
        return np.dtype(t.dtype).kind == "f" if t.dtype is not None else False
    if len(t.inputs) == 1 and t.inputs[0].op in ("Constant", "ConstantOfShape"):
        v = ctx.const(t)
        return v is not None and v.dtype.kind == "f"
    return False
