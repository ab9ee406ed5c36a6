"""Criteria that measure the model on calibration data (spa.calib): each layer's loss
is its output energy L = ||y||^2 / 2, and a channel's score sums over the layers that
read it."""

import numpy as np

from .magnitude import l2
from .obs import obs_cost
from .registry import register


def _inputs(members):
    return [m for m in members if m.role == "in" and m.mean is not None]


@register("taylor")
def taylor(members, channels, rng):
    """First-order Taylor: |sum over the channel's weights of w * dL/dw| = |E[x_c g_c]|,
    g = dL/dx measured per layer."""
    rows = [np.abs(m.per_channel(m.xg)) for m in _inputs(members) if m.xg is not None]
    return np.stack(rows) if rows else l2(members, channels, rng)


@register("hessian")
def hessian(members, channels, rng):
    """OBD: 1/2 * sum of w^2 * H_ww, with H_ww = E[x_c^2] of the layer's input channel."""
    rows = [m.per_channel((m.rows.astype(np.float64) ** 2).reshape(len(m.rows), -1).sum(1)
                          * (m.var + m.mean ** 2)) / 2 for m in _inputs(members)]
    return np.stack(rows) if rows else l2(members, channels, rng)


@register("obs")
def obs(members, channels, rng):
    """OBSPA's cost (see docs/obspa.md) with the channel variances measured, not propagated."""
    ins = _inputs(members)
    return obs_cost(ins, channels)[None] if ins else l2(members, channels, rng)


for fn in (taylor, hessian, obs):
    fn.needs_calib = True
taylor.needs_grads = True
