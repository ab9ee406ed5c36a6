"""Latency for planning (`spa prune --target-latency`): a latency model of the original
built from onnxruntime's per-kernel profile, and the measured latency of a pruned model.

The model is a list of terms (ms, factor spaces), like the MACs count: each term's time
scales with kept / size of each of its spaces. A kernel is mapped back to the graph node it
runs (by name: the node's, its output tensor's for NCHWc kernels, a fused node's prefix);
a Conv or MatMul kernel takes its node's MACs factors (input and output channels), any
other kernel the channel spaces of its node's output (element-wise work). A kernel that no
name maps (a fused BiasGelu, a layout reorder) works on what the kernel before it produced,
so it takes that node's output spaces. Wall time beyond the kernels is a fixed term.
On CUDA the kernels' times are their GPU times (spa.measure.profile).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..edit.plan import CostModel
from ..graph import node_macs
from .bench import BenchSettings, bench, cpu_block_size
from .profile import kernel_events

PROFILE_RUNS = 3  # profiled runs after the warm-up
MATMUL_KERNELS = ("Conv", "FusedConv", "NchwcConv", "QLinearConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")
UPSTREAM = 3  # how far a fused Conv/MatMul kernel's named node is searched back for the node with MACs


@dataclass(frozen=True)
class LatencyModel:
    terms: tuple  # (ms per run, factor spaces)
    fixed_ms: float  # wall time no kernel accounts for
    blocks: dict  # {space: channel block its kernels pad to}: the channels of CPU Convs (NCHWc)
    mapped: float  # share of kernel time mapped to a graph node by name
    kernel_ms: float
    wall_ms: float
    issue_ms: float | None = None  # CUDA: host time to issue a run (spa.measure.profile)


def latency_model(source, cg, settings: BenchSettings, runs=PROFILE_RUNS) -> LatencyModel:
    """Profile `source` (path or proto of the model `cg` was built from) at the settings'
    first batch and map its kernels onto `cg`'s nodes and spaces."""
    prof = kernel_events(source, settings, runs)
    times, kernel_ms, named, blocked = _kernel_times(prof.events, cg, runs)
    terms = tuple((ms, f) for f, ms in times.items())
    block = cpu_block_size() if settings.device == "cpu" else None
    blocks = {s: block for s in blocked} if block else {}
    return LatencyModel(terms, max(0.0, prof.wall_ms - kernel_ms), blocks, named / kernel_ms if kernel_ms else 0.0,
                        kernel_ms, prof.wall_ms, prof.issue_ms)


def calibrated(lat: LatencyModel, cg, groups, plan, ratio) -> LatencyModel:
    """`lat` with a share c of every kernel's time that does not scale with its channels,
    fitted so that the model predicts `ratio`, the measured latency ratio of a probe variant
    (the original less `plan`, {group id: channels}): kernels keep part of their time as
    their work shrinks (per-call costs; smaller GEMMs run less efficiently), t(s) = t(1) (c +
    (1 - c) s), c in [0, 1]. One c for all: each term's time saved per channel keeps its
    share, so the plan's order is unchanged and only where it stops moves. (A c per term,
    fitted on the probe's per-kernel profile, predicted a little better but moved the order
    on profile noise: the ImageNet MobileNetV2 lost 1.8 points at x0.7 with calibration data.)"""
    unit = CostModel(cg, groups, [(1.0, f) for _, f in lat.terms], 0.0, lat.blocks)
    for gid, chans in plan.items():
        unit.remove(gid, np.asarray(chans, dtype=np.int64))
    kernels = sum(ms for ms, _ in lat.terms)
    scaled = sum(ms * share for (ms, _), share in zip(lat.terms, unit.shares()))
    movable = kernels - scaled  # the time the probe's plan saves if every kernel scales
    if movable <= 0:
        return lat
    c = min(1.0, max(0.0, (ratio * (kernels + lat.fixed_ms) - scaled - lat.fixed_ms) / movable))
    return replace(lat, terms=tuple((ms * (1 - c), f) for ms, f in lat.terms), fixed_ms=lat.fixed_ms + c * kernels)


def _kernel_times(events, cg, runs) -> tuple:
    """({factor spaces: ms per run}, kernel ms, ms mapped by name, spaces of NCHWc Convs)."""
    nodes = {n.name: n for n, _, _ in cg.flows if n.name}
    producer = {t.name: n for n, _, _ in cg.flows for t in n.outputs}
    spaces: dict = {}  # tensor name -> its channel spaces
    for s in sorted(cg.g.nodes):
        spaces.setdefault(s[0], []).append(s)
    times: dict = {}
    previous, kernel_ms, named, blocked = None, 0.0, 0.0, set()
    for e in events:
        ms = e["dur"] / 1000 / runs
        kernel_ms += ms
        node = _node_of(e["name"][:-len("_kernel_time")], nodes, producer)
        if node is not None and e["args"].get("op_name") in MATMUL_KERNELS:
            node = _with_macs(node, cg.ctx, producer)
        if node is not None:
            named += ms
            factors = _factors(node, cg.ctx, spaces)
            previous = node
            if e["name"].endswith("_nchwc_kernel_time") and e["args"].get("op_name") in MATMUL_KERNELS:
                blocked.update(factors)  # an NCHWc Conv: channels padded to the block
        else:
            factors = _out_spaces(previous, spaces) if previous is not None else ()
        times[factors] = times.get(factors, 0.0) + ms
    return times, kernel_ms, named, blocked


def _node_of(name, nodes, producer):
    """The graph node a kernel runs: its own name, an NCHWc kernel's output tensor, a fused
    kernel's name prefix (`/attn/MatMul/MatMulScaleFusion/`, `fused /pooler/Gemm`)."""
    name = name[len("fused "):] if name.startswith("fused ") else name
    if name in nodes:
        return nodes[name]
    if name.endswith("_nchwc") and name[:-len("_nchwc")] in producer:
        return producer[name[:-len("_nchwc")]]
    parts = name.split("/")
    for i in range(len(parts) - 1, 1, -1):
        if "/".join(parts[:i]) in nodes:
            return nodes["/".join(parts[:i])]
    return None


def _with_macs(node, ctx, producer):
    """A Conv/MatMul kernel named after a node it fused (its activation, a residual Add):
    the nearest node upstream with MACs (the node itself where it has them)."""
    frontier = [node]
    for _ in range(UPSTREAM + 1):
        for n in frontier:
            if node_macs(n, ctx)[0]:
                return n
        frontier = [producer[t.name] for n in frontier for t in n.inputs if t.name in producer]
    return node


def _factors(node, ctx, spaces) -> tuple:
    macs, factors = node_macs(node, ctx)
    if macs:
        return tuple(s for s in factors if s in spaces.get(s[0], ()))
    return _out_spaces(node, spaces)


def _out_spaces(node, spaces) -> tuple:
    """The channel spaces of a node's first output that has any (element-wise work)."""
    return next((tuple(spaces[t.name]) for t in node.outputs if t.name in spaces), ())


def measured_ratio(original, pruned, settings: BenchSettings) -> tuple[float, float, float]:
    """(pruned / original latency, original ms, pruned ms p50), timed interleaved by spa.bench:
    the median ratio of runs made next to each other (bench.paired_ratio), else of the p50s."""
    r = bench([original, pruned], settings)
    a, b = r.timing(0, settings.batches[0]), r.timing(1, settings.batches[0])
    return r.latency_ratio(1, settings.batches[0]), a.p50_ms, b.p50_ms
