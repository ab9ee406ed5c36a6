"""Least-squares rows of a layer (float32): inputs X [rows, groups, d] and targets Y [rows, groups, m].

Conv rows are im2col patches at a random subset of output positions; linear rows are
tokens (all but the last axis); affine rows are one value per channel. The last column
of X is 1 when the layer has a bias.
"""

from __future__ import annotations

import numpy as np


def _pick(rng, n: int, total: int, per: int) -> tuple:
    """(sample, position) pairs: `per` distinct positions out of `total` for each of `n` samples."""
    per = min(per, total)
    if per == total:
        pos = np.tile(np.arange(total), n)
    else:
        pos = np.argsort(rng.random((n, total)), axis=1)[:, :per].ravel()
    return np.repeat(np.arange(n), per), pos


def _same_pads(size, k, s, d, upper):
    out = -(-size // s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    lo = total // 2 if upper else total - total // 2
    return lo, total - lo


def conv_rows(layer, x, y, rng, per: int, bias: bool):
    """Patches of input `x` [n, C, *spatial] and target rows of `y` [n, M, *out_spatial].

    Returns:
        (X [r, G, C/G*k + bias], Y [r, G, M/G], sample index [r]).
    """
    a = layer.attrs
    if x.ndim == 3:  # 1-D conv as 2-D with height 1
        x, y = x[:, :, None, :], y[:, :, None, :]
        k, st, dl = [1] + a["kernel"], [1] + a["strides"], [1] + a["dilations"]
        pads = [0, a["pads"][0], 0, a["pads"][1]]
    else:
        k, st, dl, pads = a["kernel"], a["strides"], a["dilations"], a["pads"]
    if a["auto_pad"].startswith("SAME"):
        hs = [_same_pads(x.shape[2 + i], k[i], st[i], dl[i], a["auto_pad"] == "SAME_UPPER") for i in range(2)]
        pads = [hs[0][0], hs[1][0], hs[0][1], hs[1][1]]
    elif a["auto_pad"] == "VALID":
        pads = [0, 0, 0, 0]
    n, c = x.shape[:2]
    oh, ow = y.shape[2], y.shape[3]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    s, p = _pick(rng, n, oh * ow, per)
    hi, wi = p // ow, p % ow
    rows_h = hi[:, None] * st[0] + np.arange(k[0])[None, :] * dl[0]  # [r, kh]
    rows_w = wi[:, None] * st[1] + np.arange(k[1])[None, :] * dl[1]  # [r, kw]
    patch = xp[s[:, None, None, None], np.arange(c)[None, :, None, None], rows_h[:, None, :, None],
               rows_w[:, None, None, :]]  # [r, C, kh, kw]
    g = a["group"]
    X = patch.reshape(len(s), g, -1).astype(np.float32)
    if bias:
        X = np.concatenate([X, np.ones((len(s), g, 1), np.float32)], axis=2)
    Y = y[s, :, hi, wi].reshape(len(s), g, -1).astype(np.float32)
    return X, Y, s


def token_rows(x, y, rng, per: int):
    """Rows of [n, ..., K] input and [n, ..., M] target: (x rows [r, K], y rows [r, M], sample [r])."""
    n = x.shape[0]
    xf = x.reshape(n, -1, x.shape[-1])
    yf = y.reshape(n, -1, y.shape[-1])
    s, p = _pick(rng, n, xf.shape[1], per)
    return xf[s, p].astype(np.float32), yf[s, p].astype(np.float32), s


def linear_rows(x, y, rng, per: int, bias: bool):
    """Returns (X [r, 1, K + bias], Y [r, 1, M], sample index [r])."""
    xr, yr, s = token_rows(x, y, rng, per)
    if bias:
        xr = np.concatenate([xr, np.ones((len(s), 1), np.float32)], axis=1)
    return xr[:, None, :], yr[:, None, :], s


def affine_rows(x, y, rng, per: int, bias: bool):
    """Per-channel rows of the current output `x` against the target `y`.

    Returns:
        (X [r, C, 1 + bias], Y [r, C, 1], sample index [r]).
    """
    xr, yr, s = token_rows(x, y, rng, per)
    X = xr[:, :, None]
    if bias:
        X = np.concatenate([X, np.ones_like(X)], axis=2)
    return X, yr[:, :, None], s
