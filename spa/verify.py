"""Verification of a pruned model, and the masked-equivalence oracle."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort

from .compensate import apply_shift
from .errors import ModelError, VerifyError
from .external import model_tensors
from .load import load
from .rewrite import export, write_const
from .rules.base import Ctx
from .results import Verdict
from .skeleton import full_check

NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
            onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
            onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_,
            onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8}
RUN_TIMEOUT = 600.0  # seconds one onnxruntime run may take before it is stopped


class RunTimeout(RuntimeError):
    pass


def session(src, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for a ModelProto, serialised model bytes or a model file path.

    A ModelProto that refers to external data is refused: onnxruntime would look for
    the data relative to the working directory. Run such a model from its file.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures reach the user as exceptions, not as onnxruntime's log
    if threads:
        opts.intra_op_num_threads = threads
    if isinstance(src, onnx.ModelProto):
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model_tensors(src)):
            raise ValueError("a model with external data must be run from its file")
        src = src.SerializeToString()
    else:
        src = os.fspath(src)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def random_inputs(proto: onnx.ModelProto, shapes: dict, seed: int = 0, where: str = "<model>") -> dict:
    """Seeded inputs for every graph input (not initializers) with the given concrete shapes."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dtype = NP_TYPES.get(vi.type.tensor_type.elem_type)
        if dtype is None:
            raise ModelError(f"{where}: input {vi.name!r} has an element type SPA cannot feed")
        shape = shapes[vi.name]
        if dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, size=shape, dtype=np.uint8).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 8, size=shape, dtype=dtype)
        else:  # drawn in float32 or float64 directly: no full-size float64 temporary
            draw = np.float64 if dtype == np.float64 else np.float32
            feeds[vi.name] = rng.standard_normal(shape, dtype=draw).astype(dtype, copy=False)
    return feeds


def run(src, feeds, threads=0, repeat=1, timeout=None):
    """Outputs {name: array} of one run (a list of `repeat` runs of one session).

    A run over `timeout` seconds (RUN_TIMEOUT by default) is stopped: RunTimeout.
    """
    sess = session(src, threads)
    names = [o.name for o in sess.get_outputs()]
    limit = RUN_TIMEOUT if timeout is None else timeout
    outs = []
    for _ in range(repeat):
        opts = ort.RunOptions()
        opts.log_severity_level = 4
        timer = threading.Timer(limit, lambda o=opts: setattr(o, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            outs.append(dict(zip(names, sess.run(names, feeds, opts))))
        except Exception as exc:  # onnxruntime errors have no common base class
            if opts.terminate:
                raise RunTimeout(f"an onnxruntime run took over {limit:g} s and was stopped") from exc
            raise
        finally:
            timer.cancel()
    return outs[0] if repeat == 1 else outs


def run_original(src, feeds, where) -> dict:
    """The original model's outputs; a model onnxruntime cannot run is a ModelError."""
    try:
        return run(src, feeds)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise ModelError(f"{where}: onnxruntime cannot run the original model ({_line(exc)})") from exc


def _line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _signature(proto):
    out = []
    for vi in proto.graph.output:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim)
        out.append((vi.name, tt.elem_type, dims))
    return out


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
        raise VerifyError(f"pruned model fails onnx.checker: {_line(exc)}") from exc
    if _signature(_proto(original)) != _signature(_proto(pruned)):
        raise VerifyError("pruned model declares different output names, types or shapes")
    t1 = time.perf_counter()
    try:
        if blob is not None:  # two sessions: one could hide a non-deterministic load
            first, second = run(blob, feeds), run(blob, feeds)
        else:
            first, second = run(pruned, feeds, repeat=2)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"onnxruntime cannot run the pruned model: {_line(exc)}") from exc
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
        raise VerifyError(f"the pruned model fails at other input sizes ({sizes}): {_line(exc)}") from exc
    for name, w in want.items():
        if got[name].shape != w.shape:
            raise VerifyError(f"output {name!r} has shape {got[name].shape} at other input sizes ({sizes}), "
                              f"the original {w.shape}")


def _proto(src) -> onnx.ModelProto:
    return src if isinstance(src, onnx.ModelProto) else onnx.load(os.fspath(src), load_external_data=False)


def masked(original: onnx.ModelProto, sinks, updates=()) -> onnx.ModelProto:
    """The original model with every removed channel's consumer slices zeroed.

    Args:
        original: the unpruned model.
        sinks: (tensor name, axis, indices) of the parameter slices that read removed channels.
        updates: the compensation a prune applied (PruneResult.updates, compensate.Update).

    Returns:
        A model whose outputs should equal the pruned model's.
    """
    model = load(original)
    ctx = Ctx(model)
    values = {}
    for name, axis, idx in sinks:  # one tensor may be cut by several groups (heads and head_dim)
        value = values.setdefault(name, np.array(ctx.const(ctx.tensors[name])))
        index = [slice(None)] * value.ndim
        index[axis] = np.asarray(idx)
        value[tuple(index)] = 0
    for kind, name, delta in updates:
        if kind == "weight":
            value = values.setdefault(name, np.array(ctx.const(ctx.tensors[name])))
            value[...] = value.astype(np.float64) + delta
    for name, value in values.items():
        write_const(ctx, ctx.tensors[name], value)
    nodes = {n.outputs[0].name: n for n in model.graph.nodes if n.outputs}
    for kind, name, value in updates:
        if kind != "weight":
            apply_shift(ctx, nodes[name], np.asarray(value))
    return export(model, model.graph)
