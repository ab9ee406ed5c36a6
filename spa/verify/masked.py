"""The masked-equivalence oracle: the original model with what the removed channels
contribute zeroed, and the prune's compensation replayed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..edit import apply_shift, export, write_const
from ..io import load
from ..rules import Ctx


def masked(original: onnx.ModelProto, sinks, updates=(), input_shapes=None) -> onnx.ModelProto:
    """The original model with every removed channel's consumer slices zeroed.

    Args:
        original: the unpruned model.
        sinks: (tensor name, axis, indices) of the parameter slices that read removed channels.
        updates: the compensation a prune applied (PruneResult.updates, compensate.Update).
        input_shapes: {input: shape} for a model whose dynamic dims SPA cannot choose
            (as given to the prune).

    Returns:
        A model whose outputs should equal the pruned model's.
    """
    model = load(original, input_shapes)
    ctx = Ctx(model)
    values = {}
    for kind, name, delta in updates:
        if kind == "weight":
            value = values.setdefault(name, np.array(ctx.const(ctx.tensors[name])))
            value[...] = value.astype(np.float64) + delta
    # after the updates: the pruned model drops these slices whatever an update added to them
    for name, axis, idx in sinks:  # one tensor may be cut by several groups (heads and head_dim)
        if ctx.const(ctx.tensors[name]) is None:  # a weight computed in the graph
            _mask_computed(model.graph, ctx, ctx.tensors[name], axis, idx)
            continue
        value = values.setdefault(name, np.array(ctx.const(ctx.tensors[name])))
        index = [slice(None)] * value.ndim
        index[axis] = np.asarray(idx)
        value[tuple(index)] = 0
    for name, value in values.items():
        write_const(ctx, ctx.tensors[name], value)
    nodes = {n.outputs[0].name: n for n in model.graph.nodes if n.outputs}
    for kind, name, value in updates:
        if kind != "weight":
            apply_shift(ctx, nodes[name], np.asarray(value))
    return export(model, model.graph)


def _mask_computed(graph, ctx, t, axis, idx):
    """Zero slices of a weight computed in the graph: its consumers read t * mask."""
    shape = [1] * ctx.rank(t)
    shape[axis] = ctx.dim(t, axis)
    mask = np.ones(shape, dtype=t.dtype or np.float32)
    np.moveaxis(mask, axis, 0)[np.asarray(idx)] = 0
    out = gs.Variable(f"{t.name}__masked", dtype=t.dtype)
    users = list(t.outputs)
    graph.nodes.append(gs.Node("Mul", name=f"{t.name}__mask", inputs=[t, gs.Constant(f"{t.name}__mask_value", mask)],
                               outputs=[out]))
    for node in users:
        for k, i in enumerate(node.inputs):
            if i is t:
                node.inputs[k] = out
