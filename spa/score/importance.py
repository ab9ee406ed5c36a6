"""Turn a criterion's per-member scores into one score per channel of each group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..rules import data_axis
from . import criteria
from .calib import Measured
from .moments import Moments
from .probe import with_probe
from .weights import consumer_of

REDUCTIONS = ("mean", "sum", "max", "first")
ROLE_ORDER = {"out": 0, "in": 1, "elem": 2, None: 3}


@dataclass
class Member:
    """One parameter slice of a group: `rows` has the channel axis first, one row per
    element of that axis in the group; `channel[i]` says which channel row i belongs to."""

    name: str
    axis: int
    role: str | None
    rows: np.ndarray
    channel: np.ndarray
    channels: int
    op: str = ""  # op type of the node that uses the parameter
    slot: int = -1  # which input of that node it is
    mean: np.ndarray | None = None  # for "in" members: statistics of the input channel each row reads
    var: np.ndarray | None = None
    cov: np.ndarray | None = None  # covariance of those input channels, row by row, where known (or cov_factor)
    ridge: float = 0.0  # how far the ranking trusts cov (ChannelStats.score_ridge)
    cov_key: tuple = ()  # equal for members reading the same channels of one tensor
    cov_factor: np.ndarray | None = None  # F with cov = F^T F, where fewer samples than channels measured it (cov None)
    xg: np.ndarray | None = None  # with calibration data: E[x * d(||y||^2/2)/dx] of that channel

    def per_channel(self, row_values):
        """Sum any per-row values (reduced over the other axes) into channels."""
        flat = row_values.reshape(len(self.channel), -1).sum(axis=1)
        return np.bincount(self.channel, weights=flat, minlength=self.channels)


def members(cg, group, stats=None) -> list[Member]:
    """The group's parameter slices, producers first; running statistics and the stored
    form of quantized weights (read dequantized instead) are left out.
    With `stats` (moments.Moments), "in" members carry their input channels' statistics."""
    out = []
    for (name, axis), (pos, chan) in group.spaces.items():
        attrs = cg.g.nodes[(name, axis)]
        if not attrs["param"] or attrs["role"] in ("stat", "quant"):
            continue
        value = cg.ctx.const(cg.ctx.tensors[name])
        if value.dtype.kind != "f":
            continue
        whole = _whole(pos, value.shape[axis])
        if not whole:
            value = np.take(value, pos, axis=axis)
        rows = np.moveaxis(value, axis, 0)
        t = cg.ctx.tensors[name]
        user = t.outputs[0] if t.outputs else None
        slot = next((i for i, x in enumerate(user.inputs) if x is t), -1) if user is not None else -1
        if user is not None and user.op == "Transpose" and len(t.outputs) == 1:
            node, _, _ = consumer_of(cg.ctx, t, axis)  # a weight transposed at run time
            if node is not None:
                user, slot = node, 1
        m = Member(name, axis, attrs["role"], rows, chan, group.channels, user.op if user else "", slot)
        x = user.inputs[0] if user is not None else None
        x_axis = data_axis(user) if user is not None else None
        if stats is not None and m.role == "in" and slot == 1 and x_axis is not None \
                and stats.known(x, x_axis, attrs["size"]):
            mean, var = stats.at(x, x_axis % (cg.ctx.rank(x) or 1), attrs["size"])
            m.mean, m.var = (mean, var) if whole else (mean[pos], var[pos])
            ax = x_axis % (cg.ctx.rank(x) or 1)
            f = stats.cov_factor(x, ax, attrs["size"])
            cov = None if f is not None else stats.cov(x, ax, attrs["size"])
            if cov is not None or f is not None:
                m.cov = None if cov is None else cov if whole else cov[np.ix_(pos, pos)]  # a view where all are in
                m.cov_factor = None if f is None else f if whole else f[:, pos]
                m.ridge = stats.source(x, ax, attrs["size"]).score_ridge
                m.cov_key = (x.name, pos.tobytes())
            xg = stats.xg(user)
            if xg is not None and len(xg) == attrs["size"]:
                m.xg = xg[pos]
        out.append(m)
    out.sort(key=lambda m: ROLE_ORDER.get(m.role, 3))
    return out


def _whole(pos, n) -> bool:
    """pos is 0, 1, ..., n - 1: the member holds every element of its axis, in order."""
    return len(pos) == n and bool(np.all(pos == np.arange(n)))


def check_reduce(reduce):
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")


def check_criterion(criterion, calib_given: bool, recovering: bool = False):
    """The criterion to use (None: the caller's default), checked against the data given:
    calibration data without a criterion selects "obs" (it uses the data best, see
    docs/accuracy.md); a criterion that needs data refuses to run without it, and one
    that reads none refuses it unless recovery (spa.recover) reads it."""
    if calib_given and criterion is None:
        criterion = "obs"
    needs_calib = criterion is not None and getattr(criteria.get(criterion), "needs_calib", False)
    if not calib_given and needs_calib:
        raise UsageError(f"criterion {criterion!r} needs calibration data: give --calib inputs.npz "
                         "(or a folder of <input>.npy files)")
    if calib_given and not needs_calib and not recovering:
        raise UsageError(f"criterion {criterion!r} reads no calibration data and recovery is off: drop --calib, "
                         "use obs, taylor or hessian, or leave recovery on")
    return criterion


def statistics(cg, criterion, calib=None, like=None):
    """What a criterion reads besides the weights: propagated moments (needs_stats) with
    a synthetic probe where they are not anchored (spa.probe), measured ones (needs_calib:
    `calib` holds the calibration inputs), or None. `like`: statistics of the same model
    from an earlier call, whose probe is reused."""
    fn = criteria.get(criterion)
    if getattr(fn, "needs_calib", False):
        check_criterion(criterion, calib is not None)
        return Measured(cg, calib, grads=getattr(fn, "needs_grads", False))
    if not getattr(fn, "needs_stats", False):
        return None
    return with_probe(cg, Moments(cg), getattr(like, "measured", None))


def score(cg, groups, criterion="l2", reduce="mean", seed=0, stats=None) -> dict:
    """{group id: scores [channels]} for the prunable groups (`stats`: see statistics())."""
    check_reduce(reduce)
    fn = criteria.get(criterion)
    rng = np.random.default_rng(seed)
    out = {}
    for gr in groups:
        if not gr.prunable:
            continue
        mem = members(cg, gr, stats)
        if not mem:
            out[gr.id] = np.zeros(gr.channels)
            continue
        per = np.asarray(fn(mem, gr.channels, rng), dtype=np.float64).reshape(-1, gr.channels)
        if reduce == "first" or len(per) == 1:
            out[gr.id] = per[0]
        else:
            out[gr.id] = getattr(np, reduce)(per, axis=0)
    return out


class Releasing(list):
    """The groups; iterating them calls `release` after each group, so scoring holds
    one group's mapped external weights in memory at a time."""

    def __init__(self, groups, release):
        super().__init__(groups)
        self._release = release

    def __iter__(self):
        for g in list.__iter__(self):
            yield g
            self._release()
