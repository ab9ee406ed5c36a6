"""Ridge least squares from accumulated Gram matrices, one solve per group.

For every group g the fit minimises ||X W - Y||^2 + lam * s_g * ||W - W0||^2, where W0
holds the current weights and s_g is the mean diagonal of X^T X (so `lam` is unitless).
Samples whose index is 3 mod 4 are held out to pick `lam` per group, from GRID and, for a
group whose best value was the grid's largest or that no value improved yet, up to MORE further powers of ten (a
classifier fitted from one row per sample wants lam near 10); the chosen `lam` is then
refit on every row. A group keeps W0 when no candidate lowers its held-out error,
or when the final fit does not lower its error on all rows.
"""

from __future__ import annotations

import numpy as np

GRID = (1.0, 10.0, 100.0, 1000.0)  # multiples of the base ridge tried on held-out rows
MORE = 3  # times the grid goes on (x10 each) for groups whose best was its largest value


class Gram:
    """Sums of X^T X, X^T Y and Y^2 per group, for all rows and for held-out rows."""

    def __init__(self):
        self.h = self.c = self.yy = None
        self.hh = self.ch = self.yyh = None
        self.rows = 0

    def add(self, X, Y, sample):
        """Accumulate rows X [r, G, d], Y [r, G, m]; `sample` [r] are global sample indices."""
        held = (sample % 4) == 3
        parts = [self._sums(X, Y)]
        if held.any():
            parts.append(self._sums(X[held], Y[held]))
        else:
            parts.append(tuple(np.zeros_like(p) for p in parts[0]))
        if self.h is None:
            (self.h, self.c, self.yy), (self.hh, self.ch, self.yyh) = parts
        else:
            for dst, src in zip((self.h, self.c, self.yy, self.hh, self.ch, self.yyh), parts[0] + parts[1]):
                dst += src
        self.rows += len(X)

    @staticmethod
    def _sums(X, Y):
        """Products in the rows' dtype (float32: twice as fast), summed into float64."""
        xt = X.transpose(1, 2, 0)  # [G, d, r]
        f = np.float64
        return ((xt @ X.transpose(1, 0, 2)).astype(f), (xt @ Y.transpose(1, 0, 2)).astype(f),
                (Y.astype(f) ** 2).sum(0))


def errors(h, c, yy, w):
    """Squared error per group of weights w [G, d, m] under sums (h, c, yy)."""
    hw = h @ w
    return (hw * w).sum((1, 2)) - 2 * (c * w).sum((1, 2)) + yy.sum(1)


def _solve(h, c, w0, lam, dtype=np.float64):
    s = np.maximum(np.einsum("gii->g", h) / h.shape[1], 1e-12)
    reg = (np.broadcast_to(lam, s.shape) * s)[:, None, None]
    a = h + reg * np.eye(h.shape[1])[None]
    try:
        return np.linalg.solve(a.astype(dtype), (c + reg * w0).astype(dtype)).astype(np.float64)
    except np.linalg.LinAlgError:  # only with non-finite sums: keep the current weights
        return w0.copy()


def refit(gram: Gram, w0: np.ndarray, ridge: float):
    """Fitted weights per group, never worse than w0 on the measured rows.

    Args:
        gram: accumulated sums.
        w0: current weights [G, d, m].
        ridge: base regularisation, relative to the mean diagonal of X^T X.

    Returns:
        (weights [G, d, m], stats) where stats holds the squared errors before/after on all
        rows and on held-out rows, the target energy, and the share of groups kept at w0.
    """
    h, c, yy = gram.h, gram.c, gram.yy
    before = errors(h, c, yy, w0)
    fit_h, fit_c, fit_yy = h - gram.hh, c - gram.ch, yy - gram.yyh
    has_held = gram.yyh.sum() > 0 and fit_yy.sum() > 0
    lam = np.full(len(h), ridge)
    held_before = errors(gram.hh, gram.ch, gram.yyh, w0) if has_held else before
    held_after = held_before.copy()
    keep_old = np.zeros(len(h), bool)
    if has_held:  # pick lam per group on held-out rows
        best = held_before.copy()
        keep_old[:] = True
        mults = list(GRID) + [GRID[-1] * 10 ** (k + 1) for k in range(MORE)]
        todo = np.arange(len(h))
        for i, mult in enumerate(mults):
            # only picks lam: float32 is enough
            w = _solve(fit_h[todo], fit_c[todo], w0[todo], ridge * mult, np.float32)
            e = errors(gram.hh[todo], gram.ch[todo], gram.yyh[todo], w)
            better = e < best[todo]
            hit = todo[better]
            best[hit], lam[hit], keep_old[hit] = e[better], ridge * mult, False
            if i >= len(GRID) - 1:  # past the grid: go on where the largest value won or none did yet
                todo = todo[better | keep_old[todo]]
                if not len(todo):
                    break
        held_after = best
    w = w0.copy()
    groups = np.flatnonzero(~keep_old)
    if len(groups):
        w[groups] = _solve(h[groups], c[groups], w0[groups], lam[groups])
    after = errors(h, c, yy, w)
    worse = after > before
    w[worse], after[worse] = w0[worse], before[worse]
    stats = dict(before=float(before.sum()), after=float(after.sum()), held_before=float(held_before.sum()),
                 held_after=float(held_after.sum()), energy=float(yy.sum()), held_energy=float(gram.yyh.sum()),
                 kept_old=float((keep_old | worse).mean()))
    return w, stats
