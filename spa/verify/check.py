"""Verification of a pruned model before it is written."""

from __future__ import annotations

import os
import time

import numpy as np
import onnx

from ..edit import adapt_feeds, adapt_outputs, resized, with_sizes
from ..errors import VerifyError, first_line
from ..io import full_check
from ..protos import NP_TYPES, graph_inputs, value_infos
from ..results import Verdict
from ..runtime import random_inputs, run, run_original, session
from .fidelity import fidelity_all

SAMPLES = 8  # generated samples fidelity is measured on when the inputs' dim 0 is dynamic
PIECE = 4  # samples per run when measuring (the model's fixed batch where it has one)
MEASURE_MAX = 64  # at most this many samples of given data (--calib) are measured on


def verify(original, pruned, feeds: dict, reference: dict | None = None,
           timings: dict | None = None, where: str = "<model>", probe: dict | None = None,
           data: dict | None = None, label: str = "", progress=None, interface=()) -> Verdict:
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
        progress: optional callable(i, n, name) after each check and each run.
        interface: InterfaceChange records (allow_interface_change): the pruned model is fed
            the inputs with removed elements dropped, and its changed outputs are compared
            with the original's kept elements.

    Returns:
        A Verdict: the checks passed, and Verdict.fidelity per output (cosine, max abs,
        top-1 agreement for classifiers) on the inputs Verdict.inputs names.
    """
    t0 = time.perf_counter()
    blob = pruned.SerializeToString() if isinstance(pruned, onnx.ModelProto) else None
    proto = _proto(original)
    pieces = _pieces(proto, data if data is not None else _generated(proto, feeds))
    step = _Steps(progress, 4 + 2 * len(pieces))
    try:
        full_check(pruned, blob)
    except Exception as exc:  # checker and shape inference raise several types
        raise VerifyError(f"pruned model fails onnx.checker: {first_line(exc)}") from exc
    if value_infos([with_sizes(vi, resized(interface)) for vi in proto.graph.output]) != value_infos(_proto(pruned).graph.output):
        raise VerifyError("pruned model declares different output names, types or shapes")
    fed = adapt_feeds(interface, feeds)
    t1 = time.perf_counter()
    step("checker")
    try:
        if blob is not None:  # two sessions: one could hide a non-deterministic load
            first = run(blob, fed)
            step("run 1")
            second = run(blob, fed)
        else:
            pruned = session(pruned)  # one session for the checks and the measurement
            first = run(pruned, fed)
            step("run 1")
            second = run(pruned, fed)
        step("run 2")
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"onnxruntime cannot run the pruned model: {first_line(exc)}") from exc
    ref = adapt_outputs(interface, reference if reference is not None else run_original(original, feeds, where))
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
        _check_probe(original, blob if blob is not None else pruned, probe, interface)
    step("other input sizes")
    t2 = time.perf_counter()
    figures, inputs, samples = _measure(original, blob if blob is not None else pruned, feeds, ref, first,
                                        data, pieces, label, step, interface)
    if timings is not None:
        timings["fidelity"] = time.perf_counter() - t2
    return Verdict(checker=True, runs=True, outputs_match=True, deterministic=True, fidelity=figures,
                   inputs=inputs, samples=samples)


class _Steps:
    """Counts verification's steps for a progress callable(i, n, name)."""

    def __init__(self, progress, n):
        self.progress, self.n, self.i = progress, n, 0

    def __call__(self, name):
        self.i = min(self.i + 1, self.n)
        if self.progress is not None:
            self.progress(self.i, self.n, name)


def _measure(original, pruned, feeds, ref, first, data, pieces, label, step, interface=()) -> tuple:
    """(fidelity per output, what it was measured on, samples): on `pieces` of `data` when
    given, else of SAMPLES generated samples where the batch is dynamic, else on the
    verification inputs."""
    if data is not None:
        total, used = _count(data), sum(_count(p) for p in pieces)
        where = (label or "given data") + (f" (the first {used} of {total})" if used < total else "")
    else:
        where = "generated (standard normal, seed 0)"
    fallback = "generated (standard normal, the verification inputs)"
    if pieces:
        try:
            want = adapt_outputs(interface, _chunked(original, pieces, step, "original"))
            got = _chunked(pruned, [adapt_feeds(interface, p) for p in pieces], step, "pruned")
            return fidelity_all(want, got), where, sum(_count(p) for p in pieces)
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


def _pieces(proto, data) -> list:
    """The first MEASURE_MAX samples of `data` in pieces of PIECE samples, or of the
    model's fixed batch when it has one (and drops a remainder)."""
    if data is None:
        return []
    inputs = graph_inputs(proto)
    data = {vi.name: _cast(data[vi.name], vi) for vi in inputs if vi.name in data}
    if not data:
        return []
    n = min(_count(data), MEASURE_MAX)
    dims = [vi.type.tensor_type.shape.dim for vi in inputs]
    fixed = dims[0][0].dim_value if dims and dims[0] and dims[0][0].HasField("dim_value") else 0
    size = fixed or PIECE
    if fixed and n < fixed:  # too few samples for the model's batch: one piece, which will not run
        return [{k: np.asarray(v)[:n] for k, v in data.items()}]
    return [{k: np.asarray(v)[j:j + size] for k, v in data.items()} for j in range(0, n - n % fixed if fixed else n,
                                                                                 size)]


def _cast(array, vi):
    """`array` as the input's element type, within the same kind (floats to floats, integers to integers)."""
    a, want = np.asarray(array), NP_TYPES.get(vi.type.tensor_type.elem_type)
    if want is None or a.dtype == want:
        return a
    same = a.dtype.kind == np.dtype(want).kind or (a.dtype.kind in "iu" and np.dtype(want).kind in "iu")
    return a.astype(want) if same else a


def _chunked(src, pieces, step, what) -> dict:
    """Outputs on every piece (see _pieces), concatenated."""
    sess = src if not isinstance(src, (str, bytes, os.PathLike, onnx.ModelProto)) else session(src)
    parts = []
    for piece in pieces:
        parts.append(run(sess, piece))
        step(f"{what} on {_count(piece)} samples")
    return {k: np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray) else parts[0][k]
            for k in parts[0]}  # a non-tensor output (sequence, map) is not measured: its first piece stands


def _count(feeds) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _check_probe(original, pruned, feeds, interface=()):
    try:
        want = adapt_outputs(interface, run(original, feeds))
    except Exception:  # onnxruntime errors have no common base class
        return  # the original takes no other size either
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    try:
        got = run(pruned, adapt_feeds(interface, feeds))
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
