"""Fair onnxruntime timing of one or more models, and the NCHWc channel-count check.

Every model gets the same session options, inputs and run counts. Timed runs alternate
between the models (run by run for slow models, in re-warmed blocks for fast ones), so
slow drift (heat, other load) hits all of them alike. Memory, measured in a child process
per model, is the growth of peak RSS (CPU) or of device memory in use (CUDA) from before
the session is created to the end of its warm-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelError, UsageError, first_line
from ..io import read_proto
from ..io.sizes import choose
from ..protos import ORT_TYPES
from ..report import table
from ..runtime import random_feeds, session

OPT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
DEVICES = ("cpu", "cuda")
SIMD_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
              "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")
BLOCKS = 5  # timing blocks per model, for fast models
SLOW_MS = 20.0  # models at least this slow alternate run by run


class DeviceError(UsageError):
    """The requested execution provider cannot run here."""


@dataclass(frozen=True)
class BenchSettings:
    device: str = "cpu"
    batches: tuple = (1,)
    warmup: int = 10
    runs: int = 50
    seconds: float | None = None  # if set, time each model about this long per batch instead of `runs`
    threads: int = 0  # intra-op threads; 0: onnxruntime's default (one per physical core)
    opt_level: str = "all"
    input_shapes: dict = field(default_factory=dict)  # {input: shape}; dim 0 is replaced by the batch
    seed: int = 0
    memory: bool = True  # measure peak memory (in a child process per model)


@dataclass(frozen=True)
class Timing:
    model: str
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # samples per second: batch / mean latency
    memory_bytes: int | None  # see the module docstring
    input_shapes: dict
    paired: float | None = None  # median of this model's run-by-run ratios to the first model's (see paired_ratio)


@dataclass(frozen=True)
class BenchResult:
    models: tuple
    settings: BenchSettings
    timings: tuple  # Timing per (model, batch), models in order
    environment: dict

    def timing(self, model: int, batch: int) -> Timing:
        return next(t for t in self.timings if t.model == self.models[model] and t.batch == batch)

    def latency_ratio(self, model: int, batch: int) -> float:
        """A later model's latency over the first's: run by run (Timing.paired) where the runs
        pair up, else the ratio of their p50s."""
        t = self.timing(model, batch)
        return t.paired if t.paired is not None else t.p50_ms / self.timing(0, batch).p50_ms

    def ratios(self) -> tuple:
        """Each later model against the first, per batch: latency, throughput and memory ratios."""
        out = []
        for i in range(1, len(self.models)):
            for b in self.settings.batches:
                base, t = self.timing(0, b), self.timing(i, b)
                mem = (t.memory_bytes / base.memory_bytes
                       if t.memory_bytes is not None and base.memory_bytes else None)
                out.append({"model": t.model, "baseline": base.model, "batch": b,
                            "p50": t.p50_ms / base.p50_ms, "p90": t.p90_ms / base.p90_ms,
                            "p99": t.p99_ms / base.p99_ms, "throughput": t.throughput / base.throughput,
                            "memory": mem, "paired": t.paired})
        return tuple(out)

    def to_dict(self):
        return {"models": list(self.models), "settings": asdict(self.settings),
                "environment": self.environment, "timings": [asdict(t) for t in self.timings],
                "ratios": list(self.ratios())}


# -- CPU facts --------------------------------------------------------------------------------
def cpu_info(path="/proc/cpuinfo") -> tuple[str, frozenset]:
    """(CPU model name, CPU flags) from /proc/cpuinfo; ("", {}) where it cannot be read."""
    name, flags = "", frozenset()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware") and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = frozenset(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name or platform.processor(), flags


def cpu_block_size(flags=None) -> int | None:
    """Channel block of onnxruntime's NCHWc kernels on this CPU: 16 with AVX-512F, 8 with
    AVX2 and FMA; None where MLAS has no blocked kernels (so no layout to miss)."""
    if flags is None:
        flags = cpu_info()[1]
    if "avx512f" in flags:
        return 16
    if "avx2" in flags and "fma" in flags:
        return 8
    return None


class BlockWarning(NamedTuple):
    node: str
    channels: int
    block: int
    side: str  # "in" or "out"
    skipped: bool  # True: the NCHWc kernels reject the Conv; False: they pad the channels to the block

    def message(self) -> str:
        what = ("onnxruntime's blocked NCHWc CPU kernels skip it" if self.skipped else
                f"onnxruntime's NCHWc kernels pad it to {-(-self.channels // self.block) * self.block}")
        return (f"Conv {self.node!r} has {self.channels} {self.side}put channels, not a multiple of "
                f"{self.block}: {what} (--round-to {self.block} keeps pruned counts aligned)")


def block_warnings(model, block: int | None = None) -> list:
    """Conv nodes whose channel counts miss onnxruntime's NCHWc kernels (its NchwcTransformer).

    onnxruntime pads counts up to the block where it can: output channels always, input
    channels when a multiple of 4 (onnxruntime PR #7442). Grouped convs that are not depthwise
    need every per-group count aligned, else they are skipped.

    Args:
        model: path or onnx.ModelProto, pruned or not.
        block: channel block; default: this CPU's (see cpu_block_size). None or 1: no warnings.

    Returns:
        BlockWarning (node, channels, block, side, skipped) for each 2-D float Conv with a
        constant weight and a channel count that is not a multiple of the block. An input
        count below one block is fine: onnxruntime reads it as plain NCHW.
    """
    proto = read_proto(model)[0]
    block = cpu_block_size() if block is None else block
    if not block or block <= 1:
        return []
    dims = {t.name: tuple(t.dims) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            t = n.attribute[0].t
            if t.data_type == onnx.TensorProto.FLOAT:
                dims[n.output[0]] = tuple(t.dims)
    out = []
    for n in proto.graph.node:
        w = dims.get(n.input[1]) if n.op_type == "Conv" and n.domain in ("", "ai.onnx") and len(n.input) > 1 else None
        if w is None or len(w) != 4:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1) or 1
        cout, cin = w[0], w[1] * group
        name = n.name or n.output[0]
        if group > 1 and not (w[1] == 1 and cout == group):  # grouped, not depthwise: per-group counts
            bad = [(c, side) for c, side in ((w[1], "in"), (cout // group, "out")) if c % block]
            out += [BlockWarning(name, c, block, side, True) for c, side in bad]
            continue
        if group > 1:  # depthwise
            if cout % block:
                out.append(BlockWarning(name, cout, block, "out", cout % 4 != 0))
            continue
        if block <= cin and cin % block:
            out.append(BlockWarning(name, cin, block, "in", cin % 4 != 0))
        if cout % block:
            out.append(BlockWarning(name, cout, block, "out", False))
    return out


def environment(settings: BenchSettings, providers) -> dict:
    name, flags = cpu_info()
    return {"onnxruntime": ort.__version__, "providers": list(providers),
            "available_providers": ort.get_available_providers(), "cpu": name,
            "cpu_flags": sorted(f for f in flags if f in SIMD_FLAGS), "logical_cpus": os.cpu_count(),
            "nchwc_block": cpu_block_size(flags), "python": platform.python_version(),
            "numpy": np.__version__, "onnx": onnx.__version__, "platform": platform.platform(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# -- sessions and inputs ----------------------------------------------------------------------
def check_settings(s: BenchSettings):
    if s.device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {s.device!r}")
    if s.opt_level not in OPT_LEVELS:
        raise UsageError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got {s.opt_level!r}")
    if not s.batches or min(s.batches) < 1:
        raise UsageError("--batch needs positive integers, e.g. 1,8")
    if s.warmup < 0 or s.runs < 1 or s.threads < 0 or (s.seconds is not None and s.seconds <= 0):
        raise UsageError("--warmup and --threads must be >= 0, --runs >= 1 and --seconds > 0")


def check_device(s: BenchSettings):
    """DeviceError now, not after minutes of work, if CUDA is asked for and cannot run here."""
    if s.device == "cuda":
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "check", [x], [y])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
        make_session(model, s)


def session_options(s: BenchSettings) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures reach the user as one-line errors, not as onnxruntime's log
    opts.graph_optimization_level = OPT_LEVELS[s.opt_level]
    opts.intra_op_num_threads = s.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def model_source(model):
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    return path


def make_session(model, s: BenchSettings, opts: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An onnxruntime session with the benchmark's options (or `opts`); DeviceError if CUDA is
    asked for but absent."""
    src = model_source(model)
    if s.device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceError("--device cuda: this onnxruntime build has no CUDA provider "
                              "(install onnxruntime-gpu)")
        _preload_cuda()
        providers = [("CUDAExecutionProvider", {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}),
                     "CPUExecutionProvider"]
        ort.set_default_logger_severity(4)  # a failed CUDA load logs several lines; we say it in one
    try:
        sess = session(src, opts=opts or session_options(s), providers=providers)
    except Exception as exc:  # onnxruntime errors have no common base class
        raise ModelError(f"{model if isinstance(src, str) else '<model>'}: onnxruntime cannot load it "
                         f"({first_line(exc, 200)})") from exc
    finally:
        if s.device == "cuda":
            ort.set_default_logger_severity(2)
    if s.device == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        raise DeviceError("--device cuda: the CUDA provider did not load (no GPU, or CUDA/cuDNN libraries "
                          "missing; see onnxruntime's CUDA requirements)")
    return sess


def input_specs(sess, batch: int, input_shapes=None) -> dict:
    """{input name: (shape, numpy dtype)} at this batch. Dim 0 takes the batch when it is dynamic;
    other dynamic dims come from input_shapes, else 1."""
    specs, inputs = {}, sess.get_inputs()
    unknown = set(input_shapes or {}) - {i.name for i in inputs}
    if unknown:
        raise UsageError(f"--input-shape names unknown input(s): {', '.join(sorted(unknown))}")
    for i in inputs:
        dtype = ORT_TYPES.get(i.type)
        if dtype is None:
            raise ModelError(f"input {i.name!r} has type {i.type}, which SPA cannot generate")
        dims = list((input_shapes or {}).get(i.name) or i.shape)
        if len(dims) != len(i.shape):
            raise UsageError(f"--input-shape for {i.name!r} has rank {len(dims)}, model says {len(i.shape)}")
        if dims:
            if isinstance(i.shape[0], int) and i.shape[0] > 0 and i.shape[0] != batch:
                raise UsageError(f"input {i.name!r} has a fixed batch of {i.shape[0]}; cannot run batch {batch}")
            dims[0] = batch
        specs[i.name] = (tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims), dtype)
    return specs


# -- memory -----------------------------------------------------------------------------------
def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _preload_cuda():
    """Load the CUDA libraries of pip's nvidia-* wheels, if any (onnxruntime >= 1.21); quietly."""
    fn = getattr(ort, "preload_dlls", None)
    if fn is not None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                fn()
            except Exception:  # best effort: the session reports what is really missing
                pass


def _cuda_used() -> int | None:
    """Device memory in use on GPU 0 (all processes), or None without libcudart."""
    lib = None
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return total.value - free.value


def _child_memory(src: str, settings: dict) -> dict:
    """In a fresh process: peak memory growth from before session creation through the
    warm-up at each batch, in ascending order. Returns {batch: bytes or None}."""
    s = BenchSettings(**{**settings, "batches": tuple(settings["batches"])})
    cpu = s.device == "cpu"
    if not cpu:
        _preload_cuda()
    peak_ok = cpu and _reset_peak_rss()
    start = _status_kb("VmRSS") if cpu else _cuda_used()
    sess = make_session(src, s)
    result = {}
    for b in sorted(s.batches):
        r = Runner(sess, random_feeds(input_specs(sess, b, s.input_shapes), s.seed), s.device)
        for _ in range(max(1, min(s.warmup, 3))):
            r()
        now = (_status_kb("VmHWM" if peak_ok else "VmRSS") if cpu else _cuda_used())
        result[b] = None if now is None or start is None else max(0, now - start)
    return result


def _child_main():
    req = json.load(sys.stdin)
    json.dump({str(k): v for k, v in _child_memory(req["model"], req["settings"]).items()}, sys.stdout)


def child_env(**extra) -> dict:
    """The environment of a child Python that imports this copy of spa."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**os.environ, **extra,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def measure_memory(model, settings: BenchSettings) -> dict:
    """{batch: peak memory growth in bytes, or None}, measured in a child process so that memory
    freed by earlier work in this process cannot hide a model's allocations."""
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, onnx.ModelProto):
            path = os.path.join(tmp, "model.onnx")
            onnx.save(model, path)
        else:
            path = os.path.abspath(os.fspath(model))
        req = {"model": path, "settings": {**asdict(settings), "batches": list(settings.batches)}}
        code = "from spa.measure.bench import _child_main; _child_main()"
        p = subprocess.run([sys.executable, "-c", code], input=json.dumps(req), capture_output=True,
                           text=True, env=child_env(), timeout=3600)
    if p.returncode != 0:
        return {b: None for b in settings.batches}
    return {int(k): v for k, v in json.loads(p.stdout).items()}


# -- the runner -------------------------------------------------------------------------------
class Runner:
    """One model at one batch: a callable run, with inputs bound once (IOBinding on CUDA)."""

    def __init__(self, sess, feeds, device):
        self.sess, self.warm_ms = sess, 0.0
        if device == "cuda":
            io = sess.io_binding()
            self.values = [ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0) for arr in feeds.values()]
            for name, value in zip(feeds, self.values):
                io.bind_ortvalue_input(name, value)
            for o in sess.get_outputs():
                io.bind_output(o.name, "cuda", 0)
            self.io = io
        else:
            self.io, self.feeds = None, feeds

    def __call__(self):
        if self.io is not None:
            self.sess.run_with_iobinding(self.io)
            self.io.synchronize_outputs()
        else:
            self.sess.run(None, self.feeds)

    def timed(self, n=None, seconds=None) -> list:
        out = []
        end = time.perf_counter() + seconds if seconds else None
        while (len(out) < n) if n is not None else (not out or time.perf_counter() < end):
            t = time.perf_counter_ns()
            self()
            out.append((time.perf_counter_ns() - t) / 1e6)
        return out


def _blocks(rs, lat, b, settings, tick, labels):
    """Fast models: BLOCKS blocks of consecutive runs, alternating between the models; an
    untimed run re-warms caches at the start of each block."""
    blocks = BLOCKS if settings.seconds else min(BLOCKS, settings.runs)
    for blk in range(blocks):
        for i, r in enumerate(rs):
            time.sleep(0.02)  # let the previous session's spinning threads park
            r()
            if settings.seconds:
                lat[i, b] += r.timed(seconds=settings.seconds / blocks)
                tick(settings.runs / blocks, labels[i])
            else:
                n = settings.runs // blocks + (blk < settings.runs % blocks)
                lat[i, b] += r.timed(n=n)
                tick(n, labels[i])


def _round_robin(rs, lat, b, settings, tick, labels):
    """Slow models (caches do not hold them anyway): one run each in turn, the order rotating
    every round, until each has `runs` runs or has run for `seconds`."""
    spent = [0.0] * len(rs)
    k = 0
    while True:
        if settings.seconds:
            if min(spent) >= settings.seconds * 1000:
                return
        elif k >= settings.runs:
            return
        order = list(range(len(rs)))
        order = order[k % len(rs):] + order[:k % len(rs)]
        for i in order:
            if settings.seconds and spent[i] >= settings.seconds * 1000:
                continue
            time.sleep(0.005)
            ms = rs[i].timed(n=1)[0]
            lat[i, b].append(ms)
            spent[i] += ms
            tick(settings.runs / max(1.0, settings.seconds * 1000 / ms) if settings.seconds else 1, labels[i])
        k += 1


def model_name(model, i):
    return os.fspath(model) if not isinstance(model, onnx.ModelProto) else f"<model {i + 1}>"


def bench(models, settings: BenchSettings = BenchSettings(), progress=None) -> BenchResult:
    """Time models in onnxruntime with identical settings.

    Args:
        models: paths or onnx.ModelProto, the first being the baseline for ratios.
        settings: a BenchSettings.
        progress: optional callable(fraction_done, label), called as runs complete.

    Returns:
        A BenchResult with one Timing per model and batch.
    """
    check_settings(settings)
    models = list(models)
    if not models:
        raise UsageError("give at least one model")
    settings, sizes_note = with_sizes(models[0], settings)
    batches = tuple(sorted(set(settings.batches)))
    names = [model_name(m, i) for i, m in enumerate(models)]
    if len(set(names)) != len(names):
        raise UsageError("the same model is given twice")
    n_work = len(models) * len(batches) * (settings.warmup + settings.runs)
    done = [0]

    def tick(k, label):
        done[0] += k
        if progress:
            progress(min(1.0, done[0] / n_work), label)

    # Warm-up, one model at a time.
    runners, memory, shapes, providers = {}, {}, {}, []
    for i, m in enumerate(models):
        sess = make_session(m, settings)
        providers = sess.get_providers()
        for b in batches:
            specs = input_specs(sess, b, settings.input_shapes)
            r = Runner(sess, random_feeds(specs, settings.seed), settings.device)
            try:
                r.warm_ms = min(r.timed(n=max(1, settings.warmup)))
            except Exception as exc:  # onnxruntime errors have no common base class
                raise ModelError(f"{names[i]}: onnxruntime cannot run it at batch {b} "
                                 f"({first_line(exc, 200)})") from exc
            tick(settings.warmup, f"warm-up {os.path.basename(names[i])} batch {b}")
            runners[i, b] = r
            shapes[i, b] = {k: list(v[0]) for k, v in specs.items()}
        mem = measure_memory(m, settings) if settings.memory else {}
        for b in batches:
            memory[i, b] = mem.get(b)

    lat = {k: [] for k in runners}
    for b in batches:
        rs = [runners[i, b] for i in range(len(models))]
        labels = [f"{os.path.basename(n)} batch {b}" for n in names]
        if min(r.warm_ms for r in rs) >= SLOW_MS:
            _round_robin(rs, lat, b, settings, tick, labels)
        else:
            _blocks(rs, lat, b, settings, tick, labels)
    timings = []
    for i in range(len(models)):
        for b in batches:
            v = np.asarray(lat[i, b])
            p50, p90, p99 = (float(x) for x in np.percentile(v, [50, 90, 99]))
            timings.append(Timing(names[i], b, len(v), p50, p90, p99, float(v.mean()), float(v.min()),
                                  b * 1000.0 / float(v.mean()), memory[i, b], shapes[i, b],
                                  paired_ratio(lat[0, b], lat[i, b]) if i else None))
    env = environment(settings, providers)
    if sizes_note:
        env["sizes"] = sizes_note
    return BenchResult(tuple(names), settings, tuple(timings), env)


def paired_ratio(base, other) -> float | None:
    """Median of the ratios of runs made next to each other (the k-th run of each model falls
    in the same round or block when both made as many runs): it cancels the machine's drift,
    which a ratio of two p50s does not. A model timed against itself read 0.99-1.02 by p50s
    and 0.99-1.003 this way (MNIST vgg, batch 256, 8 x 40 rounds). None when the counts
    differ (`seconds` with fast models)."""
    if len(base) != len(other) or not base:
        return None
    return float(np.median(np.asarray(other) / np.asarray(base)))


def with_sizes(model, settings: BenchSettings) -> tuple[BenchSettings, str | None]:
    """The settings with sizes for dynamic dims that --input-shape did not give, chosen as
    `spa prune` chooses them (spa.io.sizes: ones the first model runs at), and the note saying so."""
    proto = read_proto(model)[0]
    shapes, note = choose(proto, model_source(model), dict(settings.input_shapes), model_name(model, 0))
    if note is None:
        return settings, None
    return replace(settings, input_shapes={**shapes, **settings.input_shapes}), note


# -- text -------------------------------------------------------------------------------------
def bench_text(r: BenchResult) -> str:

    def mb(x):
        return "n/a" if x is None else f"{x / 2**20:.1f}"

    rows = []
    base = {t.batch: t for t in r.timings if t.model == r.models[0]}
    multi = len(r.models) > 1
    for t in sorted(r.timings, key=lambda t: (t.batch, r.models.index(t.model))):
        row = [os.path.basename(t.model), t.batch, t.runs, f"{t.p50_ms:.3f}", f"{t.p90_ms:.3f}",
               f"{t.p99_ms:.3f}", f"{t.throughput:.1f}", mb(t.memory_bytes)]
        if multi:
            b = base[t.batch]
            row += [f"{t.p50_ms / b.p50_ms:.3f}", f"{t.throughput / b.throughput:.3f}"]
        rows.append(row)
    head = ["model", "batch", "runs", "p50 ms", "p90 ms", "p99 ms", "samples/s",
            "mem MB" if r.settings.device == "cpu" else "GPU MB"]
    if multi:
        head += ["p50 ratio", "thr. ratio"]
    s, env = r.settings, r.environment
    load = f"; load average {env['load_average']:.1f}" if env.get("load_average") is not None else ""
    note = (f"onnxruntime {env['onnxruntime']} on {env['cpu'] or 'unknown CPU'}{load}; {', '.join(env['providers'])}; "
            f"threads {s.threads or 'default'}; opt level {s.opt_level}; warm-up {s.warmup}; "
            + (f"about {s.seconds:g} s per model and batch" if s.seconds else f"{s.runs} runs"))
    text = table(rows, head) + "\n\n" + note + (f"\n{env['sizes']}" if env.get("sizes") else "")
    if multi:
        text += f"\nratios are against {os.path.basename(r.models[0])}"
    return text
