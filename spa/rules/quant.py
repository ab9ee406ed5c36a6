"""QuantizeLinear and DequantizeLinear (QDQ).

Every axis passes straight through. A scale or zero point per channel (1-D, along
`axis`) goes with that axis of the output; per block (`block_size`) it goes with whole
blocks of the input, so that axis only loses whole blocks; per tensor it has no axis.
A DequantizeLinear of constants is a weight: its consumers see the float value
(spa.io.quant) and its integers, scale and zero point are sliced with it ("quant").
"""

from .base import Flow, Rule
from .registry import register, rule_for


def used_axes(ctx, y, rank) -> set:
    """The axes of a weight that its consumers' rules handle (all, when one has no rule):
    the other axes of a float weight are no spaces at all, nor should they be here."""
    axes = set()
    for user in y.outputs:
        rule = rule_for(user)
        if rule is None:
            return set(range(rank))
        scratch = Flow(user, ctx)
        rule.couple(user, scratch)
        axes |= {a for n, a in scratch.handled if n == y.name}
    return axes


def couple_quant(node, flow, x, y, scale_inputs):
    """Link x and y axis by axis, and each scale / zero point in `scale_inputs` with the
    channels (or blocks) it covers."""
    ctx = flow.ctx
    rank = ctx.rank(x) or 0
    stored = ctx.const(x) is not None
    axes = used_axes(ctx, y, rank) if stored else range(rank)
    axis = int(node.attrs.get("axis", 1)) % rank if rank else 0
    block = int(node.attrs.get("block_size", 0))
    size = ctx.dim(x, axis) if rank else None
    for k in axes:
        if block and k == axis and (not isinstance(size, int) or size % block):
            # a short last block: cutting a channel would shift the rows of every later block
            why = f"{node.op} '{node.name}': blocks of {block} do not tile axis {k} ({size})"
            flow.refuse(x, k, why)
            flow.refuse(y, k, why)
            continue
        flow.identity(x, k, y, k)
        if stored:
            flow.param(x, k, "quant")
    if not rank:
        return
    for t in scale_inputs:
        r = ctx.rank(t) if t.name else None
        if not r or (r == 1 and ctx.dim(t, 0) == 1 and ctx.dim(x, axis) != 1):
            continue  # per tensor
        if block and r == rank:
            for k in range(rank):
                if k == axis:
                    flow.block(t, k, x, k, block)
                else:
                    flow.identity(t, k, x, k)
        elif r == 1:
            flow.identity(t, 0, y, axis)
        for k in range(r):
            flow.param(t, k, "quant")


@register
class QuantizeDequantize(Rule):
    ops = ("QuantizeLinear", "DequantizeLinear",
           "com.microsoft::QuantizeLinear", "com.microsoft::DequantizeLinear")

    def couple(self, node, flow):
        couple_quant(node, flow, node.inputs[0], node.outputs[0], node.inputs[1:3])


@register
class DynamicQuantize(Rule):
    """DynamicQuantizeLinear: every axis of x passes to y; its scale and zero point are
    scalars computed at run time."""

    ops = ("DynamicQuantizeLinear",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        for axis in range(flow.ctx.rank(x) or 0):
            flow.identity(x, axis, y, axis)
