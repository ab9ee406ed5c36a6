"""Verification of a pruned model before it is written."""

from __future__ import annotations

import os
import time

import numpy as np
import onnx

from ..errors import VerifyError, first_line
from ..io import full_check
from ..protos import value_infos
from ..results import Verdict
from ..runtime import run, run_original


def verify(original, pruned, feeds: dict, reference: dict | None = None,
           timings: dict | None = None, where: str = "<model>", probe: dict | None = None) -> Verdict:
    """Check a pruned model; raise VerifyError naming the first failed check.

    Args:
        original: the unpruned model: a ModelProto or a file path.
        pruned: the candidate: a ModelProto (run in two sessions) or a file path
            (one session run twice: loading a large model twice tells little more).
        feeds: inputs to run both on (see random_inputs).
        reference: the original's outputs on `feeds`, if already computed.
        timings: if given, gets "checker" and "onnxruntime" seconds.
        where: the original's name for error messages.
        probe: inputs at other sizes of the dynamic dims (load.Model.probe_shapes): where
            the original runs on them, the pruned model must too, with the same output
            shapes (shape arithmetic must not have been frozen at the sizes of `feeds`).
    """
    t0 = time.perf_counter()
    blob = pruned.SerializeToString() if isinstance(pruned, onnx.ModelProto) else None
    try:
        full_check(pruned, blob)
    except Exception as exc:  # checker and shape inference raise several types
        raise VerifyError(f"pruned model fails onnx.checker: {first_line(exc)}") from exc
    if value_infos(_proto(original).graph.output) != value_infos(_proto(pruned).graph.output):
        raise VerifyError("pruned model declares different output names, types or shapes")
    t1 = time.perf_counter()
    try:
        if blob is not None:  # two sessions: one could hide a non-deterministic load
            first, second = run(blob, feeds), run(blob, feeds)
        else:
            first, second = run(pruned, feeds, repeat=2)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"onnxruntime cannot run the pruned model: {first_line(exc)}") from exc
    ref = reference if reference is not None else run_original(original, feeds, where)
    if timings is not None:
        timings.update(checker=t1 - t0, onnxruntime=time.perf_counter() - t1)
    for name, want in ref.items():
        got = first.get(name)
        if name not in first or layout(got) != layout(want):
            have = layout(got) if name in first else None
            raise VerifyError(f"output {name!r} changed: expected {layout(want)}, got {have}")
        if not _equal(got, second[name]):
            raise VerifyError(f"output {name!r} is not deterministic")
    if probe is not None:
        _check_probe(original, blob if blob is not None else pruned, probe)
    return Verdict(checker=True, runs=True, outputs_match=True, deterministic=True)


def _check_probe(original, pruned, feeds):
    try:
        want = run(original, feeds)
    except Exception:  # onnxruntime errors have no common base class
        return  # the original takes no other size either
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    try:
        got = run(pruned, feeds)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"the pruned model fails at other input sizes ({sizes}): {first_line(exc)}") from exc
    for name, w in want.items():
        if layout(got.get(name)) != layout(w):
            raise VerifyError(f"output {name!r} has shape {layout(got.get(name))} at other input sizes ({sizes}), "
                              f"the original {layout(w)}")


def layout(value):
    """Shape and type of an output: (shape, dtype) of an array, a list of those for a
    sequence, sorted items for a map, None for an empty optional."""
    if isinstance(value, np.ndarray):
        return value.shape, value.dtype
    if isinstance(value, list):
        return [layout(v) for v in value]
    if isinstance(value, dict):
        return sorted((k, layout(v)) for k, v in value.items())
    return None if value is None else type(value).__name__


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _proto(src) -> onnx.ModelProto:
    return src if isinstance(src, onnx.ModelProto) else onnx.load(os.fspath(src), load_external_data=False)
