"""Multiply-accumulate counts, asked of each op's rule (Rule.macs), and parameter counts."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..io.quant import dq_node
from ..rules import rule_for, volume


def node_macs(node, ctx):
    """(macs, factor spaces) for one node: its MACs scale with kept/size of each factor space."""
    rule = rule_for(node)
    return (0, ()) if rule is None else rule.macs(node, ctx)


def total_macs(nodes, ctx) -> int:
    return sum(node_macs(n, ctx)[0] for n in nodes)


def param_count(graph, ctx) -> int:
    """Elements of every floating-point constant (initializers, Constant nodes, fills) and
    of every quantized weight (a DequantizeLinear of constants)."""
    total = 0
    for t in graph.tensors().values():
        shape = ctx.shape(t)
        if shape is None or not _is_param(t, ctx):
            continue
        total += volume(shape)
    return total


def _is_param(t, ctx):
    if dq_node(t) is not None:  # a quantized weight counts once, as its float value
        return True
    if isinstance(t, gs.Constant):
        return np.dtype(t.dtype).kind == "f" if t.dtype is not None else False
    if len(t.inputs) == 1 and t.inputs[0].op in ("Constant", "ConstantOfShape"):
        v = ctx.const(t)
        return v is not None and v.dtype.kind == "f"
    return False
