"""`spa bench --explain A B`: why the pruned model is (not) faster, from onnxruntime's profiler.

Both models run under the benchmark's settings with profiling on. Each kernel the
profiler records is put in a *kind*: its op type, and for Conv whether it is 1x1,
k x k, grouped or depthwise (read from the kernel's input shapes, so fused and NCHWc
kernels are classified too). Per kind: time before and after, MACs before and after
(from the same shapes), and their ratios. The kind whose time shrank least, the kinds
whose time did not follow their MACs, the top nodes, the Conv channel counts off
onnxruntime's NCHWc block, and the layout reorders each model runs are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UsageError
from .bench import BenchSettings, block_warnings, check_settings, cpu_block_size, model_name
from .profile import kernel_events

REORDERS = ("ReorderInput", "ReorderOutput")
MIN_SHARE = 0.05  # kinds below this share of the original's time are not named (noise)
SLACK = 1.15  # a kind lags when its time ratio exceeds its MACs ratio by this factor


@dataclass(frozen=True)
class KindTime:
    kind: str
    before_ms: float
    after_ms: float
    macs_before: int
    macs_after: int
    kernels_before: int
    kernels_after: int

    @property
    def time_ratio(self) -> float | None:
        return self.after_ms / self.before_ms if self.before_ms > 0 else None

    @property
    def macs_ratio(self) -> float | None:
        return self.macs_after / self.macs_before if self.macs_before > 0 else None


@dataclass(frozen=True)
class NodeTime:
    name: str
    kind: str
    ms: float


@dataclass(frozen=True)
class Explanation:
    models: tuple
    device: str
    batch: int
    runs: int
    total_ms: tuple  # (before, after): kernel time per run
    kinds: tuple  # KindTime, by time before, largest first
    top: tuple  # (top nodes before, top nodes after), NodeTime each
    shrank_least: str | None  # the kind with MACs (>= MIN_SHARE of the original's time) whose time ratio is highest
    lagging: tuple  # kinds whose time ratio exceeds SLACK x their MACs ratio
    reorders: tuple  # (before, after): layout conversion kernels per run
    off_block: tuple  # messages: pruned Conv channel counts off the NCHWc block
    block: int | None
    issue: tuple | None = None  # CUDA: ((issue ms, wall ms) before, after) per run (spa.measure.profile)

    def to_dict(self):
        d = asdict(self)
        d["kinds"] = [dict(asdict(k), time_ratio=k.time_ratio, macs_ratio=k.macs_ratio) for k in self.kinds]
        return d


def conv_kind(x_shape, w_shape) -> str:
    """'Conv depthwise', 'Conv grouped', 'Conv 1x1' or 'Conv kxk' from input and weight shapes."""
    if len(x_shape) < 3 or len(w_shape) < 3 or not w_shape[1]:
        return "Conv"
    group = x_shape[1] // w_shape[1] if x_shape[1] % w_shape[1] == 0 else 1
    if group > 1:
        return "Conv depthwise" if w_shape[1] == 1 and w_shape[0] == group else "Conv grouped"
    return "Conv 1x1" if all(k == 1 for k in w_shape[2:]) else "Conv kxk"


def _shapes(args, key):
    return [next(iter(s.values())) for s in args.get(key, []) if isinstance(s, dict) and s]


def kernel_kind_macs(op, args) -> tuple[str, int]:
    """(kind, MACs) of one profiled kernel."""
    ins, outs = _shapes(args, "input_type_shape"), _shapes(args, "output_type_shape")
    out = int(np.prod(outs[0])) if outs else 0
    if op in ("Conv", "FusedConv", "NchwcConv", "QLinearConv") and len(ins) >= 2 and len(ins[1]) >= 3:
        x, w = ins[0], ins[1]
        return conv_kind(x, w), out * int(np.prod(w[1:]))
    if op in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm") and ins and ins[0]:
        return op, out * int(ins[0][-1])
    return op, 0


def profile(model, settings: BenchSettings, runs: int) -> tuple[dict, list, int, tuple | None]:
    """({kind: [ms, macs, kernels]}, [(node, kind, ms)] largest first, reorder kernels,
    (issue ms, wall ms) on CUDA else None), per run."""
    kinds, nodes, reorders = {}, {}, 0
    prof = kernel_events(model, settings, runs)
    for e in prof.events:
        op = e["args"].get("op_name", "?")
        kind, macs = kernel_kind_macs(op, e["args"])
        ms = e["dur"] / 1000 / runs
        acc = kinds.setdefault(kind, [0.0, 0.0, 0.0])
        acc[0] += ms
        acc[1] += macs / runs
        acc[2] += 1 / runs
        name = e["name"][:-len("_kernel_time")]
        nodes[name] = (kind, nodes.get(name, (kind, 0.0))[1] + ms)
        reorders += op in REORDERS
    issue = None if prof.issue_ms is None else (prof.issue_ms, prof.wall_ms)
    return (kinds, sorted(((n, k, ms) for n, (k, ms) in nodes.items()), key=lambda t: -t[2]), round(reorders / runs),
            issue)


def explain(models, settings: BenchSettings = BenchSettings(), runs: int = 20, top: int = 10) -> Explanation:
    """Profile two models (original, pruned) under the same settings (CPU or CUDA) and say where time went."""
    if len(models) != 2:
        raise UsageError("--explain compares two models: the original and the pruned one")
    check_settings(settings)
    (ka, na, ra, ia), (kb, nb, rb, ib) = (profile(m, settings, runs) for m in models)
    kinds = []
    for kind in sorted(set(ka) | set(kb), key=lambda k: -ka.get(k, [0])[0]):
        a, b = ka.get(kind, [0.0, 0, 0]), kb.get(kind, [0.0, 0, 0])
        kinds.append(KindTime(kind, a[0], b[0], int(round(a[1])), int(round(b[1])), int(round(a[2])),
                              int(round(b[2]))))
    total = (sum(k.before_ms for k in kinds), sum(k.after_ms for k in kinds))
    big = [k for k in kinds if k.time_ratio is not None and k.macs_before > 0
           and k.before_ms >= MIN_SHARE * total[0]]
    least = max(big, key=lambda k: k.time_ratio).kind if big else None
    lagging = tuple(k.kind for k in big if k.macs_ratio is not None and k.time_ratio > SLACK * k.macs_ratio)
    block = cpu_block_size() if settings.device == "cpu" else None  # NCHWc is a CPU layout
    off = tuple(w.message() for w in block_warnings(models[1], block)) if block else ()
    tops = tuple(tuple(NodeTime(n, k, ms) for n, k, ms in lst[:top]) for lst in (na, nb))
    return Explanation(tuple(model_name(m, i) for i, m in enumerate(models)), settings.device, settings.batches[0],
                       runs, total, tuple(kinds), tops, least, lagging, (ra, rb), off, block,
                       None if ia is None else (ia, ib))


LAUNCH_BOUND = 0.8  # issue time / wall time from which a CUDA run is called launch-bound


def issue_line(label, issue_ms, wall_ms) -> str:
    share = issue_ms / wall_ms if wall_ms else 0.0
    text = (f"host time to issue a run {label}: {issue_ms:.2f} of {wall_ms:.2f} ms wall (x{share:.2f})")
    if share >= LAUNCH_BOUND:
        text += ("; launch-bound: fewer channels shorten the GPU work, not the launches "
                 "(a larger --batch gives the GPU more work per launch)")
    return text


def explain_text(e: Explanation) -> str:
    """One screen: per kind before/after, what did not shrink, off-block counts, reorders, top nodes."""
    a, b = e.total_ms
    where = ("CUDA kernels, each timed alone (CUDA_LAUNCH_BLOCKING=1)" if e.device == "cuda" else "CPU kernels")
    lines = [f"why: {e.models[1]} against {e.models[0]} (batch {e.batch}, {e.runs} profiled runs, {where})",
             f"kernel time per run {a:.2f} ms -> {b:.2f} ms (x{b / a:.2f})" if a else "no kernel time recorded",
             f"{'op kind':18s} {'ms before':>10s} {'ms after':>9s} {'time x':>7s} {'MACs x':>7s} {'share':>6s}"]
    for k in e.kinds:
        tr = "-" if k.time_ratio is None else f"{k.time_ratio:.2f}"
        mr = "-" if k.macs_ratio is None else f"{k.macs_ratio:.2f}"
        share = k.before_ms / a if a else 0
        lines.append(f"{k.kind:18s} {k.before_ms:10.3f} {k.after_ms:9.3f} {tr:>7s} {mr:>7s} {share:6.1%}")
    if e.shrank_least:
        k = next(k for k in e.kinds if k.kind == e.shrank_least)
        lines.append(f"shrank least: {k.kind} (time x{k.time_ratio:.2f}, MACs x{k.macs_ratio:.2f})")
    for kind in e.lagging:
        k = next(k for k in e.kinds if k.kind == kind)
        lines.append(f"did not follow its MACs: {kind}: time x{k.time_ratio:.2f} for MACs x{k.macs_ratio:.2f}"
                     + (" (per-channel work: time scales linearly, and small kernels keep fixed costs)"
                        if kind == "Conv depthwise" else ""))
    if e.issue:
        lines += [issue_line(label, i, w) for label, (i, w) in zip(("before", "after"), e.issue)]
    ra, rb = e.reorders
    lines.append(f"layout reorders per run: {ra} -> {rb}" + (f" (pruning added {rb - ra})" if rb > ra else ""))
    if e.off_block:
        lines.append(f"channel counts off the {e.block}-channel NCHWc block: {len(e.off_block)} "
                     f"(e.g. {e.off_block[0]})")
    elif e.block:
        lines.append(f"every pruned Conv channel count fits the {e.block}-channel NCHWc block")
    for label, nodes in zip(("before", "after"), e.top):
        lines.append(f"top {len(nodes)} kernels {label}:")
        lines += [f"  {n.ms:8.3f} ms  {n.kind:16s} {n.name}" for n in nodes]
    return "\n".join(lines)
