"""Channel statistics through ops that move data without computing on it (Transpose,
Reshape keeping the channel dim, Unsqueeze, Squeeze, Expand, Concat along another
axis) and of constants that vary along other axes (a position embedding added to every
token, a class token concatenated before the patches). Used by spa.moments: each
function takes (ctx, node, stats of input 0 or None) and returns (axis, mean, var) or
None. Positions along the other axes count as samples of the channel."""

from __future__ import annotations

import numpy as np


def channel_rows(value, axis, rank, n):
    """A constant as [n, positions]: its n channels on `axis` of a rank-`rank` tensor it
    broadcasts against (from the right), every other axis flattened; None if it does not fit."""
    v = np.asarray(value, np.float64)
    if v.ndim > rank:
        return None
    v = v.reshape((1,) * (rank - v.ndim) + v.shape)
    if v.shape[axis] not in (1, n):
        return None
    return np.moveaxis(np.broadcast_to(v, v.shape[:axis] + (n,) + v.shape[axis + 1:]), axis, 0).reshape(n, -1)


def const_stats(value, axis, rank, n):
    """Per-channel mean and variance of a constant over every other axis (see channel_rows);
    None for a constant with inf or nan (an attention mask's -inf has no moments)."""
    rows = channel_rows(value, axis, rank, n)
    return None if rows is None or not np.isfinite(rows).all() else (rows.mean(1), rows.var(1))


def transpose(ctx, node, src):
    perm = list(node.attrs.get("perm", range(ctx.rank(node.inputs[0]) or 0)[::-1]))
    return (perm.index(src[0]), src[1], src[2]) if src is not None and src[0] in perm else None


def reshape(ctx, node, src):
    """A Reshape or Flatten that keeps the channel dim whole at some output axis."""
    xs, ys = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if src is None or not xs or not ys or not all(isinstance(d, int) for d in list(xs) + list(ys)):
        return None
    before = int(np.prod(xs[:src[0]]))
    for axis in range(len(ys)):
        if ys[axis] == xs[src[0]] and int(np.prod(ys[:axis])) == before:
            return axis, src[1], src[2]
    return None


def unsqueeze(ctx, node, src):
    axes = _axes(ctx, node)
    if src is None or axes is None:
        return None
    rank = (ctx.rank(node.outputs[0]) or 0)
    kept = [a for a in range(rank) if a not in {x % rank for x in axes}]
    return (kept[src[0]], src[1], src[2]) if src[0] < len(kept) else None


def squeeze(ctx, node, src):
    axes = _axes(ctx, node)
    rank = ctx.rank(node.inputs[0]) or 0
    if src is None or axes is None or src[0] in {a % rank for a in axes}:
        return None
    return src[0] - sum(1 for a in axes if a % rank < src[0]), src[1], src[2]


def expand(ctx, node, src):
    """Expand broadcasts from the right: the channel axis keeps its distance to the end."""
    if src is None:
        return None
    shift = (ctx.rank(node.outputs[0]) or 0) - (ctx.rank(node.inputs[0]) or 0)
    return src[0] + shift, src[1], src[2]


def concat_other(ctx, node, parts):
    """Concat along an axis other than the channels': a mixture of its inputs, weighted
    by their extent along the concat axis. `parts`: the inputs' stats (None for
    constants, whose stats are taken from their values)."""
    rank = ctx.rank(node.outputs[0]) or 0
    known = [p for p in parts if p is not None]
    if not known or rank == 0:
        return None
    axis, n = known[0][0], len(known[0][1])
    cat = int(node.attrs.get("axis", 0)) % rank
    if cat == axis or any(p[0] != axis or len(p[1]) != n for p in known):
        return None
    total, mean, second = 0, np.zeros(n), np.zeros(n)
    for x, p in zip(node.inputs, parts):
        size = ctx.dim(x, cat)
        if not isinstance(size, int):
            return None
        if p is None:
            value = constant(ctx, x)
            s = None if value is None else const_stats(value, axis, rank, n)
            if s is None:
                return None
            p = (axis, *s)
        total += size
        mean += size * p[1]
        second += size * (p[2] + p[1] ** 2)
    mean /= total
    return axis, mean, np.maximum(second / total - mean ** 2, 0)


def constant(ctx, t):
    """A constant's value, also through Expand/Unsqueeze/Identity of one (values
    broadcast, so statistics over the other axes are the same)."""
    while ctx.const(t) is None and len(t.inputs) == 1 and t.inputs[0].op in ("Expand", "Unsqueeze", "Identity"):
        t = t.inputs[0].inputs[0]
    return ctx.const(t)


def _axes(ctx, node):
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    return ctx.ints(node.inputs[1]) if len(node.inputs) > 1 else None
