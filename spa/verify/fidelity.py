"""How far a pruned model's outputs are from the original's on the same inputs: the
figures verification reports and `spa compare` prints."""

from __future__ import annotations

import numpy as np

from ..results import OutputFidelity

TINY = np.finfo(np.float64).tiny
NEAR_ZERO = 1e-5  # an original output no larger than this everywhere gets a note: its cosine says little


def fidelity(name: str, want: np.ndarray, got: np.ndarray | None, tol: tuple | None = None) -> OutputFidelity:
    """Compare one output of the pruned model with the original's.

    Args:
        name: the output's name.
        want: the original's output.
        got: the pruned model's output, None when it has none.
        tol: (atol, rtol): also say whether |got - want| <= atol + rtol * |want| everywhere.

    Returns:
        An OutputFidelity: max abs and rel difference, mean abs, cosine, and for classifier
        outputs ([N, C] floats, C >= 2) top-1 and top-5 agreement.
    """
    if not isinstance(want, np.ndarray) or want.dtype.kind not in "fiub":  # a sequence, map, optional, strings
        return OutputFidelity(name, tuple(getattr(want, "shape", ())), None, None, None, None, None, None, None,
                              "not a numeric tensor: not measured")
    shape = tuple(want.shape)
    if got is None or not isinstance(got, np.ndarray):
        return OutputFidelity(name, shape, None, None, None, None, None, None, None,
                              "missing in the pruned model" if got is None else "not a tensor in the pruned model",
                              None if tol is None else False)
    if got.shape != want.shape:
        return OutputFidelity(name, shape, tuple(got.shape), None, None, None, None, None, None,
                              f"shape {tuple(got.shape)} differs from {shape}", None if tol is None else False)
    a, b = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = np.abs(a - b)
    finite = np.isfinite(a).all() and np.isfinite(b).all()
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(a), TINY)).max()) if diff.size else 0.0
    within = None if tol is None else bool(finite and (diff <= tol[0] + tol[1] * np.abs(a)).all())
    top1, top5 = _agreement(want, got)
    return OutputFidelity(name, shape, shape, max_abs, max_rel, float(diff.mean()) if diff.size else 0.0,
                          _cosine(a, b, finite, max_abs), top1, top5, _note(a, finite), within)


def _note(a, finite) -> str:
    if not finite:
        return "non-finite values"
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak <= NEAR_ZERO:  # e.g. a detector's probability map on noise: nothing found, every value ~0
        return f"the original's output is near zero here (max |y| {peak:.1e}): its cosine says little"
    return ""


def _cosine(a, b, finite, max_abs) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not finite:
        return float("nan")
    if max_abs == 0:  # identical, or both all zero
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def _agreement(want, got) -> tuple:
    """(top-1, top-5) agreement of a classifier output, else (None, None)."""
    if not (want.ndim == 2 and want.shape[1] >= 2 and want.shape[0] >= 1 and want.dtype.kind == "f"):
        return None, None
    ref = want.argmax(1)
    top1 = float((got.argmax(1) == ref).mean())
    top5 = None
    if want.shape[1] > 5:
        best5 = np.argpartition(-got, 5, axis=1)[:, :5]
        top5 = float((best5 == ref[:, None]).any(1).mean())
    return top1, top5


def fidelity_all(want: dict, got: dict) -> tuple:
    """One OutputFidelity per output of the original (`want`)."""
    return tuple(fidelity(k, v, got.get(k)) for k, v in want.items())
