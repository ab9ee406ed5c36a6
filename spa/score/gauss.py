"""Gaussian quadrature over a channel's distribution, and Clip's bounds (shared by
spa.score.moments and spa.score.correlation); the elementwise functions themselves live
with their rules (spa.rules.elementwise)."""

from __future__ import annotations

import numpy as np


Z, W = np.polynomial.hermite_e.hermegauss(24)  # E[f(z)], z ~ N(0, 1) = sum W f(Z) / sqrt(2 pi)
W = W / W.sum()


def scalar(ctx, node, i, default):
    """Clip's bound `i` (1: min, 2: max) from its input or attribute, else `default`."""
    if len(node.inputs) > i and node.inputs[i].name:
        v = ctx.const(node.inputs[i])
        return float(v.reshape(-1)[0]) if v is not None and v.size else default
    key = {1: "min", 2: "max"}[i]
    return float(node.attrs.get(key, default))
