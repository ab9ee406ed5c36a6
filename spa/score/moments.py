"""Data-free channel statistics: the mean and variance of every activation channel,
propagated through the graph without running it.

BatchNorm and LayerNorm outputs take the statistics the model carries (beta, gamma);
elementwise activations push a Gaussian through the function by quadrature; linear
ops assume independent inputs; a float graph input is taken as standardised. A
tensor whose statistics are unknown gets none, and its consumers fall back to mean 0,
variance 1 (plain magnitude).

Then the channel means are corrected with what the model measured downstream: a
BatchNormalization's running mean right after a Conv or Gemm is that layer's output
mean, a linear function of its input's channel means. The means closest to the
propagated ones that fit those running means (least squares, ridge towards the
propagated values) replace them.
"""

from __future__ import annotations


import numpy as np

from . import layout
from ..io.quant import past_fake_quant
from .correlation import Correlations
from ..rules import ACTIVATIONS as UNARY
from ..rules import ARITHMETIC as BINARY
from ..rules import sigmoid
from .gauss import W, Z, scalar
from .weights import read, weight

ANCHORS = ("BatchNormalization", "LayerNormalization", "InstanceNormalization")
LAYOUT = {"Transpose": layout.transpose, "Unsqueeze": layout.unsqueeze,
          "Squeeze": layout.squeeze, "Expand": layout.expand}
TRACED = set(UNARY) | set(BINARY)
DEPTH = 8  # ops an elementwise function may span


def push(f, mean, var):
    """Mean and variance of f(z) for z ~ N(mean, var), per channel."""
    z = mean[:, None] + np.sqrt(np.maximum(var, 0))[:, None] * Z[None, :]
    y = f(z)
    m = y @ W
    return m, np.maximum((y * y) @ W - m * m, 0)


class ChannelStats:
    """`map`: {tensor name: (axis, mean, var)} for the channel axis of each activation."""

    ctx = None
    map: dict = {}

    def fits(self, t, axis, n) -> bool:
        """True when there are statistics for `n` channels on `axis` of tensor t."""
        s = self.map.get(t.name)
        rank = self.ctx.rank(t) or 1
        return s is not None and s[0] % rank == axis % rank and len(s[1]) == n

    def known(self, t, axis, n) -> bool:
        """True when those statistics can rank channels (see Moments.known)."""
        return self.fits(t, axis, n)

    def at(self, t, axis, n):
        """(mean, var) of `n` channels on `axis` of tensor t; zeros/ones when there are none."""
        if not self.fits(t, axis, n):
            return np.zeros(n), np.ones(n)
        s = self.map[t.name]
        return s[1], s[2]

    def xg(self, node):
        """taylor's E[x_c * g_c] per input channel of a layer, where measured (spa.calib)."""
        return None

    def source(self, t, axis, n):
        """The statistics that answer for tensor t (spa.probe.Probed mixes two)."""
        return self

    ridge = 1e-3  # regularisation of cov() regressions, relative to the mean variance
    score_ridge = 0.03  # the same for the greedy OBS ranking (criteria/obs.py)

    def cov(self, t, axis, n):
        """Covariance [n, n] of the channels on `axis` of tensor t, or None where unknown."""
        return None

    def cov_factor(self, t, axis, n):
        """F [r, n] with cov = F^T F when the covariance was measured from fewer samples r
        than channels n (then cheaper to invert through F), else None."""
        return None


class Moments(ChannelStats):
    """Channel statistics propagated through the graph (see the module docstring)."""

    def __init__(self, cg):
        self.ctx = cg.ctx
        self.map: dict = {}
        self._corr, self._covs = None, {}
        self.functions: dict = {}  # tensor name: (source, f) where the tensor is f(source) elementwise
        self.anchored: set = set()  # tensors downstream of a normalisation's statistics or an embedding table
        for t in cg.model.graph.inputs:
            shape = self.ctx.shape(t)
            if shape and len(shape) >= 2 and isinstance(shape[1], int) and t.dtype is not None \
                    and np.dtype(t.dtype).kind == "f":
                self.map[t.name] = (1, np.zeros(shape[1]), np.ones(shape[1]))
        for node, _, _ in cg.flows:
            try:
                out = self._node(node)
            except (ValueError, IndexError, TypeError, KeyError):  # odd shapes: no statistics
                out = None
            if out is not None:
                rank = self.ctx.rank(node.outputs[0]) or 1
                self.map[node.outputs[0].name] = (out[0] % rank, out[1], out[2])
                if node.op in ANCHORS or (node.op == "Gather" and self.ctx.const(node.inputs[0]) is not None) \
                        or any(x.name in self.anchored for x in node.inputs):
                    self.anchored.add(node.outputs[0].name)
        self._refine_means()

    def known(self, t, axis, n) -> bool:
        """Only statistics anchored in what the model carries rank channels: where they
        rest on the standardised-input guess alone, OBSPA ranks the consumers by
        magnitude and derives no correlations (on BatchNorm-folded MNIST CNNs the guess
        ranked channels worse than magnitude). The bias fold still uses their means."""
        return t.name in self.anchored and self.fits(t, axis, n)

    # Estimated correlations: the regression that compensates uses them nearly as they
    # are (a wrong coefficient costs at most what dropping the channel costs), the ranking
    # shrinks them hard (a wrong ranking removes a needed channel for good).
    ridge = 0.03
    score_ridge = 1.0

    def cov(self, t, axis, n):
        """Covariance from spa.correlation's propagated correlations and these variances."""
        if not self.known(t, axis, n):
            return None
        if t.name not in self._covs:
            s = self.map[t.name]
            if self._corr is None:
                self._corr = Correlations(self)
            r = self._corr.corr(t, n)
            sd = np.sqrt(np.maximum(s[2], 0))
            self._covs[t.name] = None if r is None else r * sd[:, None] * sd[None, :]
        return self._covs[t.name]

    def _refine_means(self):
        for name, (axis, mean, var) in list(self.map.items()):
            t = self.ctx.tensors.get(name)
            if t is None or axis != 1:
                continue
            rows = []
            for node in t.outputs:
                if node.op in ("Conv", "Gemm") and node.inputs[0] is t:
                    fit = _measured(self.ctx, node, len(mean))
                    if fit is not None and np.all(np.isfinite(fit[0])) and np.all(np.isfinite(fit[1])):
                        rows.append(fit)
            if not rows:
                continue
            a = np.concatenate([f[0] for f in rows])
            r = np.concatenate([f[1] for f in rows])
            gram = a @ a.T
            lam = RIDGE * max(float(np.trace(gram)) / len(gram), 1e-30)
            fixed = mean + a.T @ np.linalg.solve(gram + lam * np.eye(len(gram)), r - a @ mean)
            self.map[name] = (axis, fixed, var)
            self.anchored.add(name)

    def _in(self, node, i=0):
        t = node.inputs[i]
        return self.map.get(t.name)

    def _node(self, node):
        op, ctx = node.op, self.ctx
        src = self._in(node) if node.inputs else None
        if op == "BatchNormalization":
            gamma, beta = read(ctx, node.inputs[1]), read(ctx, node.inputs[2])
            if gamma is None or beta is None:
                return None
            return 1, beta.astype(np.float64), gamma.astype(np.float64) ** 2
        if op in ("LayerNormalization", "InstanceNormalization"):
            scale = read(ctx, node.inputs[1])
            bias = read(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            if scale is None or scale.ndim != 1:
                return None
            axis = -1 if op == "LayerNormalization" else 1
            return axis, (bias if bias is not None else np.zeros_like(scale)).astype(np.float64), \
                scale.astype(np.float64) ** 2
        if src is None and op not in ("Conv", "Gemm", "MatMul", "Gather", "Add", "Mul", "Concat"):
            return None
        if op in UNARY:
            attrs = node.attrs
            return src[0], *push(lambda x: UNARY[op](x, attrs), src[1], src[2])
        if op == "Clip":
            lo = scalar(ctx, node, 1, -np.inf)
            hi = scalar(ctx, node, 2, np.inf)
            return src[0], *push(lambda x: np.clip(x, lo, hi), src[1], src[2])
        if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "Pad",
                  "Cast"):
            return src
        if op in ("QuantizeLinear", "DequantizeLinear"):
            return _quantized(ctx, node, src)
        if op == "Flatten" or op == "Reshape":
            return self._flatten(node, src) or layout.reshape(ctx, node, src)
        if op in LAYOUT:
            return LAYOUT[op](ctx, node, src)
        if op in ("Add", "Sub", "Mul", "Div"):
            return self._binary(node)
        if op in ("Conv", "Gemm", "MatMul"):
            return self._linear(node, src)
        if op == "Concat":
            parts = [self._in(node, i) for i in range(len(node.inputs))]
            axis = int(node.attrs["axis"]) % (ctx.rank(node.outputs[0]) or 1)
            if any(p is None or p[0] != axis for p in parts):
                return layout.concat_other(ctx, node, parts)
            return axis, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
        if op == "Gather" and ctx.const(node.inputs[0]) is not None:
            table = ctx.const(node.inputs[0])
            if table.ndim != 2 or int(node.attrs.get("axis", 0)) != 0:
                return None
            return (-1, *_column_moments(table))
        return None

    def _flatten(self, node, src):
        xs, ys = self.ctx.shape(node.inputs[0]), self.ctx.shape(node.outputs[0])
        if not xs or not ys or len(ys) != 2 or src[0] % len(xs) != 1 or not all(isinstance(d, int) for d in xs[1:]):
            return None
        if int(np.prod(xs[1:])) != ys[1]:
            return None
        inner = int(np.prod(xs[2:]))
        return 1, np.repeat(src[1], inner), np.repeat(src[2], inner)

    def _binary(self, node):
        ctx = self.ctx
        a, b = node.inputs[0], node.inputs[1]
        if node.op in ("Add", "Mul") and ctx.const(a) is not None and ctx.const(b) is None:
            a, b = b, a  # bias + x, scale * x
        sa, sb = self.map.get(a.name), self.map.get(b.name)
        cb = ctx.const(b)
        op = node.op
        if cb is None and sa is not None and sb is not None:
            joint = self._composite(node)
            if joint is not None:
                return joint
        if op == "Mul" and sa is not None and len(b.inputs) == 1 and b.inputs[0].op == "Sigmoid" \
                and b.inputs[0].inputs[0] is a:  # SiLU
            return sa[0], *push(lambda x: x * sigmoid(x), sa[1], sa[2])
        if sa is not None and cb is not None:
            c = _per_channel(cb, sa, ctx.rank(a))
            if c is None and op in ("Add", "Sub"):  # varies along other axes (a position embedding)
                rank = ctx.rank(node.outputs[0]) or 1
                cs = layout.const_stats(cb, sa[0] + rank - (ctx.rank(a) or rank), rank, len(sa[1]))
                if cs is None:
                    return None
                return sa[0], sa[1] + (cs[0] if op == "Add" else -cs[0]), sa[2] + cs[1]
            if c is None:
                return None
            if op == "Add":
                return sa[0], sa[1] + c, sa[2]
            if op == "Sub":
                return sa[0], sa[1] - c, sa[2]
            if op == "Mul":
                return sa[0], sa[1] * c, sa[2] * c * c
            return sa[0], sa[1] / c, sa[2] / (c * c)
        if sa is not None and sb is not None and sa[0] == sb[0] and len(sa[1]) == len(sb[1]):
            if op == "Add":
                return sa[0], sa[1] + sb[1], sa[2] + sb[2]
            if op == "Sub":
                return sa[0], sa[1] - sb[1], sa[2] + sb[2]
            if op == "Mul":
                return sa[0], sa[1] * sb[1], sa[2] * sb[2] + sa[2] * sb[1] ** 2 + sb[2] * sa[1] ** 2
        return None

    def _composite(self, node):
        """Statistics of an elementwise function of one tensor, such as GELU written as
        x * 0.5 * (1 + erf(x / sqrt 2)): both operands are traced back through
        elementwise ops to a common source with statistics, and the whole function is
        pushed through at once (its operands are not independent)."""
        src = node.inputs[0]
        for _ in range(DEPTH):
            s = self.map.get(src.name)
            if s is not None:
                f = self._trace(node.outputs[0], src, s, DEPTH)
                if f is not None:
                    self.functions[node.outputs[0].name] = (src, f)
                    return s[0], *push(f, s[1], s[2])
            if len(src.inputs) != 1 or src.inputs[0].op not in TRACED or not src.inputs[0].inputs:
                return None
            src = src.inputs[0].inputs[0]
        return None

    def _trace(self, t, src, s, depth):
        """f with t = f(src) elementwise, f acting on [channels, points] arrays; or None."""
        if t is src:
            return lambda z: z
        c = self.ctx.const(t)
        if c is not None:
            v = _per_channel(c, s, self.ctx.rank(src) or 1)
            return None if v is None else (lambda z, v=v: v[:, None])
        if depth == 0 or len(t.inputs) != 1 or t.inputs[0].op not in TRACED:
            return None
        node = t.inputs[0]
        args = [self._trace(x, src, s, depth - 1) for x in node.inputs[:2]]
        if any(f is None for f in args):
            return None
        op, attrs = node.op, node.attrs
        if op in UNARY:
            return lambda z: UNARY[op](args[0](z), attrs)
        if op in BINARY:
            return lambda z: BINARY[op](args[0](z), args[1](z))
        return None

    def _linear(self, node, src):
        ctx = self.ctx
        x, w = node.inputs[0], weight(ctx, node.inputs[1])
        if w is None:
            return None
        w = w.astype(np.float64)
        if node.op == "Conv":
            if int(node.attrs.get("group", 1)) != 1:
                return None
            mean, var = self.at(x, 1, w.shape[1])
            wk = w.reshape(w.shape[0], w.shape[1], -1)
            m = np.einsum("ock,c->o", wk, mean)
            v = np.einsum("ock,c->o", wk * wk, var)
            b = read(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            return 1, m + (b if b is not None else 0), v
        if node.op == "Gemm":
            if node.attrs.get("transA", 0):
                return None
            wt = w.T if node.attrs.get("transB", 0) else w
            mean, var = self.at(x, 1, wt.shape[0])
            c = read(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            bias = c.reshape(-1) if c is not None and c.size == wt.shape[1] else 0
            return 1, mean @ wt + bias, var @ (wt * wt)
        if w.ndim != 2:
            return None
        mean, var = self.at(x, -1, w.shape[0])
        return -1, mean @ w, var @ (w * w)


def _quantized(ctx, node, src):
    """Statistics through QuantizeLinear (x / scale + zero point) or DequantizeLinear
    ((x - zero point) * scale), rounding left out; scales per tensor or per channel."""
    scale = ctx.const(node.inputs[1])
    zp = ctx.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if scale is None:
        return None
    n = len(src[1])
    rank = ctx.rank(node.inputs[0]) or 1
    if scale.size != 1 and (int(node.attrs.get("axis", 1)) % rank != src[0] % rank or scale.size != n):
        return None
    s = np.broadcast_to(scale.astype(np.float64).reshape(-1), (n,))
    z = np.broadcast_to(np.zeros(1) if zp is None else zp.astype(np.float64).reshape(-1), (n,))
    if node.op == "QuantizeLinear":
        return src[0], src[1] / s + z, src[2] / (s * s)
    return src[0], (src[1] - z) * s, src[2] * s * s


RIDGE = 1.0  # relative weight of the propagated means against the running means


def _measured(ctx, node, n):
    """(A, r): the running mean r of the BatchNormalization right after a Conv or Gemm
    `node`, as A @ input channel means (n channels; Conv taps weighted by the share of
    output positions where they read inside the padding). None if not applicable."""
    users = past_fake_quant(node.outputs[0]).outputs
    if len(users) != 1 or users[0].op != "BatchNormalization" or len(users[0].inputs) < 5:
        return None
    rm = read(ctx, users[0].inputs[3])
    w = weight(ctx, node.inputs[1]) if len(node.inputs) > 1 else None
    if rm is None or w is None:
        return None
    w = w.astype(np.float64)
    b = read(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    r = rm.astype(np.float64).reshape(-1) - (b.reshape(-1) if b is not None and b.size == rm.size else 0)
    if node.op == "Gemm":
        if node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0:
            return None
        a = w if node.attrs.get("transB", 0) else w.T
    else:
        g = int(node.attrs.get("group", 1))
        cov = _coverage(ctx, node, w.shape[2:])
        if cov is None or w.shape[1] * g != n:
            return None
        taps = (w.reshape(w.shape[0], w.shape[1], -1) * cov.reshape(1, 1, -1)).sum(2)
        a = np.zeros((w.shape[0], n))
        per = w.shape[0] // g
        for j in range(g):
            a[j * per:(j + 1) * per, j * w.shape[1]:(j + 1) * w.shape[1]] = taps[j * per:(j + 1) * per]
    if a.shape != (len(r), n):
        return None
    return a, r


def _coverage(ctx, node, kernel):
    """Share of output positions at which each kernel tap reads inside the input."""
    xs = ctx.shape(node.inputs[0])
    if not xs or len(xs) != 2 + len(kernel) or not all(isinstance(d, int) for d in xs[2:]):
        return None
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    nd = len(kernel)
    strides = list(node.attrs.get("strides", [1] * nd))
    dil = list(node.attrs.get("dilations", [1] * nd))
    pads = list(node.attrs.get("pads", [0] * 2 * nd))
    out = np.ones(())
    for d in range(nd):
        size, k = xs[2 + d], kernel[d]
        n_out = (size + pads[d] + pads[nd + d] - dil[d] * (k - 1) - 1) // strides[d] + 1
        if n_out <= 0:
            return None
        pos = np.arange(n_out)[:, None] * strides[d] - pads[d] + np.arange(k)[None, :] * dil[d]
        share = ((pos >= 0) & (pos < size)).mean(0)
        out = np.multiply.outer(out, share)
    return out.reshape(-1)


def _per_channel(c, s, rank):
    """A constant operand as one value per channel of `s`, or None if it varies otherwise."""
    n = len(s[1])
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    axis = s[0] % rank
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape[axis] == n and int(np.prod(shape)) == n:
        return c.reshape(-1).astype(np.float64)
    return None


def _column_moments(table):
    """(mean, variance) of each column of a 2-D table, summed in float64 without a float64
    copy of the table (an embedding of 30522 x 384: 0.57 s -> 0.02 s)."""
    n = len(table)
    mean = table.sum(0, dtype=np.float64) / n
    centred = table - mean.astype(table.dtype)
    return mean, np.einsum("ij,ij->j", centred, centred, dtype=np.float64) / n
