"""The one place that talks to onnxruntime: sessions, seeded inputs and guarded runs.

Used by loading (shapes onnx cannot infer), folding, calibration, the probe,
verification, recovery and the measuring commands.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading

import numpy as np
import onnx
import onnxruntime as ort

from .errors import ModelError, first_line
from .protos import NP_TYPES, graph_inputs, has_external_data

RUN_TIMEOUT = 600.0  # seconds one onnxruntime run may take before it is stopped
CPU = ("CPUExecutionProvider",)


class RunTimeout(RuntimeError):
    pass


_THREADS = [0]  # set_threads: intra-op threads of sessions built without a count; 0: onnxruntime's default
_BLAS: dict = {}  # OpenBLAS libraries numpy loaded: {path: (set function, thread count before SPA set one)}
BLAS_PREFIXES = ("scipy_openblas_", "openblas_")  # numpy 2's bundled build, then a plain OpenBLAS
BLAS_SUFFIXES = ("64_", "")


def set_threads(n: int) -> int:
    """Use `n` threads from now on (0: the defaults): in every onnxruntime session SPA builds
    without its own count, and in numpy's OpenBLAS (found among the loaded libraries; a no-op
    where there is none; 0 gives it back the count it had). Returns the previous setting."""
    if n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    old, _THREADS[0] = _THREADS[0], n
    for setter, default in _blas().values():
        setter(ctypes.c_int(n or default))
    return old


def threads() -> int:
    """The count set_threads gave (0: defaults)."""
    return _THREADS[0]


def _blas() -> dict:
    """{path: (set_num_threads, its count when first seen)} of the OpenBLAS libraries loaded."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return _BLAS
    for path in paths - set(_BLAS):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in itertools.product(BLAS_PREFIXES, BLAS_SUFFIXES):
            get, put = (f"{prefix}{verb}_num_threads{suffix}" for verb in ("get", "set"))
            if hasattr(lib, get) and hasattr(lib, put):
                _BLAS[path] = (getattr(lib, put), getattr(lib, get)())
                break
    return _BLAS


def options(threads: int = 0, runs: str = "few") -> ort.SessionOptions:
    """Quiet session options: failures reach the user as exceptions, not as onnxruntime's log.
    runs="few" (SPA's checks, the probe): weights are not prepacked for the kernels, a copy
    of them that a handful of runs never pays back (ViT-B/16: session 0.4-0.7 -> 0.25 s, a
    third of the page faults, runs 5% slower); "many" (recovery) prepacks."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    if runs == "few":
        opts.add_session_config_entry("session.disable_prepacking", "1")
    threads = threads or _THREADS[0]
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def session(src, threads: int = 0, opts: ort.SessionOptions | None = None, providers=CPU) -> ort.InferenceSession:
    """An onnxruntime session for a ModelProto, serialised model bytes or a model file path.

    A ModelProto that refers to external data is refused: onnxruntime would look for
    the data relative to the working directory. Run such a model from its file.
    """
    if isinstance(src, onnx.ModelProto):
        if has_external_data(src):
            raise ValueError("a model with external data must be run from its file")
        src = src.SerializeToString()
    elif not isinstance(src, bytes):
        src = os.fspath(src)
    return ort.InferenceSession(src, opts or options(threads), providers=list(providers))


def random_feeds(specs: dict, seed: int = 0) -> dict:
    """Seeded inputs for {name: (shape, numpy dtype)}: standard normal floats, integers
    in [0, 8), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype) in specs.items():
        if dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, size=shape, dtype=np.uint8).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, 8, size=shape, dtype=dtype)
        else:  # drawn in float32 or float64 directly: no full-size float64 temporary
            draw = np.float64 if dtype == np.float64 else np.float32
            feeds[name] = rng.standard_normal(shape, dtype=draw).astype(dtype, copy=False)
    return feeds


def random_inputs(proto: onnx.ModelProto, shapes: dict, seed: int = 0, where: str = "<model>") -> dict:
    """Seeded inputs for every graph input (not initializers) at the given concrete shapes."""
    specs = {}
    for vi in graph_inputs(proto):
        kind = vi.type.WhichOneof("value") or "untyped"
        if kind != "tensor_type":  # sequence, optional, map, sparse tensor
            kind = kind.replace("_type", "").replace("_", " ")
            article = "an" if kind[0] in "aeiou" else "a"
            raise ModelError(f"{where}: input {vi.name!r} is {article} {kind} value; SPA feeds only tensor inputs")
        dtype = NP_TYPES.get(vi.type.tensor_type.elem_type)
        if dtype is None:
            raise ModelError(f"{where}: input {vi.name!r} has an element type SPA cannot feed")
        specs[vi.name] = (shapes[vi.name], dtype)
    return random_feeds(specs, seed)


def run(src, feeds, threads=0, repeat=1, timeout=None, names=None):
    """Outputs {name: array} of one run (a list of `repeat` runs of one session).

    A run over `timeout` seconds (RUN_TIMEOUT by default) is stopped: RunTimeout.
    """
    sess = src if isinstance(src, ort.InferenceSession) else session(src, threads)
    names = names or [o.name for o in sess.get_outputs()]
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
        raise ModelError(f"{where}: onnxruntime cannot run the original model ({first_line(exc)})") from exc
