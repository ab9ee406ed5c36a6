"""Magnitude criteria: sum of |w|^p over each channel's slice, and random."""

import numpy as np

from .registry import register


def _lp(members, channels, p):
    return np.stack([m.per_channel(np.abs(m.rows) ** p) for m in members])


@register("l1")
def l1(members, channels, rng):
    return _lp(members, channels, 1)


@register("l2")
def l2(members, channels, rng):
    return _lp(members, channels, 2)


@register("random")
def random(members, channels, rng):
    return np.tile(rng.random(channels), (max(len(members), 1), 1))
