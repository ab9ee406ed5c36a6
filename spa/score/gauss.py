"""Gaussian quadrature and the elementwise functions whose moments the statistics
push through (shared by spa.score.moments and spa.score.correlation)."""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)
Z, W = np.polynomial.hermite_e.hermegauss(24)  # E[f(z)], z ~ N(0, 1) = sum W f(Z) / sqrt(2 pi)
W = W / W.sum()


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


UNARY = {
    "Relu": lambda x, a: np.maximum(x, 0),
    "Sigmoid": lambda x, a: sigmoid(x),
    "Tanh": lambda x, a: np.tanh(x),
    "LeakyRelu": lambda x, a: np.where(x > 0, x, a.get("alpha", 0.01) * x),
    "Elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1)),
    "HardSigmoid": lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    "Softplus": lambda x, a: np.logaddexp(0, x),
    "Mish": lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    "Gelu": lambda x, a: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "Erf": lambda x, a: _erf(x),
    "Identity": lambda x, a: x,
    "Dropout": lambda x, a: x,
}


def scalar(ctx, node, i, default):
    """Clip's bound `i` (1: min, 2: max) from its input or attribute, else `default`."""
    if len(node.inputs) > i and node.inputs[i].name:
        v = ctx.const(node.inputs[i])
        return float(v.reshape(-1)[0]) if v is not None and v.size else default
    key = {1: "min", 2: "max"}[i]
    return float(node.attrs.get(key, default))
