"""Verification of a pruned model, and the masked-equivalence oracle."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

from .errors import ModelError, VerifyError
from .load import load
from .rewrite import export, write_const
from .rules.base import Ctx
from .results import Verdict

NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
            onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
            onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_,
            onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8}


def session(proto: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def random_inputs(proto: onnx.ModelProto, shapes: dict, seed: int = 0) -> dict:
    """Seeded inputs for every graph input (not initializers) with the given concrete shapes."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dtype = NP_TYPES.get(vi.type.tensor_type.elem_type)
        if dtype is None:
            raise ModelError(f"input {vi.name!r} has an element type SPA cannot feed")
        shape = shapes[vi.name]
        if dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 8, size=shape).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run(proto, feeds, threads=0) -> dict:
    sess = session(proto, threads)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _signature(proto):
    out = []
    for vi in proto.graph.output:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim)
        out.append((vi.name, tt.elem_type, dims))
    return out


def verify(original: onnx.ModelProto, pruned: onnx.ModelProto, feeds: dict,
           reference: dict | None = None, timings: dict | None = None) -> Verdict:
    """Check a pruned model; raise VerifyError naming the first failed check.

    Args:
        original: the unpruned model.
        pruned: the candidate.
        feeds: inputs to run both on (see random_inputs).
        reference: the original's outputs on `feeds`, if already computed.
        timings: if given, gets "checker" and "onnxruntime" seconds.
    """
    t0 = time.perf_counter()
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # checker and shape inference raise several types
        raise VerifyError(f"pruned model fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    if _signature(original) != _signature(pruned):
        raise VerifyError("pruned model declares different output names, types or shapes")
    t1 = time.perf_counter()
    try:
        first = run(pruned, feeds)
        second = run(pruned, feeds)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise VerifyError(f"onnxruntime cannot run the pruned model: {str(exc).splitlines()[0][:300]}") from exc
    ref = reference if reference is not None else run(original, feeds)
    if timings is not None:
        timings.update(checker=t1 - t0, onnxruntime=time.perf_counter() - t1)
    for name, want in ref.items():
        got = first.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            have = None if got is None else (got.shape, got.dtype)
            raise VerifyError(f"output {name!r} changed: expected {want.shape} {want.dtype}, got {have}")
        if not np.array_equal(got, second[name], equal_nan=True):
            raise VerifyError(f"output {name!r} is not deterministic")
    return Verdict(checker=True, runs=True, outputs_match=True, deterministic=True)


def masked(original: onnx.ModelProto, sinks) -> onnx.ModelProto:
    """The original model with every removed channel's consumer slices zeroed.

    Args:
        original: the unpruned model.
        sinks: (tensor name, axis, indices) of the parameter slices that read removed channels.

    Returns:
        A model whose outputs should equal the pruned model's.
    """
    model = load(original)
    ctx = Ctx(model)
    for name, axis, idx in sinks:
        t = ctx.tensors[name]
        value = np.array(ctx.const(t))
        index = [slice(None)] * value.ndim
        index[axis] = np.asarray(idx)
        value[tuple(index)] = 0
        write_const(ctx, t, value)
    return export(model, model.graph)
