"""Ops that make constants, and Shape, which reads dims but not values."""

from .base import Rule
from .registry import register


@register
class Constant(Rule):
    """Constant and ConstantOfShape with a constant shape are parameters: rewrite
    slices them in place (the `value` attribute, or the fill's shape)."""

    ops = ("Constant", "ConstantOfShape")

    def couple(self, node, flow):
        y = node.outputs[0]
        if flow.ctx.const(y) is None:
            return
        for axis in range(flow.ctx.rank(y) or 0):
            flow.handle(y, axis)


@register
class Shape(Rule):
    """Shape reads dims. When every consumer picks dims by constant index (Gather or
    Slice), the dims it never reads are free to change; all others are refused."""

    ops = ("Shape",)

    def couple(self, node, flow):
        x = node.inputs[0]
        rank = flow.ctx.rank(x)
        if not rank:
            return
        start = int(node.attrs.get("start", 0)) % (rank + 1)
        end = int(node.attrs.get("end", rank))
        end = end % (rank + 1) if end < 0 else min(end, rank)
        read = _dims_read(node.outputs[0], flow.ctx, list(range(start, end)))
        for a in range(rank):
            if read is None or a in read:
                flow.refuse(x, a, f"Shape reads dim {a} at run time")
            else:
                flow.handle(x, a)


def _dims_read(out, ctx, dims):
    """Which of `dims` the consumers of a Shape output read, or None if unknowable."""
    read = set()
    for user in out.outputs:
        if user.op == "Gather" and int(user.attrs.get("axis", 0)) == 0:
            idx = ctx.ints(user.inputs[1])
            if idx is None:
                return None
            read.update(dims[i] for i in idx)
        elif user.op == "Slice" and ctx.opset >= 10:
            s, e = ctx.ints(user.inputs[1]), ctx.ints(user.inputs[2])
            if s is None or e is None or len(s) != 1 or len(user.inputs) > 4:
                return None
            read.update(dims[s[0]:e[0]])
        else:
            return None
    return read
