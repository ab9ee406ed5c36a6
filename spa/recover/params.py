"""A layer's weights as per-group least-squares matrices [G, d, m], and back."""

from __future__ import annotations

import numpy as np

from .layers import Layer, Weights


def dims(layer: Layer, w: Weights) -> tuple:
    """(groups, d including the bias column, outputs per group)."""
    k = w.get(layer.weight)
    b = layer.bias is not None
    if layer.kind == "conv":
        g = layer.attrs["group"]
        return g, int(np.prod(k.shape[1:])) + b, k.shape[0] // g
    if layer.kind == "linear":
        return 1, k.shape[1 if layer.trans else 0] + b, k.shape[0 if layer.trans else 1]
    return k.shape[0], 1 + b, 1


def read(layer: Layer, w: Weights) -> np.ndarray:
    """Current weights as [G, d, m] (float64). A bias kept in a BatchNormalization mean
    reads as minus that mean; a norm's current map reads as scale 1, bias 0."""
    k = w.get(layer.weight).astype(np.float64)
    if layer.kind == "conv":
        g = layer.attrs["group"]
        theta = k.reshape(g, k.shape[0] // g, -1).transpose(0, 2, 1)
    elif layer.kind == "linear":
        theta = layer.scale * (k.T if layer.trans else k)[None]
    else:
        theta = np.ones((k.shape[0], 1, 1))
    if layer.bias is None:
        return np.ascontiguousarray(theta)
    b = w.get(layer.bias).astype(np.float64).ravel()
    if layer.kind == "affine":
        b = np.zeros_like(b)
    elif layer.bias_sign < 0:
        b = -b
    else:
        b = b * layer.beta
    return np.concatenate([theta, b.reshape(theta.shape[0], 1, theta.shape[2])], axis=1)


def write(layer: Layer, w: Weights, theta: np.ndarray):
    """Store fitted [G, d, m] weights where the layer keeps them, in their dtypes."""
    b = layer.bias is not None
    body, bias = (theta[:, :-1], theta[:, -1]) if b else (theta, None)
    k = w.get(layer.weight)
    if layer.kind == "conv":
        w.set(layer.weight, body.transpose(0, 2, 1).reshape(k.shape))
    elif layer.kind == "linear":
        m = body[0] / layer.scale
        w.set(layer.weight, m.T if layer.trans else m)
    else:  # per channel: y' = a * y + c with y = scale * z + bias
        a = body[:, 0, 0]
        w.set(layer.weight, k * a)
        if b:
            w.set(layer.bias, w.get(layer.bias).ravel() * a + bias[:, 0])
        return
    if b:
        flat = bias.ravel()
        w.set(layer.bias, -flat if layer.bias_sign < 0 else flat / layer.beta)
