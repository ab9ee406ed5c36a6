"""Reading weights as their consumers see them: behind Identity nodes and run-time Transposes."""

from __future__ import annotations

import numpy as np


def read(ctx, t):
    """A constant, also behind Identity nodes (the TorchScript exporter shares equal
    initializers through them); None otherwise."""
    while ctx.const(t) is None and len(t.inputs) == 1 and t.inputs[0].op == "Identity":
        t = t.inputs[0].inputs[0]
    return ctx.const(t)


def weight(ctx, t):
    """A constant, or a Transpose of one (exports without constant folding transpose
    Linear weights at run time); None otherwise."""
    w = read(ctx, t)
    if w is None and t.inputs and t.inputs[0].op == "Transpose":
        src = read(ctx, t.inputs[0].inputs[0])
        if src is not None:
            w = np.transpose(src, list(t.inputs[0].attrs.get("perm", range(src.ndim)[::-1])))
    return w


def consumer_of(ctx, t, axis):
    """(consumer node, weight as the consumer reads it, channel axis in it) for a weight
    read as input 1 of its consumer directly or through a Transpose (exports without
    constant folding transpose Linear weights at run time); (None, None, axis) else."""
    node, w = t.outputs[0], ctx.const(t)
    if w is None:
        return None, None, axis
    w = w.astype(np.float64)
    if node.op == "Transpose" and len(node.outputs[0].outputs) == 1:
        perm = list(node.attrs.get("perm", range(w.ndim)[::-1]))
        w, axis, src = np.transpose(w, perm), perm.index(axis % w.ndim), node.outputs[0]
        node = src.outputs[0]
    else:
        src = t
    if len(node.inputs) < 2 or node.inputs[1] is not src:
        return None, None, axis
    return node, w, axis
