"""Ops that make constants or value ranges, and Shape, which reads dims but not values."""

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
class Range(Rule):
    """Range(start, limit, delta) makes a vector from three scalars: its one axis is no
    channel axis of any input, and its length follows values, not channels. Its scalar
    inputs have no axes to block; a group that reaches its output is refused (the
    rewrite cannot shorten it), and no channel passes through it."""

    ops = ("Range",)

    def couple(self, node, flow):
        y = node.outputs[0]
        for axis in range(flow.ctx.rank(y) or 0):
            flow.refuse(y, axis, f"Range '{node.name}' makes axis {axis} of '{y.name}' from values")


# ops a dims vector may pass through on its way to a shape target, and the input it uses
SHAPE_PASS = {"Cast": 0, "Identity": 0, "Unsqueeze": 0, "Squeeze": 0, "Concat": None, "Gather": 0, "Slice": 0,
              "Mul": None, "Where": None, "Equal": None}  # Where(Equal(v, -1), 1, v): TorchScript's expand
SHAPE_TARGETS = {"Reshape": 1, "Expand": 1}


@register
class Shape(Rule):
    """Shape reads dims. Dims that only feed Reshape or Expand targets are free to
    change: those rules tie each target entry to the dim it copies. Otherwise, when
    every consumer picks dims by constant index, the dims never read are free; all
    others are refused."""

    ops = ("Shape",)

    def couple(self, node, flow):
        x = node.inputs[0]
        rank = flow.ctx.rank(x)
        if not rank:
            return
        if _only_targets(node.outputs[0]):
            for a in range(rank):
                flow.handle(x, a)
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


def _only_targets(t, depth=0):
    """True when every use of a dims vector ends as the shape input of Reshape/Expand."""
    if depth > 32:
        return False
    for user in t.outputs:
        uses = [i for i, x in enumerate(user.inputs) if x is t]
        if user.op in SHAPE_TARGETS and uses == [SHAPE_TARGETS[user.op]] or user.op == "Shape":
            continue  # a target, or the Shape of the dims vector (its length, not its values)
        want = SHAPE_PASS.get(user.op, -1)
        if user.op == "Reshape" and uses == [0] and len(user.outputs[0].shape or ()) == 1:
            want = 0  # a dims vector flattened again stays a dims vector
        if want == -1 or (want is not None and uses != [want]):
            return False
        if not all(_only_targets(o, depth + 1) for o in user.outputs):
            return False
    return True


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
