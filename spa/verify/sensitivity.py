"""Measured sensitivity: how much the model's outputs change, on calibration data, when
one group alone loses its lowest-scored channels (with the prune's compensation), at a
few removal levels. A global plan then spends its MACs budget where the measured error
per MACs saved is lowest, instead of comparing scores normalised per group."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..edit import fold_means, keep_map
from ..graph import oracle_mask, removed_elements
from ..runtime import run, session
from .masked import masked

LEVELS = (0.125, 0.25, 0.5, 0.8)  # shares of a group's channels removed at the measured points
SAMPLES = 32  # calibration samples the error is measured on


class Curve(NamedTuple):
    """A group's measured output error (relative squared error of all float outputs)
    after removing its `counts[i]` lowest-scored channels; counts[0] = 0, error 0."""

    counts: np.ndarray
    errors: np.ndarray

    def at(self, k) -> float:
        return float(np.interp(k, self.counts, self.errors))


def sensitivity(proto, coupling, scores, stats, data, compensate=True, max_ratio=0.8, batch=16,
                progress=None) -> dict:
    """{group id: Curve} for every scored group of the main graph.

    Args:
        proto: the loaded original model (load.Model.proto).
        coupling: its graph.Coupling.
        scores: {group id: channel scores}; channels go lowest first.
        stats: the criterion's statistics (compensation replays the prune's fold).
        data: {input: array} calibration samples; the first SAMPLES are used.
        compensate: replay the prune's compensation (edit.fold_means) in each measurement.
        max_ratio: the largest share of a group measured (the plan never removes more).
        batch: samples per onnxruntime run (a model with a fixed batch gets its own).
        progress: optional callable(i, n, name) after each group.
    """
    feeds = {k: np.asarray(v[:SAMPLES]) for k, v in data.items()}
    reference = _run(proto, feeds, batch)
    groups = {g.id: g for g in coupling.groups}
    ids = [gid for gid in sorted(scores) if gid in groups]
    curves = {}
    for i, gid in enumerate(ids):
        order = np.argsort(scores[gid], kind="stable")
        n = len(order)
        counts = sorted({min(n - 1, max(1, round(f * n))) for f in LEVELS if f <= max_ratio + 1e-9})
        errors = [_error(proto, coupling, stats, {gid: np.sort(order[:k])}, feeds, reference, compensate, batch)
                  for k in counts]
        errs = np.maximum.accumulate(np.maximum(errors, 0.0))  # removing more never helps
        curves[gid] = Curve(np.array([0] + counts), np.concatenate([[0.0], errs]))
        if progress is not None:
            progress(i + 1, len(ids), f"group {gid}")
    return curves


def _error(proto, coupling, stats, plan, feeds, reference, compensate, batch) -> float:
    updates = ()
    if compensate:
        removed = removed_elements(coupling.groups, plan)
        updates = fold_means(coupling.cg.copy(), stats, removed, keep_map(coupling.cg, removed))
    outs = _run(masked(proto, oracle_mask(coupling, plan), updates), feeds, batch)
    num = den = 0.0
    for name, want in reference.items():
        if np.issubdtype(want.dtype, np.floating):
            num += float(np.square(outs[name].astype(np.float64) - want).sum())
            den += float(np.square(want.astype(np.float64)).sum())
    return num / den if den else num


def _run(model, feeds, batch) -> dict:
    sess, n = session(model), len(next(iter(feeds.values())))
    parts = [run(sess, {k: v[i:i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
