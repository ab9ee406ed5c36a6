"""The Python API: analyze and prune. The CLI is a thin layer over these."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import numpy as np

from .errors import ModelError, NothingToPrune, UsageError
from .external import DataFile
from .graph import build
from .groups import find_groups
from .headdim import head_dim_groups, sink_roles
from .compensate import fold_means
from .calib import Measured, read as read_calib
from .criteria import get as get_criterion
from .importance import REDUCTIONS, score, statistics
from .moments import Moments
from .load import load, parse_input_shapes
from .macs import param_count, total_macs
from .plan import MAX_RATIO, NORMALIZE, global_plan, local_plan
from .results import Analysis, GroupChange, GroupInfo, PruneResult, Stats, Verdict
from .rewrite import apply, keep_map, removed_elements
from .rules import rule_for
from .rules.base import Ctx
from .save import Staged, data_path, write_atomic
from .skeleton import full_check
from .verify import random_inputs, run_original
from .verify import verify as check_pruned

log = logging.getLogger("spa")
EXTERNAL_ABOVE = 2 * 1000 ** 3  # weights over this many bytes are written to an external data file
UNVERIFIED = Verdict(checker=False, runs=False, outputs_match=False, deterministic=False)


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
    cg2, head_dims = head_dim_groups(m, groups, exclude)
    stats = _stats(m, cg.ctx, m.file_size)
    missing = Counter(n.op for n in m.graph.nodes if rule_for(n) is None)
    infos = _group_infos(cg, groups, stats.macs) + (_group_infos(cg2, head_dims, stats.macs) if head_dims else ())
    return Analysis(m.path or "<model>", stats, infos, tuple(sorted(missing.items())))


KINDS = ("heads", "head_dim", "mlp", "hidden")


def _check_args(ratio, target_macs, round_to, reduce, kinds):
    if target_macs is not None and (ratio is not None or kinds):
        raise UsageError("--target-macs cannot be combined with --ratio, --heads, --head-dim, --mlp or --hidden")
    if ratio is None and target_macs is None and not kinds:
        raise UsageError("give --ratio, --target-macs, or a per-kind ratio (--heads, --head-dim, --mlp, --hidden)")
    bad = set(kinds) - set(KINDS)
    if bad:
        raise UsageError(f"unknown group kind(s) {', '.join(sorted(bad))}; choose from {', '.join(KINDS)}")
    for name, v in [("--ratio", ratio), ("--target-macs", target_macs)]:
        if v is not None and not 0 < v < 1:
            raise UsageError(f"{name} must be between 0 and 1 (exclusive), got {v}")
    for k, v in kinds.items():
        if not 0 <= v < 1:
            raise UsageError(f"--{k} must be at least 0 and below 1, got {v}")
    if round_to != "auto" and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise UsageError(f"--round-to must be a positive integer or 'auto', got {round_to!r}")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")


OBSPA_MAX_BYTES = 2 ** 31  # weight data up to which the default criterion is obspa


def default_criterion(m) -> str:
    """"obspa", or "l2" above OBSPA_MAX_BYTES of weights: obspa holds every weight in
    memory and may run the model on synthetic inputs, l2 streams the weights (on the 3.25 GB
    model of tools/memory_bench.py: 8.4 GB peak RSS and 91 s against 0.9 GB and 8 s)."""
    size = m.store.data_bytes if m.store else m.proto.ByteSize()
    return "obspa" if size <= OBSPA_MAX_BYTES else "l2"


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


def _check_targets(m, output, external, force):
    """Refuse to write over the input model or its external data, or over a data file
    that exists, without --force."""
    if output is None:
        return
    inputs = set(m.store.paths) | ({os.path.realpath(m.path)} if m.path else set())
    targets = [output] + ([data_path(output)] if external else [])
    for target in targets:
        if os.path.realpath(target) in inputs:
            raise UsageError(f"{target}: writing it would overwrite the input model or its data")
    if external and os.path.exists(targets[1]) and not force:
        raise UsageError(f"{targets[1]}: file exists (use --force to overwrite)")


def _wants_external(m, external_data) -> bool:
    if external_data is not None:
        return bool(external_data)
    return m.store.data_bytes > EXTERNAL_ABOVE


class _Releasing(list):
    """The groups; iterating them releases mapped external weights before each next
    group, so scoring holds one group's weights in memory at a time."""

    def __init__(self, groups, release):
        super().__init__(groups)
        self._release = release

    def __iter__(self):
        for g in list.__iter__(self):
            yield g
            self._release()


class _Clock:
    def __init__(self):
        self.times, self.t = {}, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.times[name] = now - self.t
        self.t = now

    def skip(self):
        self.t = time.perf_counter()


def prune(model, output=None, *, ratio=None, target_macs=None, criterion=None, reduce="mean",
          global_ranking=False, round_to="auto", exclude=(), input_shapes=None, seed=0,
          force=False, kinds=None, external_data=None, verify=True, compensate=None, calib=None,
          normalize="mean", max_ratio=MAX_RATIO) -> PruneResult:
    """Prune a model, verify it, and write it if `output` is given.

    Args:
        model: path or onnx.ModelProto. Never modified.
        output: where to write the pruned model, or None to only return it.
        ratio: share of channels to remove from every prunable group (local), or across
            all of them with global_ranking.
        target_macs: instead of ratio, remove lowest-scored channels globally until MACs
            fall by this share.
        criterion: importance criterion name (see spa.criteria.CRITERIA); None: "obs" with
            `calib`, else "obspa", or "l2" for models with over 2 GB of weights (default_criterion).
        reduce: how member scores combine: mean, sum, max or first.
        normalize: what each group's scores are divided by before global ranking
            (target_macs, global_ranking): "mean" (default), "max" or "none".
        max_ratio: the largest share of one group's channels that target_macs or
            global_ranking may remove (default 0.8).
        round_to: keep channel counts at multiples of this many elements; "auto" (the
            default): per group the nearest multiple of 8, else 4, 2, 1, within half the asked removal.
        exclude: glob patterns of node or tensor names whose groups are protected.
        input_shapes: concrete shapes for dynamic inputs.
        seed: seed of the random criterion and of verification inputs.
        force: overwrite an existing output.
        kinds: per-kind ratios, e.g. {"heads": 0.25, "head_dim": 0.25, "mlp": 0.5, "hidden": 0.0}, overriding
            `ratio` for groups of that kind (local ranking only).
        external_data: write tensors of 1 KB or more to `<output>.data`; None decides
            by size (weights over 2 GB). Needs `output`.
        verify: run the checks of spa.verify before writing (the default).
        compensate: fold removed channels' expected contribution into the consumers'
            biases (OBS update); default on for criteria "obspa" and "obs".
        calib: calibration inputs for the criteria that need data (taylor, hessian,
            obs): an .npz path, a folder of <input>.npy files, or {input name: array},
            samples on axis 0.

    Returns:
        A PruneResult; `.model` holds the pruned onnx.ModelProto (with external data,
        it refers to the written data file).
    """
    kinds = {k: v for k, v in (kinds or {}).items() if v is not None}
    _check_args(ratio, target_macs, round_to, reduce, kinds)
    if not 0 < max_ratio <= 1:
        raise UsageError(f"--max-ratio must be above 0 and at most 1, got {max_ratio}")
    if normalize not in NORMALIZE:
        raise UsageError(f"unknown normalisation {normalize!r}; choose from {', '.join(NORMALIZE)}")
    if calib is not None and criterion is None:
        criterion = "obs"  # calibration data given: the criterion that uses it best (docs/accuracy.md)
    needs_calib = criterion is not None and getattr(get_criterion(criterion), "needs_calib", False)
    if calib is None and needs_calib:
        raise UsageError(f"criterion {criterion!r} needs calibration data: give --calib inputs.npz "
                         "(or a folder of <input>.npy files)")
    if calib is not None and not needs_calib:
        raise UsageError(f"criterion {criterion!r} reads no calibration data: drop --calib, or use obs, "
                         "taylor or hessian")
    if kinds and global_ranking:
        raise UsageError("per-kind ratios (--heads, --head-dim, --mlp, --hidden) work with local ranking only")
    _check_output(model, output, force)
    clock = _Clock()
    m = load(model, _shapes(input_shapes))
    clock.lap("load")
    criterion = criterion or default_criterion(m)
    external = _wants_external(m, external_data)
    if external and output is None:
        raise UsageError("writing external data needs an output path")
    _check_targets(m, output, external, force)
    feeds = random_inputs(m.proto, m.input_shapes, seed, m.path or "<model>")
    reference = None
    if verify:  # first make sure the original is valid and runs: rules assume a sound model
        _full_check(m)
        reference = run_original(_source(m), feeds, m.path or "<model>")
        clock.lap("reference")
    cg = build(m)
    groups = find_groups(cg, exclude)
    local = target_macs is None and not global_ranking
    cg2, head_dims = head_dim_groups(m, groups, exclude) if local else (None, [])
    clock.lap("graph")
    before = _stats(m, cg.ctx, m.file_size)
    stats = statistics(cg, criterion, None if calib is None else read_calib(calib, m.proto))
    scores = score(cg, _Releasing(groups, m.release), criterion, reduce, seed, stats)
    if head_dims:
        stats2 = stats if stats is None or isinstance(stats, Measured) else statistics(cg2, criterion, like=stats)
        scores.update(score(cg2, _Releasing(head_dims, m.release), criterion, reduce, seed, stats2))
    m.release()
    if not scores:
        raise NothingToPrune(f"{m.path or '<model>'}: no prunable channel group{_main_blocker(groups)} "
                             "(see `spa analyze`)")
    if local:
        plan = local_plan(groups + head_dims, scores, ratio, round_to, kinds)
    else:
        plan = global_plan(cg, groups, scores, round_to, ratio=ratio, target_macs=target_macs, normalize=normalize,
                           max_ratio=max_ratio)
    if not plan:
        raise NothingToPrune(f"{m.path or '<model>'}: the settings remove no channel")
    main_plan = {gid: ch for gid, ch in plan.items() if gid < len(groups)}
    removed = removed_elements(groups + head_dims, plan)
    sinks = _sinks([(cg, groups, main_plan), (cg2, head_dims, plan)])
    clock.lap("plan")
    keep = keep_map(cg, removed)
    if compensate is None:
        compensate = criterion in ("obspa", "obs")
    updates = ()
    if compensate:  # bias folds follow the main graph's groups only
        main_removed = removed_elements(groups, main_plan)
        updates = fold_means(cg, stats if stats is not None else Moments(cg), main_removed,
                             keep_map(cg, main_removed))
    try:
        if external:
            pruned, verdict, size = _write_external(m, cg, keep, output, feeds, reference, clock)
        else:
            pruned, verdict, size = _write_proto(m, cg, keep, output, feeds, reference, clock)
    except OSError as exc:  # a full disk, a read-only folder: nothing was written
        raise UsageError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    pm = load(output if external else pruned, m.input_shapes, checked=reference is not None, dynamic=False)
    after = _stats(pm, Ctx(pm), size)
    clock.lap("stats")
    changes = tuple(GroupChange(g.id, g.channels, g.channels - len(plan.get(g.id, ())))
                    for g in groups + head_dims if g.id in plan)
    exact = all(g.kind != "hidden" for g in groups if g.id in plan)
    return PruneResult(m.path or "<model>", output, before, after, changes,
                       sum(not g.prunable for g in groups), len(scores), verdict, clock.times, sinks, pruned, exact, updates,
                       criterion, keep)


def _sinks(parts) -> tuple:
    """(tensor, axis, indices) of the parameter slices the masked oracle zeroes, from
    (channel graph, groups, plan) parts."""
    out: dict = {}
    for cg, groups, plan in parts:
        for gr in groups:
            if gr.id not in plan:
                continue
            for s, idx in removed_elements([gr], {gr.id: plan[gr.id]}).items():
                node = cg.g.nodes[s]
                if node["param"] and node["role"] in sink_roles(gr):
                    out[s] = np.union1d(out.get(s, idx), idx)
    return tuple((n, a, tuple(int(i) for i in idx)) for (n, a), idx in sorted(out.items()))


def _main_blocker(groups) -> str:
    top = max(groups, key=lambda g: g.macs, default=None)
    if top is None or not top.blockers:
        return ""
    return f"; the one with the most MACs is blocked: {top.blockers[0]}"


def _source(m):
    """What onnxruntime runs for the original: its file when it has one (no second
    serialisation), else the proto."""
    return m.path or m.proto


def _probe(m):
    """Inputs at the larger probe sizes of the dynamic dims, or None."""
    return None if m.probe_shapes is None else random_inputs(m.proto, m.probe_shapes, 1, m.path or "<model>")


def _full_check(m):
    try:  # load ran the plain checker already
        full_check(m.path if m.external else m.proto, checked=True)
    except Exception as exc:  # the checker and strict shape inference raise several types
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
        raise ModelError(f"{m.path or '<model>'}: invalid ONNX model (full check: {text})") from exc


def _write_proto(m, cg, keep, output, feeds, reference, clock):
    """Rewrite in memory, verify (when `reference` is given), then write one file atomically."""
    pruned = apply(cg, keep)
    clock.lap("rewrite")
    verdict = UNVERIFIED
    if reference is not None:
        verdict = check_pruned(m.proto, pruned, feeds, reference, clock.times, m.path or "<model>", _probe(m))
        clock.skip()
    size = pruned.ByteSize()
    if output is not None:
        size = write_atomic(pruned, output)
        clock.lap("write")
    return pruned, verdict, size


def _write_external(m, cg, keep, output, feeds, reference, clock):
    """Rewrite straight into a staged model and data file, verify the staged files
    (when `reference` is given), then move them into place."""
    with Staged(output) as st:
        m.sink = DataFile(st.data, m.store.files)
        try:
            pruned = apply(cg, keep)
        finally:
            m.sink.close()
            m.sink = None
        clock.lap("rewrite")
        size = st.write(pruned)
        m.release()
        clock.lap("write")
        verdict = UNVERIFIED
        if reference is not None:
            verdict = check_pruned(_source(m), st.model, feeds, reference, clock.times, m.path or "<model>",
                                   _probe(m))
            clock.skip()
        st.commit()
    return pruned, verdict, size
