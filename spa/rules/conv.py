"""Conv and ConvTranspose, any rank and any `group`.

With group == 1 input channels are contracted by the weight's input axis. With
group > 1 a whole conv group (its input and output channels) goes together, so
pruning removes groups and the `group` attribute shrinks; depthwise is the case
of one input channel per group.
"""

import numpy as np

from .base import Flow, Rule
from .registry import register


def group_pairs(cin, cout, groups):
    """Every input channel of a conv group paired with every output channel of it."""
    ni, no = cin // groups, cout // groups
    k = np.repeat(np.arange(groups), ni * no)
    j = np.tile(np.repeat(np.arange(ni), no), groups)
    m = np.tile(np.arange(no), groups * ni)
    return k * ni + j, k * no + m


def _couple(node, flow: Flow, w_in, w_out):
    """w_in/w_out: the weight axes holding input/output channels (for group 1)."""
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    g = int(node.attrs.get("group", 1))
    flow.identity(x, 0, y, 0)
    if g == 1:
        flow.identity(x, 1, w, w_in)
        flow.param(w, w_in, "in")
        flow.identity(w, w_out, y, 1)
        flow.param(w, w_out, "out")
    else:
        cin, cout = flow.size(x, 1), flow.size(y, 1)
        if cin and cout and cin % g == 0 and cout % g == 0:
            flow.pairs(x, 1, y, 1, *group_pairs(cin, cout, g))
            # the weight axis indexed by the full channel count follows it
            full = (w, 0, y, 1) if w_out == 0 else (x, 1, w, 0)
            flow.identity(*full)
            flow.param(w, 0, "out" if w_out == 0 else "in")
    if b is not None:
        flow.identity(b, 0, y, 1)
        flow.param(b, 0, "out")


def _shrink_group(node, ctx, keep):
    g = int(node.attrs.get("group", 1))
    y = node.outputs[0]
    kept = keep.get((y.name, 1))
    if g > 1 and kept is not None:
        per_group = ctx.dim(y, 1) // g
        node.attrs["group"] = len(kept) // per_group


@register
class Conv(Rule):
    ops = ("Conv",)

    def couple(self, node, flow):
        _couple(node, flow, w_in=1, w_out=0)

    def shrink(self, node, ctx, keep):
        _shrink_group(node, ctx, keep)


@register
class ConvTranspose(Rule):
    ops = ("ConvTranspose",)

    def couple(self, node, flow):
        _couple(node, flow, w_in=0, w_out=1)

    def shrink(self, node, ctx, keep):
        _shrink_group(node, ctx, keep)
