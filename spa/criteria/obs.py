"""Criteria that use more than the weights' magnitude: BatchNorm scale, LAMP, and
OBSPA (data-free Optimal Brain Surgeon, see docs/obspa.md)."""

import numpy as np

from .magnitude import l2
from .registry import register


@register("bn")
def bn(members, channels, rng):
    """|gamma| of the group's BatchNormalization; L2 magnitude where it has none."""
    rows = [m.per_channel(np.abs(m.rows)) for m in members if m.op == "BatchNormalization" and m.slot == 1]
    return np.stack(rows) if rows else l2(members, channels, rng)


@register("lamp")
def lamp(members, channels, rng):
    """LAMP: each channel's squared norm over the sum of the norms at least as large,
    within each member; the group's smallest channels then compare across layers."""
    out = []
    for m in members:
        n = m.per_channel(m.rows.astype(np.float64) ** 2)
        order = np.argsort(n)
        tail = np.cumsum(n[order][::-1])[::-1]  # sum of norms >= each, in sorted order
        score = np.empty_like(n)
        score[order] = n[order] / np.maximum(tail, 1e-30)
        out.append(score)
    return np.stack(out)


def obs_cost(m):
    """Expected squared output error when a consumer loses each input channel, after its
    mean is folded into the bias: var_q * sum of the channel's squared weights."""
    energy = m.per_channel(m.rows.astype(np.float64) ** 2)
    var = np.ones(len(m.channel)) if m.var is None else m.var
    return energy * np.bincount(m.channel, weights=var, minlength=m.channels) / np.maximum(
        np.bincount(m.channel, minlength=m.channels), 1)


@register("obspa")
def obspa(members, channels, rng):
    rows = [obs_cost(m) for m in members if m.role == "in"]
    return np.stack(rows) if rows else l2(members, channels, rng)


obspa.needs_stats = True
