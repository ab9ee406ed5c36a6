"""Normalisation ops. Per-channel statistics follow their channel; ops that mix
channels (GroupNorm within a group, LayerNorm over its axes) couple or refuse them."""

import numpy as np

from .base import Rule
from .registry import register


@register
class BatchNormalization(Rule):
    """Per-channel statistics; a scale, bias or statistic with one value for every channel
    that other nodes share (the dynamo exporter's zero bias) is not linked, else it would
    tie unrelated norms. In training mode (timm's weight standardisation: the
    reshaped weight is one batch) they are computed over the other axes, which then pass
    only approximately; the running statistics it outputs follow the channels."""

    ops = ("BatchNormalization",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        training = int(node.attrs.get("training_mode", 0))
        for axis in range(flow.ctx.rank(x) or 0):
            flow.identity(x, axis, y, axis)
            if training and axis != 1:
                flow.approximate(x, axis)
                flow.approximate(y, axis)
        for t in node.outputs[1:] if training else ():
            flow.identity(t, 0, y, 1)
        for i, role in ((1, "elem"), (2, "elem"), (3, "stat"), (4, "stat")):
            t = node.inputs[i] if i < len(node.inputs) else None
            if t is not None and not _shared_uniform(flow.ctx, t):
                flow.identity(t, 0, y, 1)
                flow.param(t, 0, role)

    def shrink(self, node, ctx, keep):
        _fresh_uniform(node, ctx, keep, (1, 2, 3, 4))


@register
class InstanceNormalization(Rule):
    """Per-channel statistics. A scale or bias with one value for every channel (GroupNorm
    lowered to Reshape -> InstanceNorm -> Reshape: ones and zeros, which an exporter may
    share between every norm) is not linked, else it would tie unrelated norms: shrink
    gives the node a fresh one of the kept size."""

    ops = ("InstanceNormalization",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        flow.identity(x, 0, y, 0)
        flow.identity(x, 1, y, 1)
        for t in node.inputs[1:3]:
            if _uniform(flow.ctx.const(t)) is None:
                flow.identity(t, 0, y, 1)
                flow.param(t, 0, "elem")

    def shrink(self, node, ctx, keep):
        _fresh_uniform(node, ctx, keep, (1, 2))


def _fresh_uniform(node, ctx, keep, slots):
    """Inputs at `slots` with one value for every channel that couple left unlinked (not
    in `keep`, so not sliced) get a fresh constant of the kept size."""
    kept = keep.get((node.outputs[0].name, 1))
    if kept is None:
        return
    for i in slots:
        t = node.inputs[i] if i < len(node.inputs) else None
        value = None if t is None or (t.name, 0) in keep else _uniform(ctx.const(t))  # in keep: sliced
        if value is not None:
            ctx.set_input(node, i, np.full(len(kept), value, dtype=ctx.const(node.inputs[i]).dtype))


def _shared_uniform(ctx, t) -> bool:
    return len(t.outputs) > 1 and _uniform(ctx.const(t)) is not None


def _uniform(value):
    """The one value of a 1-D constant whose elements are all equal, else None."""
    if value is None or value.ndim != 1 or not value.size or not np.all(value == value[0]):
        return None
    return value[0]


@register
class GroupNormalization(Rule):
    """Channels of one norm group share statistics, so a whole group goes at once."""

    ops = ("GroupNormalization",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        groups = int(node.attrs["num_groups"])
        c = flow.size(y, 1)
        flow.identity(x, 0, y, 0)
        if not c or c % groups:
            return
        per = c // groups
        flow.identity(x, 1, y, 1)
        flow.pairs(y, 1, y, 1, np.arange(c), np.arange(c) // per * per)
        for t in node.inputs[1:3]:
            n = flow.size(t, 0)
            if n == groups and groups != c:
                flow.block(t, 0, y, 1, per)
            else:
                flow.identity(t, 0, y, 1)
            flow.param(t, 0, "elem")

    def shrink(self, node, ctx, keep):
        y = node.outputs[0]
        kept = keep.get((y.name, 1))
        if kept is not None:
            groups = int(node.attrs["num_groups"])
            node.attrs["num_groups"] = len(kept) // (ctx.dim(y, 1) // groups)


@register
class LayerNormalization(Rule):
    """Every axis passes through; the normalised axes only approximately, since the
    statistics then cover the kept channels alone. Scale and bias follow them."""

    ops = ("LayerNormalization", "RMSNormalization")

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        rank = flow.ctx.rank(x) or 0
        start = int(node.attrs.get("axis", -1)) % max(rank, 1)
        for axis in range(rank):
            flow.identity(x, axis, y, axis)
            if axis >= start:
                flow.approximate(x, axis)
                flow.approximate(y, axis)
        for t in node.inputs[1:3]:
            if not t.name:
                continue
            r = flow.ctx.rank(t) or 0
            for k in range(r):
                flow.identity(t, k, y, rank - r + k)
                flow.param(t, k, "elem")


@register
class LRN(Rule):
    """Local response normalisation divides each channel by a sum over its neighbours
    (`size` channels): every axis passes, the channel axis only approximately, since a
    removed channel leaves its neighbours' windows."""

    ops = ("LRN",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        for axis in range(flow.ctx.rank(x) or 0):
            flow.identity(x, axis, y, axis)
        if (flow.ctx.rank(x) or 0) > 1:
            flow.approximate(x, 1)
            flow.approximate(y, 1)
