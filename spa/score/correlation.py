"""Data-free channel correlations, for OBSPA's weight update (docs/obspa.md).

The correlation matrix of an activation's channels follows from the weights that made
it: a Conv, Gemm or MatMul mixes its (correlated) inputs, Cov_out = W Cov_in Wᵀ (kernel
taps independent); a BatchNorm or any per-channel affine map keeps the correlations
(up to signs); an elementwise activation f scales a covariance by E[f'(x_i)] E[f'(x_j)]
(first order in the correlation, Price's theorem; E[f'] by Stein's lemma from the same
quadrature as spa.moments); pooling, resizing and padding keep them; an Add of two
independent branches adds covariances; Flatten repeats them per position. Anything
else is unknown (None), and so is a graph input's correlation (taken as independent).
Variances always come from spa.moments: this module only gives correlations.
"""

from __future__ import annotations

import numpy as np

from ..rules import ACTIVATIONS as UNARY
from ..rules import sigmoid
from .gauss import W, Z, scalar
from .layout import channel_rows, constant
from .weights import read, weight

MAX = 2048  # channels beyond which no correlation matrix is built (time and memory)
MOVE = ("Transpose", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Expand")  # when the channels stay whole
LAYERS = ("Conv", "Gemm", "MatMul")  # whose input covariances OBSPA asks for
KEEP = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "Pad", "Cast",
        "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear")  # (de)quantizing: a positive scale


class Correlations:
    """corr(t, n): the [n, n] channel correlation of tensor t, or None (memoised)."""

    def __init__(self, moments):
        self.m = moments
        self.ctx = moments.ctx
        self.memo: dict = {}
        self._readers: dict = {}  # tensor name: readers whose outputs' correlations are still to come
        self._done: set = set()  # ids of the nodes whose output correlation was worked out

    def corr(self, t, n):
        if t.name not in self.memo:
            self.memo[t.name] = None  # cycles and failures stay unknown
            try:
                r = self._node(t, n)
            except (ValueError, IndexError, TypeError, KeyError, np.linalg.LinAlgError):
                r = None
            self.memo[t.name] = r if r is not None and r.shape == (n, n) and np.all(np.isfinite(r)) else None
            self._release(t)
        return self.memo[t.name]

    def _release(self, t):
        """Forget the matrices of t's producer's inputs once every node reading them has its
        output's, unless a layer reads them (their covariance is asked for): a transformer's
        chain of elementwise ops otherwise holds one matrix per tensor (MiniLM: 500 MB). A
        forgotten one asked for again is worked out again."""
        if len(t.inputs) != 1 or id(t.inputs[0]) in self._done:
            return
        self._done.add(id(t.inputs[0]))
        for x in t.inputs[0].inputs:
            if self.memo.get(x.name) is None or x is t:
                continue
            left = self._readers.get(x.name, len(x.outputs)) - 1
            self._readers[x.name] = left
            if left <= 0 and not any(u.op in LAYERS and u.inputs[0] is x for u in x.outputs):
                del self.memo[x.name]

    def _stats(self, t):
        s = self.m.map.get(t.name)
        return (None, None) if s is None else (s[1], s[2])

    def _cov(self, t, n):
        """Covariance of t's n channels: propagated correlation (identity where unknown)
        scaled by spa.moments' variances."""
        mean, var = self._stats(t)
        if var is None or len(var) != n:
            return None
        r = self.corr(t, n)
        sd = np.sqrt(np.maximum(var, 0))
        return (np.eye(n) if r is None else r) * np.outer(sd, sd)

    def _node(self, t, n):
        if n > MAX or len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        op, ctx = node.op, self.ctx
        if op in KEEP or op in MOVE and self._stats(node.inputs[0])[1] is not None \
                and len(self._stats(node.inputs[0])[1]) == n:
            return self.corr(node.inputs[0], n)
        if op in ("BatchNormalization", "LayerNormalization"):  # (LayerNorm per token: roughly)
            gamma = read(ctx, node.inputs[1])
            r = self.corr(node.inputs[0], n)
            if r is None or gamma is None or gamma.size != n:
                return None
            sign = np.sign(gamma.astype(np.float64).reshape(-1))
            return r * np.outer(sign, sign)
        if op == "Concat":
            return self._concat(node, t, n)
        if op in UNARY or op == "Clip":
            attrs = node.attrs
            f = (lambda x: UNARY[op](x, attrs)) if op in UNARY else \
                (lambda x, lo=scalar(ctx, node, 1, -np.inf), hi=scalar(ctx, node, 2, np.inf): np.clip(x, lo, hi))
            return self._activation(node.inputs[0], t, n, f)
        if t.name in self.m.functions:  # an elementwise function of one tensor (GELU, SiLU...)
            src, f = self.m.functions[t.name]
            return self._activation(src, t, n, f)
        if op == "Mul" and len(node.inputs) == 2 and node.inputs[1].inputs \
                and node.inputs[1].inputs[0].op == "Sigmoid" and node.inputs[1].inputs[0].inputs[0] is node.inputs[0]:
            return self._activation(node.inputs[0], t, n, lambda x: x * sigmoid(x))
        if op in ("Conv", "Gemm", "MatMul"):
            return self._linear(node, n)
        if op in ("Add", "Sub"):
            return self._add(node, n)
        if op in ("Mul", "Div") and len(node.inputs) == 2:
            return self._scaled(node, t, n)
        if op == "Flatten" or op == "Reshape":
            return self._flatten(node, n)
        return None

    def _activation(self, x, y, n, f):
        mean, var = self._stats(x)
        _, var_y = self._stats(y)
        r = self.corr(x, n)
        if r is None or var is None or var_y is None:
            return None
        sd = np.sqrt(np.maximum(var, 1e-30))
        z = mean[:, None] + sd[:, None] * Z[None, :]
        slope = ((z - mean[:, None]) * f(z)) @ W / sd ** 2  # E[f'(x)] by Stein's lemma
        a = slope * sd / np.sqrt(np.maximum(var_y, 1e-30))
        out = r * np.outer(a, a)
        np.fill_diagonal(out, 1.0)
        return np.clip(out, -1, 1)

    def _linear(self, node, n):
        ctx = self.ctx
        w = weight(ctx, node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None:
            return None
        w = w.astype(np.float64)
        x = node.inputs[0]
        if node.op == "Conv":
            if int(node.attrs.get("group", 1)) != 1:
                return None
            c = self._cov(x, w.shape[1])
            if c is None:
                return None
            wk = w.reshape(w.shape[0], w.shape[1], -1)
            cov = np.einsum("ock,cd,pdk->op", wk, c, wk, optimize=True)
        else:
            if node.op == "Gemm":
                if node.attrs.get("transA", 0):
                    return None
                w = w.T if node.attrs.get("transB", 0) else w
            if w.ndim != 2:
                return None
            c = self._cov(x, w.shape[0])
            if c is None:
                return None
            cov = w.T @ c @ w
        return _normalised(cov)

    def _add(self, node, n):
        """Independent operands: covariances add; a constant varying along other axes (a
        position embedding) adds its own covariance over those positions."""
        covs, axis = [], self._axis(node.outputs[0])
        for x in node.inputs:
            value = self.ctx.const(x)
            if value is not None:
                mc = None if axis is None else const_moments(value, axis, self.ctx.rank(node.outputs[0]), n)
                if mc is not None:
                    covs.append(mc[1])
                continue
            c = self._cov(x, n)
            if c is None:
                return None
            covs.append(c)
        return _normalised(sum(covs)) if covs else None

    def _concat(self, node, t, n):
        """Concat along another axis: the mixture's covariance, E[x xᵀ] weighted by each
        input's extent along the concat axis, minus the mixture mean's outer product."""
        axis, rank = self._axis(t), self.ctx.rank(t)
        if axis is None or int(node.attrs.get("axis", 0)) % rank == axis:
            return None
        total, second, mean = 0, np.zeros((n, n)), np.zeros(n)
        for x in node.inputs:
            size = self.ctx.dim(x, int(node.attrs.get("axis", 0)))
            value = constant(self.ctx, x)
            if value is not None:
                mc = const_moments(value, axis, rank, n)
                if mc is None:
                    return None
                m, c = mc
            else:
                mean_x, _ = self._stats(x)
                c = self._cov(x, n)
                if c is None or mean_x is None:
                    return None
                m = mean_x
            if not isinstance(size, int):
                return None
            total += size
            second += size * (c + np.outer(m, m))
            mean += size * m
        mean /= total
        return _normalised(second / total - np.outer(mean, mean))

    def _scaled(self, node, t, n):
        """x * c or x / c with a constant c per channel or scalar: signs flip correlations."""
        a, b = node.inputs
        if self.ctx.const(a) is not None and node.op == "Mul":
            a, b = b, a
        c, axis = self.ctx.const(b), self._axis(t)
        r = self.corr(a, n) if c is not None and axis is not None else None
        if r is None:
            return None
        mc = const_moments(c, axis, self.ctx.rank(t), n) if c.size > 1 else (np.full(n, float(c.reshape(-1)[0])), None)
        if mc is None:
            return None
        sign = np.sign(mc[0])
        return r * np.outer(sign, sign)

    def _axis(self, t):
        s = self.m.map.get(t.name)
        return None if s is None else s[0]

    def _flatten(self, node, n):
        x = node.inputs[0]
        xs, ys = self.ctx.shape(x), self.ctx.shape(node.outputs[0])
        if not ys or len(ys) != 2 or not xs or len(xs) < 2 or not all(isinstance(d, int) for d in xs[1:]) or int(np.prod(xs[1:])) != n:
            return None
        r = self.corr(x, xs[1])
        if r is None:
            return None
        return np.kron(r, np.eye(int(np.prod(xs[2:]))))


def const_moments(value, axis, rank, n):
    """(mean, covariance) over positions of a constant's n channels (see channel_rows)."""
    rows = channel_rows(value, axis, rank, n)
    if rows is None:
        return None
    centred = rows - rows.mean(1, keepdims=True)
    return rows.mean(1), centred @ centred.T / rows.shape[1]


def _normalised(cov):
    d = np.sqrt(np.maximum(np.diag(cov), 1e-30))
    out = cov / d[:, None]  # then in place: one new array, not two, of the stage's largest size
    out /= d
    np.fill_diagonal(out, 1.0)
    return out
