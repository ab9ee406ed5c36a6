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


STEPS = 32  # the greedy OBS order removes channels in this many blocks
GREEDY_MAX = 1024  # rows of a consumer up to which its inverse covariance follows the removals


def obs_cost(members, channels):
    """OBS cost of each channel, summed over the consumers ("in" members), after its mean
    is folded into the bias: energy_q * var_q, energy the channel's squared weights.

    Where a consumer's input covariance is known (Member.cov), var_q is the variance the
    kept channels cannot predict (1 / (H^-1)_qq), and channels are ranked greedily: the
    cheapest block goes first, the others' costs are recomputed without it (so of two
    twins only one looks cheap), and a channel's score is its cost when it went (kept
    non-decreasing along the order)."""
    state, shared = [], {}
    for m in members:
        energy = (m.rows.astype(np.float64) ** 2).reshape(len(m.channel), -1).sum(1)
        known = m.cov is not None or m.cov_factor is not None
        if known and m.cov_key in shared:  # query, key and value read one tensor
            shared[m.cov_key].energy += energy
            continue
        var = np.ones(len(m.channel)) if m.var is None else m.var
        hinv = None
        if known:
            width = len(m.channel)
            factor = m.cov_factor  # float32 where stored so
            trace = np.trace(m.cov) if m.cov is not None else np.einsum("ij,ij->", factor, factor, dtype=np.float64)
            lam = m.ridge * max(float(trace) / width, 1e-30)
            if width > GREEDY_MAX:  # too wide to update: the variance given all other channels
                var = 1 / np.maximum(_inverse_diag(m.cov, lam, factor), 1e-30)
            elif m.cov is None and len(factor) < width:
                hinv = _woodbury_inverse(factor, lam)
            else:
                cov = m.cov if m.cov is not None else _gram_of(factor)
                hinv = np.linalg.inv(cov + lam * np.eye(width))
        state.append(_Consumer(m, energy, var, hinv))
        if known:
            shared[m.cov_key] = state[-1]
    if all(s.hinv is None for s in state):  # nothing to recompute: one pass
        return sum(np.bincount(s.m.channel, weights=s.energy * s.var, minlength=channels) for s in state)
    alive, score, level = np.ones(channels, bool), np.zeros(channels), 0.0
    block = max(1, -(-channels // STEPS))
    while alive.any():
        cost = np.zeros(channels)
        for s in state:
            cost += np.bincount(s.m.channel[s.rows], weights=s.energy[s.rows] * s.cond(), minlength=channels)
        cand = np.flatnonzero(alive)
        pick = cand[np.argsort(cost[cand], kind="stable")[:block]]
        score[pick] = np.maximum(cost[pick], level)
        level = float(score[pick].max())
        alive[pick] = False
        for s in state:
            _drop(s, np.isin(s.m.channel[s.rows], pick))
    return score


def _drop(s, gone):
    """Let the member rows marked `gone` (among the alive s.rows) leave s. The inverse of the
    kept rows' matrix is H^-1_kk - H^-1_kq (H^-1_qq)^-1 H^-1_qk: updated in place on the
    whole matrix (the gone rows and columns fall to zero) and compacted once half of it is
    gone; a fresh matrix per step cost more in page faults than its products."""
    if s.hinv is None or not gone.any():
        s.rows = s.rows[~gone]
        return
    if gone.all():
        s.hinv, s.slots, s.out, s.rows = np.zeros((0, 0)), s.rows[:0], None, s.rows[:0]
        return
    at = np.searchsorted(s.slots, s.rows[gone])
    n = len(s.hinv)
    out = s.out[:n * n].reshape(n, n)
    np.matmul(s.hinv[:, at], np.linalg.solve(s.hinv[np.ix_(at, at)], s.hinv[at]), out=out)
    s.hinv -= out
    s.rows = s.rows[~gone]
    if 2 * len(s.rows) <= n:
        keep = np.searchsorted(s.slots, s.rows)
        s.hinv, s.slots = s.hinv[np.ix_(keep, keep)], s.rows


class _Consumer:
    """One consumer's state in the greedy order: its member, squared weights per row,
    variances (where no inverse is followed), the inverse covariance over member rows
    `slots`, the alive member rows, and a buffer for the updates."""

    def __init__(self, m, energy, var, hinv):
        self.m, self.energy, self.var, self.hinv = m, energy, var, hinv
        self.rows = self.slots = np.arange(len(m.channel))
        self.out = None if hinv is None else np.empty(hinv.size)

    def cond(self):
        """Each alive row's variance given the other alive rows."""
        if self.hinv is None:
            return self.var[self.rows]
        return 1 / np.maximum(np.diag(self.hinv)[np.searchsorted(self.slots, self.rows)], 1e-30)


def _gram_of(factor):
    """F^T F in float64."""
    f = factor.astype(np.float64, copy=False)
    return f.T @ f


def _woodbury_inverse(factor, lam):
    """(F^T F + lam I)^-1 = (I - F^T (lam I + F F^T)^-1 F) / lam for F [r, n], r < n: an
    r x r solve instead of an n x n inverse (MobileNetV2's 960-wide inputs, 392 probe rows)."""
    f = factor.astype(np.float64)
    k = f @ f.T
    k[np.diag_indices_from(k)] += lam
    out = f.T @ np.linalg.solve(k, f)
    out *= -1 / lam
    out[np.diag_indices_from(out)] += 1 / lam
    return out


def _inverse_diag(cov, lam, factor=None):
    """diag((cov + lam I)^-1); through Woodbury's identity when cov = F^T F with F [r, n],
    r < n: (1 - diag(F^T (lam I_r + F F^T)^-1 F)) / lam, an r x r solve instead of an n x n
    inverse (the MNIST CNN's 3136-wide classifier input, 256 probe samples: 1.8 s -> 0.02 s)."""
    if factor is not None and (cov is None or len(factor) < factor.shape[1]):
        # with f = F / sqrt(lam) (float32 products that cannot overflow on huge activations) and
        # I + f f^T = L L^T, the diagonal is the column sums of (L^-1 f)^2: products, not a solve
        # for n right-hand sides (ViT-B/16's 3072-wide inputs: 0.78 -> 0.28 s each, 4e-8 apart)
        f = (factor / np.sqrt(lam)).astype(np.float32)
        k = (f @ f.T).astype(np.float64)
        k[np.diag_indices_from(k)] += 1.0
        try:
            w = _lower_inverse(np.linalg.cholesky(k)).astype(np.float32) @ f
            return (1 - np.einsum("ij,ij->j", w, w, dtype=np.float64)) / lam
        except np.linalg.LinAlgError:  # not positive definite in floating point
            return (1 - np.einsum("ij,ij->j", f, np.linalg.solve(k, f), dtype=np.float64)) / lam
    h = cov + lam * np.eye(len(cov))
    try:  # diag(H^-1) = column sums of (L^-1)^2, H = L L^T: a third of inv's products
        inv_l = _lower_inverse(np.linalg.cholesky(h))
        return np.einsum("ij,ij->j", inv_l, inv_l)
    except np.linalg.LinAlgError:  # not positive definite in floating point
        return np.diag(np.linalg.inv(h))


def _lower_inverse(low):
    """Inverse of a lower triangular matrix, by halves: [[A, 0], [B, C]]^-1 =
    [[A^-1, 0], [-C^-1 B A^-1, C^-1]]."""
    n = len(low)
    if n <= 256:
        return np.linalg.inv(low)
    h = n // 2
    a, c = _lower_inverse(low[:h, :h]), _lower_inverse(low[h:, h:])
    out = np.zeros_like(low)
    out[:h, :h], out[h:, h:] = a, c
    out[h:, :h] = -(c @ low[h:, :h]) @ a
    return out


@register("obspa")
def obspa(members, channels, rng):
    """OBS cost over the consumers whose input statistics are known (spa.moments, or the
    synthetic probe of spa.probe); L2 magnitude of every member where none are."""
    ins = [m for m in members if m.role == "in" and m.var is not None]
    return obs_cost(ins, channels)[None] if ins else l2(members, channels, rng)


obspa.needs_stats = True
