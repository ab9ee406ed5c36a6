"""Ops that move or drop axes without mixing elements across the channel axis:
Transpose, Squeeze, Unsqueeze, reductions, Softmax and ArgMax families."""

from .base import Rule
from .registry import register

REDUCE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
# opset from which each op takes `axes` as an input instead of an attribute
AXES_INPUT_FROM = {"Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13}


def axes_of(node, ctx, rank):
    """The op's `axes` as non-negative ints, [] if absent, None if not constant."""
    if ctx.opset >= AXES_INPUT_FROM.get(node.op, 18):
        if len(node.inputs) < 2 or not node.inputs[1].name:
            return []
        axes = ctx.ints(node.inputs[1])
    else:
        axes = node.attrs.get("axes", [])
    return None if axes is None else sorted(a % rank for a in axes)


@register
class Transpose(Rule):
    ops = ("Transpose",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        rank = flow.ctx.rank(x) or 0
        perm = node.attrs.get("perm") or list(reversed(range(rank)))
        for i, p in enumerate(perm):
            flow.identity(x, p, y, i)


@register
class Squeeze(Rule):
    ops = ("Squeeze", "Unsqueeze")

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        ctx = flow.ctx
        rx, ry = ctx.rank(x), ctx.rank(y)
        if rx is None or ry is None:
            return
        axes = axes_of(node, ctx, ry if node.op == "Unsqueeze" else rx)
        if axes is None:
            return
        if node.op == "Squeeze" and not axes:
            axes = [a for a in range(rx) if ctx.dim(x, a) == 1]
        kept_x = [a for a in range(rx) if node.op == "Unsqueeze" or a not in axes]
        kept_y = [a for a in range(ry) if node.op == "Squeeze" or a not in axes]
        for a, b in zip(kept_x, kept_y):
            flow.identity(x, a, y, b)
        if node.op == "Squeeze":
            for a in axes:
                flow.handle(x, a)


@register
class Reduce(Rule):
    """Reduced axes are refused; the others pass through. A ReduceMean keeping its dims
    (a norm's statistics) and any reduction of a tensor computed from constants alone (the
    per-output-channel mean, variance or norm of a weight standardised in the graph) pass
    their reduced axes approximately: the statistics then cover the kept elements."""

    ops = REDUCE + ("ArgMax", "ArgMin")

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        ctx = flow.ctx
        rank = ctx.rank(x)
        if rank is None:
            return
        if node.op in ("ArgMax", "ArgMin"):
            axes = [int(node.attrs.get("axis", 0)) % rank]
        else:
            axes = axes_of(node, ctx, rank)
            if axes is None:
                return
            if not axes and not node.attrs.get("noop_with_empty_axes", 0):
                axes = list(range(rank))
        keepdims = int(node.attrs.get("keepdims", 1))
        weight = ctx.const(x) is not None or ctx.computed(x)
        statistic = (node.op in REDUCE and weight) or (node.op == "ReduceMean" and keepdims)
        j = 0
        for a in range(rank):
            if a in axes:
                if statistic:
                    flow.approximate(x, a)
                    if keepdims:
                        flow.handle(y, j)
                else:
                    flow.refuse(x, a, f"{node.op} reduces axis {a}")
                j += keepdims
            else:
                flow.identity(x, a, y, j)
                j += 1


@register
class Softmax(Rule):
    """The softmax axis (and, before opset 13, every axis after it) is refused."""

    ops = ("Softmax", "LogSoftmax", "Hardmax")

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        ctx = flow.ctx
        rank = ctx.rank(x) or 0
        if not rank:
            return
        old = ctx.opset < 13
        axis = int(node.attrs.get("axis", 1 if old else -1)) % rank
        for a in range(rank):
            if a == axis or (old and a > axis):
                flow.refuse(x, a, f"{node.op} normalises over axis {a}")
            else:
                flow.identity(x, a, y, a)
