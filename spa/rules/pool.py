"""Pooling, Resize/Upsample and Pad: the batch and channel axes pass through
untouched; spatial axes change size and are not channel spaces."""

import numpy as np

from .base import Rule
from .registry import register


@register
class Pool(Rule):
    ops = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
           "MaxRoiPool")

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        if node.op == "MaxRoiPool":
            flow.identity(x, 1, y, 1)
            return
        for out in node.outputs:  # MaxPool's indices output has the same layout
            flow.identity(x, 0, out, 0)
            flow.identity(x, 1, out, 1)


@register
class Resize(Rule):
    """Axes whose scale is 1 (or whose size is unchanged) pass through."""

    ops = ("Resize", "Upsample")

    def _factors(self, node, ctx):
        """(scales, sizes) as lists, each None where absent or not constant."""
        ins = node.inputs
        if node.op == "Upsample" or ctx.opset < 11:
            if "scales" in node.attrs:
                return list(node.attrs["scales"]), None
            return _floats(ctx, ins, 1), None
        return _floats(ctx, ins, 2), (ctx.ints(ins[3]) if len(ins) > 3 else None)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        ctx = flow.ctx
        rank = ctx.rank(x) or 0
        axes = [a % max(rank, 1) for a in node.attrs.get("axes") or range(rank)]
        scales, sizes = self._factors(node, ctx)
        for axis in range(rank):
            if axis not in axes:  # opset 18: unlisted axes keep their size
                flow.identity(x, axis, y, axis)
                continue
            i = axes.index(axis)
            same = (scales is not None and i < len(scales) and scales[i] == 1) or (
                sizes is not None and i < len(sizes) and sizes[i] == ctx.dim(x, axis))
            if same:
                flow.identity(x, axis, y, axis)
            else:
                flow.refuse(x, axis, f"{node.op} scale of axis {axis} is not a constant 1")

    def shrink(self, node, ctx, keep):
        if node.op != "Resize" or len(node.inputs) < 4 or ctx.const(node.inputs[3]) is None:
            return
        y = node.outputs[0]
        sizes = ctx.ints(node.inputs[3])
        axes = node.attrs.get("axes") or list(range(len(sizes)))
        rank = ctx.rank(y)
        new = [len(keep[(y.name, a % rank)]) if (y.name, a % rank) in keep else s for a, s in zip(axes, sizes)]
        if new != sizes:
            ctx.set_input(node, 3, np.asarray(new, dtype=np.int64))


def _floats(ctx, inputs, i):
    v = ctx.const(inputs[i]) if len(inputs) > i else None
    return None if v is None or v.size == 0 else v.reshape(-1).tolist()


@register
class Pad(Rule):
    """Axes with no padding pass through; an axis padded with a constant by known amounts
    passes with an offset (the padded elements are constants of their own, kept as they are)."""

    ops = ("Pad",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        ctx = flow.ctx
        rank = ctx.rank(x) or 0
        pads = node.attrs.get("pads") if ctx.opset < 11 else _entries(ctx, node.inputs[1]) if len(node.inputs) > 1 \
            else None
        axes = ctx.ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else list(range(rank))
        if pads is None or axes is None or len(pads) != 2 * len(axes):
            return
        ends = {a % max(rank, 1): (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)
                if pads[i] != 0 or pads[i + len(axes)] != 0}
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        for axis in range(rank):
            if axis not in ends:
                flow.identity(x, axis, y, axis)
                continue
            begin, end = ends[axis]
            # constant padding appends elements of its own: channel i moves to begin + i
            if mode != "constant" or not all(isinstance(p, int) and p >= 0 for p in (begin, end)) \
                    or not flow.offset(x, axis, y, axis, begin):
                flow.refuse(x, axis, f"Pad pads axis {axis}" + (f" in {mode} mode" if mode != "constant" else
                                                                 " by computed or negative amounts"))


def _entries(ctx, t) -> list | None:
    """The entries of a 1-D integer vector: ints where known before run time, None where
    computed (load's folding leaves partly static pads as a Concat of constants and
    Gathers of the run-time entries); None when even its length is unknown."""
    v = ctx.ints(t)
    if v is not None:
        return v
    node = t.inputs[0] if len(t.inputs) == 1 else None
    if node is not None and node.op == "Concat":
        out = []
        for part in node.inputs:
            got = _entries(ctx, part)
            if got is None:
                return None
            out += got
        return out
    if node is not None and node.op == "Cast":
        return _entries(ctx, node.inputs[0])
    shape = ctx.shape(t)
    return [None] * shape[0] if shape and len(shape) == 1 and isinstance(shape[0], int) else None
