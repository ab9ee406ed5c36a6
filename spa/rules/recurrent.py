"""LSTM, GRU and RNN: the hidden size is one channel group, the input size another.

Hidden unit j owns row j of every gate block of W [D, G*H, I] and R [D, G*H, H], entry j
of every block of B [D, 2*G*H] and of the peepholes P [D, 3*H], column j of R (what
h_j feeds back), entry j of the initial states and of the outputs Y, Y_h, Y_c; for
both directions at once (the direction axis D is never pruned). Zeroing column j of R
and what reads unit j downstream leaves every other unit as it was, so the masked
oracle holds. Input channel i is column i of W.

Layouts: layout 0 has X [S, B, I], Y [S, D, B, H], states [D, B, H]; layout 1 has
X [B, S, I], Y [B, S, D, H], states [B, D, H]. The hidden axis is the last either way.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Rule, volume
from .registry import register

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
FILL_VIEWS = ("Slice", "Squeeze", "Unsqueeze", "Identity", "Reshape", "Expand", "Cast")  # keep a zero fill zero


def zero_state(ctx, t) -> bool:
    """True when an initial state is all zeros whatever its shape: a constant of zeros, or a
    zero ConstantOfShape (the TorchScript exporter's [layers, batch, hidden] fill, sized from
    the batch at run time and sliced per layer) seen through views. Such a state is what the
    op assumes when the input is absent, so the rule leaves it out of the hidden group and
    drops it when the hidden size shrinks (one fill shared by every layer would otherwise tie
    their hidden units together)."""
    for _ in range(16):
        value = ctx.const(t)
        if value is not None:
            return not np.any(value)
        node = t.inputs[0] if len(t.inputs) == 1 else None
        if node is None:
            return False
        if node.op == "ConstantOfShape":
            fill = node.attrs.get("value")
            return fill is None or not np.any(fill.values if hasattr(fill, "values") else fill)
        if node.op not in FILL_VIEWS or not node.inputs:
            return False
        t = node.inputs[0]
    return False


def _io(node):
    """(x, w, r, b, initial states, peepholes, outputs Y, Y_h[, Y_c]) with absent ones None."""
    ins = [t if t is not None and t.name else None for t in list(node.inputs) + [None] * (8 - len(node.inputs))]
    outs = [t if t.name else None for t in node.outputs]
    states = [ins[5]] + ([ins[6]] if node.op == "LSTM" else [])
    peep = ins[7] if node.op == "LSTM" else None
    return ins[0], ins[1], ins[2], ins[3], states, peep, outs


def direction_axis(ctx, t, axis) -> bool:
    """True when axis `axis` of `t` is the direction axis of a recurrent op's output,
    followed back through Transpose and Identity: a Reshape that merges it with the
    hidden axis ([.., D, H] -> [.., D*H], how exporters join both directions) then maps
    the hidden axis instead (spa.rules.reshape)."""
    for _ in range(16):
        node = t.inputs[0] if len(t.inputs) == 1 else None
        if node is None:
            return False
        if node.op == "Identity":
            t = node.inputs[0]
        elif node.op == "Transpose" and "perm" in node.attrs:
            axis, t = list(node.attrs["perm"])[axis], node.inputs[0]
        elif node.op in GATES:
            k = next(i for i, o in enumerate(node.outputs) if o is t)
            layout = int(node.attrs.get("layout", 0))
            return axis == ((1 if layout == 0 else 2) if k == 0 else (0 if layout == 0 else 1))
        else:
            return False
    return False


@register
class Recurrent(Rule):
    ops = ("LSTM", "GRU", "RNN")

    def couple(self, node, flow):
        ctx = flow.ctx
        x, w, r, b, states, peep, outs = _io(node)
        y, finals = (outs + [None])[0], outs[1:]
        layout = int(node.attrs.get("layout", 0))
        gates = GATES[node.op]
        hidden = ctx.dim(r, 2)
        if ctx.const(w) is None or ctx.const(r) is None or not isinstance(hidden, int):
            for t, axis in [(x, 2), (w, 1), (w, 2), (r, 1), (r, 2)]:
                flow.refuse(t, axis, f"{node.op} '{node.name}' has weights computed at run time")
            return
        unit = np.arange(hidden)
        flow.pairs(r, 2, w, 1, np.tile(unit, gates), np.arange(gates * hidden))
        flow.identity(w, 1, r, 1)
        flow.param(w, 1, "out")
        flow.param(r, 1, "out")
        flow.param(r, 2, "in")
        flow.identity(x, 2, w, 2)
        flow.param(w, 2, "in")
        for t, blocks, role in [(b, 2 * gates, "out"), (peep, 3, "elem")]:
            if t is not None and flow.pairs(r, 2, t, 1, np.tile(unit, blocks), np.arange(blocks * hidden)):
                flow.param(t, 1, role)
        states = [t for t in states if t is not None and not zero_state(ctx, t)]
        for t in states + finals:
            if t is not None:
                flow.identity(r, 2, t, 2)
                flow.param(t, 2, "elem")
        if y is not None:
            flow.identity(r, 2, y, 3)
        seq, batch = (0, 1) if layout == 0 else (1, 0)
        y_batch, state_batch, direction = (2, 1, 0) if layout == 0 else (0, 0, 1)
        if y is not None:
            flow.identity(x, seq, y, seq)
            flow.identity(x, batch, y, y_batch)
        for t in states + finals:
            if t is not None:
                flow.identity(x, batch, t, state_batch)
        why = f"{node.op} '{node.name}' keeps both directions"
        for t, axis in [(w, 0), (r, 0), (b, 0), (peep, 0), (y, 1 if layout == 0 else 2)] + \
                [(t, direction) for t in states + finals]:
            if t is not None:
                flow.refuse(t, axis, why)

    def shrink(self, node, ctx, keep):
        r = node.inputs[2]
        kept = keep.get((r.name, 2))
        if kept is not None:
            node.attrs["hidden_size"] = len(kept)
            for i in (5, 6):  # zero initial states (left out of the group) become absent: zeros of the new size
                if i < len(node.inputs) and node.inputs[i].name and (node.inputs[i].name, 2) not in keep \
                        and zero_state(ctx, node.inputs[i]):
                    node.inputs[i] = gs.Variable.empty()

    def macs(self, node, ctx):
        """S x B x D x G x H x (I + H): the input and recurrent projections of every step.
        Predicted after pruning as scaling with the kept hidden and input channels (exact
        for the input projection; the recurrent one shrinks faster, with hidden squared)."""
        x, w, r, *_ = _io(node)
        xs, ws = ctx.shape(x), ctx.shape(w)
        hidden = ctx.dim(r, 2)
        if xs is None or ws is None or len(xs) != 3 or not isinstance(hidden, int):
            return 0, ()
        steps = volume(xs[:2])
        total = steps * volume(ws[:2]) * (volume(ws[2:]) + hidden)
        return total, ((r.name, 2), (w.name, 2))
