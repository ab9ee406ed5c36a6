"""Turn a criterion's per-member scores into one score per channel of each group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import criteria
from .errors import UsageError

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

    def per_channel(self, row_values):
        """Sum any per-row values (reduced over the other axes) into channels."""
        flat = row_values.reshape(len(self.channel), -1).sum(axis=1)
        return np.bincount(self.channel, weights=flat, minlength=self.channels)


def members(cg, group) -> list[Member]:
    """The group's parameter slices, producers first; running statistics are left out."""
    out = []
    for (name, axis), (pos, chan) in group.spaces.items():
        attrs = cg.g.nodes[(name, axis)]
        if not attrs["param"] or attrs["role"] == "stat":
            continue
        value = cg.ctx.const(cg.ctx.tensors[name])
        if value.dtype.kind != "f":
            continue
        if len(pos) != value.shape[axis]:
            value = np.take(value, pos, axis=axis)
        rows = np.moveaxis(value, axis, 0)
        out.append(Member(name, axis, attrs["role"], rows, chan, group.channels))
    out.sort(key=lambda m: ROLE_ORDER.get(m.role, 3))
    return out


def score(cg, groups, criterion="l2", reduce="mean", seed=0) -> dict:
    """{group id: scores [channels]} for the prunable groups."""
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")
    fn = criteria.get(criterion)
    rng = np.random.default_rng(seed)
    out = {}
    for gr in groups:
        if not gr.prunable:
            continue
        mem = members(cg, gr)
        if not mem:
            out[gr.id] = np.zeros(gr.channels)
            continue
        per = np.asarray(fn(mem, gr.channels, rng), dtype=np.float64).reshape(-1, gr.channels)
        if reduce == "first" or len(per) == 1:
            out[gr.id] = per[0]
        else:
            out[gr.id] = getattr(np, reduce)(per, axis=0)
    return out
