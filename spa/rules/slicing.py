"""Concat, Split and Slice: channels keep their identity at an offset."""

import numpy as np

from .base import Rule
from .registry import register


def _others(flow, x, y, axis):
    for a in range(flow.ctx.rank(x) or 0):
        if a != axis:
            flow.identity(x, a, y, a)


@register
class Concat(Rule):
    ops = ("Concat",)

    def couple(self, node, flow):
        y = node.outputs[0]
        rank = flow.ctx.rank(y)
        if not rank:
            return
        axis = int(node.attrs["axis"]) % rank
        start = 0
        for x in node.inputs:
            n = flow.ctx.dim(x, axis)
            _others(flow, x, y, axis)
            if not isinstance(n, int):
                return
            flow.offset(x, axis, y, axis, start)
            start += n


def split_sizes(node, ctx):
    """Split sizes as a list, or None if not constant."""
    x = node.inputs[0]
    axis = int(node.attrs.get("axis", 0))
    if len(node.inputs) > 1 and node.inputs[1].name:
        return ctx.ints(node.inputs[1])
    if "split" in node.attrs:
        return list(node.attrs["split"])
    n, k = ctx.dim(x, axis), len(node.outputs)
    if not isinstance(n, int):
        return None
    step = -(-n // k)  # opset 18 num_outputs: last chunk may be smaller
    return [min(step, n - i * step) for i in range(k)]


@register
class Split(Rule):
    ops = ("Split",)

    def couple(self, node, flow):
        x = node.inputs[0]
        rank = flow.ctx.rank(x)
        sizes = split_sizes(node, flow.ctx)
        if not rank or sizes is None:
            return
        axis = int(node.attrs.get("axis", 0)) % rank
        start = 0
        for y, n in zip(node.outputs, sizes):
            _others(flow, x, y, axis)
            flow.offset(y, axis, x, axis, start)
            start += n

    def shrink(self, node, ctx, keep):
        x = node.inputs[0]
        axis = int(node.attrs.get("axis", 0)) % ctx.rank(x)
        old = split_sizes(node, ctx)
        if old is None:
            return
        new = [len(keep.get((y.name, axis), range(n))) for y, n in zip(node.outputs, old)]
        if new == old:
            return
        node.attrs.pop("num_outputs", None)
        if ctx.opset >= 13:
            ctx.set_input(node, 1, np.asarray(new, dtype=np.int64))
        else:
            node.attrs["split"] = new


def slice_params(node, ctx):
    """(starts, ends, axes, steps) as lists, or None when any is not constant."""
    if ctx.opset < 10:
        a = node.attrs
        starts, ends = list(a.get("starts", [])), list(a.get("ends", []))
        return starts, ends, list(a.get("axes", range(len(starts)))), [1] * len(starts)
    ins = node.inputs
    starts, ends = ctx.ints(ins[1]), ctx.ints(ins[2])
    if starts is None or ends is None:
        return None
    axes = ctx.ints(ins[3]) if len(ins) > 3 and ins[3].name else list(range(len(starts)))
    steps = ctx.ints(ins[4]) if len(ins) > 4 and ins[4].name else [1] * len(starts)
    if axes is None or steps is None:
        return None
    return starts, ends, axes, steps


def _sliced_axes(node, ctx, rank):
    """The axes a Slice touches when its bounds are not constant, or None if unknown."""
    ins = node.inputs
    if ctx.opset < 10:
        return None
    if len(ins) > 3 and ins[3].name:
        axes = ctx.ints(ins[3])
        return None if axes is None else {a % rank for a in axes}
    n = (ctx.shape(ins[1]) or (None,))[0]
    return set(range(n)) if isinstance(n, int) else None


def _clamp(start, end, n):
    start = min(max(start + n if start < 0 else start, 0), n)
    end = min(max(end + n if end < 0 else end, 0), n)
    return start, max(end, start)


@register
class Slice(Rule):
    """Axes sliced with step 1 keep an offset; other steps are refused."""

    ops = ("Slice",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        rank = flow.ctx.rank(x)
        params = slice_params(node, flow.ctx)
        if not rank:
            return
        if params is None:  # bounds known only at run time: the sliced axes are refused
            for a in range(rank):
                if a in (_sliced_axes(node, flow.ctx, rank) or range(rank)):
                    flow.refuse(x, a, f"Slice bounds of axis {a} are computed at run time")
                else:
                    flow.identity(x, a, y, a)
            return
        sliced = {}
        for s, e, a, st in zip(*params):
            sliced[a % rank] = (s, e, st)
        for a in range(rank):
            n = flow.ctx.dim(x, a)
            if a not in sliced:
                flow.identity(x, a, y, a)
            elif sliced[a][2] == 1 and isinstance(n, int):
                flow.offset(y, a, x, a, _clamp(sliced[a][0], sliced[a][1], n)[0])
            else:
                flow.refuse(x, a, f"Slice with step {sliced[a][2]} on axis {a}")

    def shrink(self, node, ctx, keep):
        x = node.inputs[0]
        rank = ctx.rank(x)
        params = slice_params(node, ctx)
        if params is None:
            return
        starts, ends, axes, _ = params
        new_s, new_e = list(starts), list(ends)
        for i, a in enumerate(axes):
            kept = keep.get((x.name, a % rank))
            if kept is None:
                continue
            s, e = _clamp(starts[i], ends[i], ctx.dim(x, a % rank))
            new_s[i] = int(np.sum(kept < s))
            new_e[i] = new_s[i] + int(np.sum((kept >= s) & (kept < e)))
        if (new_s, new_e) == (starts, ends):
            return
        if ctx.opset < 10:
            node.attrs["starts"], node.attrs["ends"] = new_s, new_e
        else:
            ctx.set_input(node, 1, np.asarray(new_s, dtype=np.int64))
            ctx.set_input(node, 2, np.asarray(new_e, dtype=np.int64))


@register
class Gather(Rule):
    """Axes of the data other than the gathered one pass through. A constant table
    (an embedding) produces the channels it passes."""

    ops = ("Gather",)

    def couple(self, node, flow):
        data, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ctx = flow.ctx
        rank, ri = ctx.rank(data), ctx.rank(idx)
        if rank is None or ri is None:
            return
        axis = int(node.attrs.get("axis", 0)) % rank
        table = ctx.const(data) is not None
        for a in range(rank):
            if a == axis:
                flow.refuse(data, a, f"Gather picks along axis {a}")
                continue
            flow.identity(data, a, y, a if a < axis else a + ri - 1)
            if table:
                flow.param(data, a, "out")
        for k in range(ri):
            flow.identity(idx, k, y, axis + k)


@register
class Tile(Rule):
    """An axis repeated r times: element i goes with i, i+n, ..., i+(r-1)n."""

    ops = ("Tile",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        reps = flow.ctx.ints(node.inputs[1])
        if reps is None:
            return
        for a, r in enumerate(reps):
            n = flow.size(x, a)
            if r == 1:
                flow.identity(x, a, y, a)
            elif n:
                flow.pairs(x, a, y, a, np.tile(np.arange(n), r), np.arange(n * r))
