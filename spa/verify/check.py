"""Verification of a pruned model before it is written."""

from __future__ import annotations

import os
import time

import numpy as np
import onnx

from ..errors import VerifyError, first_line
from ..io import full_check
from ..protos import graph_inputs, value_infos
from ..results import Verdict
from ..runtime import random_inputs, run, run_original, session
from .fidelity import fidelity_all

SAMPLES = 8  # generated samples fidelity is measured on when the inputs' dim 0 is dynamic
MEASURE_MAX = 64  # at most this many samples of given data (--calib) are measured on


def verify(original, pruned, feeds: dict, reference: dict | None = None,
           timings: dict | None = None, where: str = "<model>", probe: dict | None = None,
           data: dict | None = None, label: str = "") -> Verdict:
    """Check a pruned model and measure how far its outputs moved; raise VerifyError
    naming the first failed check.

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
        data: inputs to measure fidelity on ({input: array}, samples on axis 0; the first
            MEASURE_MAX are used), e.g. the calibration data; None: SAMPLES generated
            samples where dim 0 of every input is dynamic, else `feeds`.
        label: where `data` came from, for Verdict.inputs.

    Returns:
        A Verdict: the checks passed, and Verdict.fidelity per output (cosine, max abs,
        top-1 agreement for classifiers) on the inputs Verdict.inputs names.
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
            pruned = session(pruned)  # one session for the checks and the measurement
            first, second = run(pruned, feeds, repeat=2)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"onnxruntime cannot run the pruned model: {first_line(exc)}") from exc
    ref = reference if reference is not None else run_original(original, feeds, where)
    if timings is not None:
        timings.update(checker=t1 - t0, onnxruntime=time.perf_counter() - t1)
    for name, want in ref.items():
        got = first.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            have = None if got is None else (got.shape, got.dtype)
            raise VerifyError(f"output {name!r} changed: expected {want.shape} {want.dtype}, got {have}")
        if not np.array_equal(got, second[name], equal_nan=True):
            raise VerifyError(f"output {name!r} is not deterministic")
    if probe is not None:
        _check_probe(original, blob if blob is not None else pruned, probe)
    t2 = time.perf_counter()
    figures, inputs, samples = _measure(original, blob if blob is not None else pruned, feeds, ref, first,
                                        data, label)
    if timings is not None:
        timings["fidelity"] = time.perf_counter() - t2
    return Verdict(checker=True, runs=True, outputs_match=True, deterministic=True, fidelity=figures,
                   inputs=inputs, samples=samples)


def _measure(original, pruned, feeds, ref, first, data, label) -> tuple:
    """(fidelity per output, what it was measured on, samples): on `data` when given, else on
    SAMPLES generated samples where the batch is dynamic, else on the verification inputs."""
    if data is not None:
        n = min(len(next(iter(data.values()))), MEASURE_MAX)
        feeds2 = {k: np.asarray(v)[:n] for k, v in data.items()}
        total = len(next(iter(data.values())))
        where = (label or "given data") + (f" (the first {n} of {total})" if n < total else "")
    else:
        feeds2, where = _generated(_proto(original), feeds), "generated (standard normal, seed 0)"
    fallback = "generated (standard normal, the verification inputs)"
    if feeds2 is not None:
        try:
            want, got = _chunked(original, feeds2), _chunked(pruned, feeds2)
            return fidelity_all(want, got), where, _count(feeds2)
        except Exception as exc:  # onnxruntime errors have no common base class: use the verification run
            if data is not None:
                fallback += f"; {where} did not run: {first_line(exc, 120)}"
    return fidelity_all(ref, first), fallback, _count(feeds)


def _generated(proto, feeds) -> dict | None:
    """SAMPLES seeded samples at the shapes of `feeds`, where every input's dim 0 is dynamic."""
    inputs = graph_inputs(proto)
    dims = [vi.type.tensor_type.shape.dim for vi in inputs]
    if not inputs or any(not d or d[0].HasField("dim_value") for d in dims):
        return None
    return random_inputs(proto, {k: (SAMPLES,) + tuple(v.shape[1:]) for k, v in feeds.items()}, 0)


def _chunked(src, feeds) -> dict:
    """Outputs on `feeds`, run in pieces of the model's fixed batch when it has one."""
    sess = src if not isinstance(src, (str, bytes, os.PathLike, onnx.ModelProto)) else session(src)
    dim = sess.get_inputs()[0].shape
    fixed = dim[0] if dim and isinstance(dim[0], int) and dim[0] > 0 else 0
    n = _count(feeds)
    if not fixed or n <= fixed:
        return run(sess, feeds)
    parts = [run(sess, {k: v[j:j + fixed] for k, v in feeds.items()}) for j in range(0, n - n % fixed, fixed)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _count(feeds) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


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
        if got[name].shape != w.shape:
            raise VerifyError(f"output {name!r} has shape {got[name].shape} at other input sizes ({sizes}), "
                              f"the original {w.shape}")


def _proto(src) -> onnx.ModelProto:
    return src if isinstance(src, onnx.ModelProto) else onnx.load(os.fspath(src), load_external_data=False)
