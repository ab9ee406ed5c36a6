"""The Python API: analyze and prune. The CLI is a thin layer over these."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter

import numpy as np
import onnx

from .errors import NothingToPrune, UsageError
from .graph import build
from .groups import find_groups
from .importance import REDUCTIONS, score
from .load import load, parse_input_shapes
from .macs import param_count, total_macs
from .plan import global_plan, local_plan
from .results import Analysis, GroupChange, GroupInfo, PruneResult, Stats
from .rewrite import apply, keep_map, removed_elements
from .rules import rule_for
from .rules.base import Ctx
from .verify import random_inputs, run, verify

log = logging.getLogger("spa")


def _shapes(input_shapes):
    if input_shapes is None or isinstance(input_shapes, dict):
        return input_shapes
    return parse_input_shapes(input_shapes)


def _stats(model, ctx, size) -> Stats:
    return Stats(param_count(model.graph, ctx), total_macs(model.graph.nodes, ctx), size)


def _group_infos(cg, groups, macs):
    infos = []
    for gr in groups:
        members = tuple(f"{n}[{a}]" for (n, a) in gr.spaces if cg.g.nodes[(n, a)]["param"])
        nodes = sorted({n.name for (name, _) in gr.spaces
                        for n in list(cg.ctx.tensors[name].inputs) + list(cg.ctx.tensors[name].outputs)})
        reason = "; ".join(gr.blockers[:3]) + (f" (+{len(gr.blockers) - 3} more)" if len(gr.blockers) > 3 else "")
        span = max(int(np.bincount(ch).max()) for _, ch in gr.spaces.values())
        infos.append(GroupInfo(gr.id, gr.channels, members, tuple(nodes),
                               gr.macs / macs if macs else 0.0, gr.prunable, reason, span, gr.kind))
    return tuple(infos)


def analyze(model, input_shapes=None, exclude=()) -> Analysis:
    """Find every coupled channel group and why any is blocked.

    Args:
        model: path or onnx.ModelProto.
        input_shapes: {name: shape} or ["name:1,3,224,224"] for dynamic inputs.
        exclude: glob patterns of node or tensor names to protect.
    """
    m = load(model, _shapes(input_shapes))
    cg = build(m)
    groups = find_groups(cg, exclude)
    stats = _stats(m, cg.ctx, m.file_size)
    missing = Counter(n.op for n in m.graph.nodes if rule_for(n) is None)
    return Analysis(m.path or "<model>", stats, _group_infos(cg, groups, stats.macs),
                    tuple(sorted(missing.items())))


KINDS = ("heads", "mlp", "hidden")


def _check_args(ratio, target_macs, round_to, reduce, kinds):
    if target_macs is not None and (ratio is not None or kinds):
        raise UsageError("--target-macs cannot be combined with --ratio, --heads, --mlp or --hidden")
    if ratio is None and target_macs is None and not kinds:
        raise UsageError("give --ratio, --target-macs, or a per-kind ratio (--heads, --mlp, --hidden)")
    bad = set(kinds) - set(KINDS)
    if bad:
        raise UsageError(f"unknown group kind(s) {', '.join(sorted(bad))}; choose from {', '.join(KINDS)}")
    for name, v in [("--ratio", ratio), ("--target-macs", target_macs)] + [(f"--{k}", v) for k, v in kinds.items()]:
        if v is not None and not 0 < v < 1:
            raise UsageError(f"{name} must be between 0 and 1 (exclusive), got {v}")
    if round_to < 1:
        raise UsageError(f"--round-to must be a positive integer, got {round_to}")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")


def default_output(path) -> str:
    root, _ = os.path.splitext(os.fspath(path))
    return root + ".pruned.onnx"


def _check_output(src, output, force):
    if output is None:
        return
    if isinstance(src, (str, os.PathLike)) and os.path.abspath(output) == os.path.abspath(src):
        raise UsageError(f"{output}: output would overwrite the input model")
    if os.path.exists(output) and not force:
        raise UsageError(f"{output}: file exists (use --force to overwrite)")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"{output}: directory {parent} does not exist")


def write_atomic(proto: onnx.ModelProto, output: str) -> int:
    """Write to a temporary file beside `output`, then rename; returns the byte size."""
    data = proto.SerializeToString()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(output)), suffix=".spa.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(data)


def prune(model, output=None, *, ratio=None, target_macs=None, criterion="l2", reduce="mean",
          global_ranking=False, round_to=1, exclude=(), input_shapes=None, seed=0,
          force=False, kinds=None) -> PruneResult:
    """Prune a model, verify it, and write it if `output` is given.

    Args:
        model: path or onnx.ModelProto. Never modified.
        output: where to write the pruned model, or None to only return it.
        ratio: share of channels to remove from every prunable group (local), or across
            all of them with global_ranking.
        target_macs: instead of ratio, remove lowest-scored channels globally until MACs
            fall by this share.
        criterion: importance criterion name (see spa.criteria.CRITERIA).
        reduce: how member scores combine: mean, sum, max or first.
        round_to: keep channel counts at multiples of this.
        exclude: glob patterns of node or tensor names whose groups are protected.
        input_shapes: concrete shapes for dynamic inputs.
        seed: seed of the random criterion and of verification inputs.
        force: overwrite an existing output.
        kinds: per-kind ratios, e.g. {"heads": 0.25, "mlp": 0.5, "hidden": 0.0}, overriding
            `ratio` for groups of that kind (local ranking only).

    Returns:
        A PruneResult; `.model` holds the pruned onnx.ModelProto.
    """
    kinds = {k: v for k, v in (kinds or {}).items() if v is not None}
    _check_args(ratio, target_macs, round_to, reduce, kinds)
    if kinds and global_ranking:
        raise UsageError("per-kind ratios (--heads, --mlp, --hidden) work with local ranking only")
    _check_output(model, output, force)
    times = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    m = load(model, _shapes(input_shapes))
    lap("load")
    cg = build(m)
    groups = find_groups(cg, exclude)
    lap("graph")
    before = _stats(m, cg.ctx, m.file_size)
    scores = score(cg, groups, criterion, reduce, seed)
    if not scores:
        raise NothingToPrune(f"{m.path or '<model>'}: no prunable channel group (see `spa analyze`)")
    if target_macs is not None or global_ranking:
        plan = global_plan(cg, groups, scores, round_to, ratio=ratio, target_macs=target_macs)
    else:
        plan = local_plan(groups, scores, ratio, round_to, kinds)
    if not plan:
        raise NothingToPrune(f"{m.path or '<model>'}: the settings remove no channel")
    removed = removed_elements(groups, plan)
    sinks = tuple((n, a, tuple(int(i) for i in idx)) for (n, a), idx in sorted(removed.items())
                  if cg.g.nodes[(n, a)]["param"] and cg.g.nodes[(n, a)]["role"] == "in")
    lap("plan")
    feeds = random_inputs(m.proto, m.input_shapes, seed)
    reference = run(m.proto, feeds)
    lap("reference")
    pruned = apply(cg, keep_map(cg, removed))
    lap("rewrite")
    verdict = verify(m.proto, pruned, feeds, reference, times)
    t = time.perf_counter()
    size = pruned.ByteSize()
    if output is not None:
        size = write_atomic(pruned, output)
        lap("write")
    pm = load(pruned, m.input_shapes)
    after = _stats(pm, Ctx(pm), size)
    lap("stats")
    changes = tuple(GroupChange(g.id, g.channels, g.channels - len(plan.get(g.id, ())))
                    for g in groups if g.id in plan)
    exact = all(g.kind != "hidden" for g in groups if g.id in plan)
    return PruneResult(m.path or "<model>", output, before, after, changes,
                       sum(not g.prunable for g in groups), len(scores), verdict, times, sinks, pruned, exact)
