"""Conv and ConvTranspose, any rank and any `group`.

With group == 1 input channels are contracted by the weight's input axis. A conv
with a few wide groups (at most FEW groups, each with at least WIDE input and output
channels: AlexNet's two halves) loses channels inside every group, the same offsets
in each, and keeps `group`. Otherwise a whole conv group (its input and output
channels) goes together, so pruning removes groups and the `group` attribute
shrinks; depthwise is the case of one input channel per group.
"""

import numpy as np

from .base import Flow, Rule, output_spaces, volume
from .registry import register


def group_pairs(cin, cout, groups):
    """Every input channel of a conv group paired with every output channel of it."""
    ni, no = cin // groups, cout // groups
    k = np.repeat(np.arange(groups), ni * no)
    j = np.tile(np.repeat(np.arange(ni), no), groups)
    m = np.tile(np.arange(no), groups * ni)
    return k * ni + j, k * no + m


FEW, WIDE = 4, 8


def within_groups(cin, cout, groups):
    """Prune inside the groups (True) or whole groups (False)."""
    return 1 < groups <= FEW and cin // groups >= WIDE and cout // groups >= WIDE


def _tie_offsets(flow, full, full_axis, w, w_axis, n, per_group):
    """Element k * per_group + j of (full, full_axis) goes with weight element j (the
    weight axis holds one group's channels), or, when the weight axis is full size,
    with weight elements j and k * per_group + j: the same offsets in every group."""
    idx = np.arange(n)
    if flow.size(w, w_axis) == n:
        flow.pairs(full, full_axis, w, w_axis, np.concatenate([idx, idx]), np.concatenate([idx, idx % per_group]))
    else:
        flow.pairs(full, full_axis, w, w_axis, idx, idx % per_group)


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
        if cin and cout and cin % g == 0 and cout % g == 0 and within_groups(cin, cout, g):
            _tie_offsets(flow, x, 1, w, w_in, cin, cin // g)
            _tie_offsets(flow, y, 1, w, w_out, cout, cout // g)
            flow.param(w, w_in, "in")
            flow.param(w, w_out, "out")
        elif cin and cout and cin % g == 0 and cout % g == 0:
            flow.pairs(x, 1, y, 1, *group_pairs(cin, cout, g))
            # the weight axis indexed by the full channel count follows it
            full = (w, 0, y, 1) if w_out == 0 else (x, 1, w, 0)
            flow.identity(*full)
            flow.param(w, 0, "out" if w_out == 0 else "in")
    if b is not None:
        flow.identity(b, 0, y, 1)
        flow.param(b, 0, "out")


def _macs(node, ctx, big, small):
    """One weight tap per element of `big` (a Conv's output, a ConvTranspose's input) and
    per weight element beyond axis 0. With group 1, or pruning inside a few wide groups,
    the MACs scale with both channel counts; when whole conv groups go (depthwise and
    many narrow groups) input and output channels go together and count once."""
    ws, x, y = ctx.shape(node.inputs[1]), node.inputs[0], node.outputs[0]
    n, m = volume(ctx.shape(big)), volume(ws[1:] if ws is not None else None)
    if n is None or m is None:
        return 0, ()
    g, cin, cout = int(node.attrs.get("group", 1)), ctx.dim(x, 1), ctx.dim(y, 1)
    spaces = output_spaces(ctx, big)
    if g == 1 or (cin and cout and within_groups(cin, cout, g)):
        spaces.append((small.name, 1))
    return n * m, tuple(spaces)


def _shrink_group(node, ctx, keep):
    g = int(node.attrs.get("group", 1))
    y = node.outputs[0]
    kept = keep.get((y.name, 1))
    if g > 1 and kept is not None and not within_groups(ctx.dim(node.inputs[0], 1), ctx.dim(y, 1), g):
        per_group = ctx.dim(y, 1) // g
        node.attrs["group"] = len(kept) // per_group


@register
class Conv(Rule):
    ops = ("Conv",)

    def couple(self, node, flow):
        _couple(node, flow, w_in=1, w_out=0)

    def data_axis(self, node):
        return 1

    def macs(self, node, ctx):
        return _macs(node, ctx, node.outputs[0], node.inputs[0])

    def shrink(self, node, ctx, keep):
        _shrink_group(node, ctx, keep)


@register
class ConvTranspose(Rule):
    ops = ("ConvTranspose",)

    def couple(self, node, flow):
        _couple(node, flow, w_in=0, w_out=1)

    def macs(self, node, ctx):
        return _macs(node, ctx, node.inputs[0], node.outputs[0])

    def shrink(self, node, ctx, keep):
        _shrink_group(node, ctx, keep)
