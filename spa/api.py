"""The Python API: analyze and prune, each a short sequence of stage calls
(io -> graph -> score -> edit -> verify -> io). The CLI is a thin layer over these."""

from __future__ import annotations

import fnmatch
import os
import time
from collections import Counter
from dataclasses import replace

import numpy as np

from .edit import (MAX_RATIO, NORMALIZE, TARGET_SLACK, adapt_shapes, apply, fold_means, global_plan,
                   interface_changes, keep_map, local_plan, sidecar, sidecar_path)
from .errors import ModelError, NothingToPrune, UsageError, first_line
from .graph import couple, interface_blocked, oracle_mask, param_count, removed_elements, total_macs
from .measure.bench import BenchSettings, check_device, check_settings
from .measure.target import latency_plan
from .io.growth import growth_note
from .io import (DataFile, Staged, check_output, check_targets, default_output, full_check, load, load_arrays,
                 parse_input_shapes, write_atomic)
from .protos import graph_inputs
from .report import provenance, read_provenance, stamp
from .results import Analysis, GroupChange, GroupInfo, PruneResult, Stats, Verdict
from .rules import Ctx, rule_for
from .runtime import random_inputs, run_original, set_threads, threads as threads_set
from .recover import recover as refit
from .score import (Measured, Moments, Releasing, check_criterion, check_reduce, fixed_batch, read_calib, score,
                    statistics, synthetic_inputs)
from .verify import SENSITIVITY_SAMPLES, measure_sensitivity, verify as check_pruned

EXTERNAL_ABOVE = 2 * 1000 ** 3  # weights over this many bytes are written to an external data file
OBSPA_MAX_BYTES = 2 ** 31  # weight data up to which the default criterion is obspa
KINDS = ("heads", "head_dim", "mlp", "hidden")
UNVERIFIED = Verdict(checker=False, runs=False, outputs_match=False, deterministic=False)

__all__ = ["analyze", "prune", "default_output", "default_criterion", "KINDS"]


def analyze(model, input_shapes=None, exclude=()) -> Analysis:
    """Find every coupled channel group and why any is blocked.

    Args:
        model: path or onnx.ModelProto.
        input_shapes: {name: shape} or ["name:1,3,224,224"] for dynamic inputs.
        exclude: glob patterns of node or tensor names to protect.
    """
    m = load(model, _shapes(input_shapes), must_run=False)  # analysis reads shapes, it runs nothing
    _check_exclude(m, exclude)
    c = couple(m, exclude)
    stats = _stats(m, c.cg.ctx, m.file_size)
    missing = Counter(n.op for n in m.graph.nodes if rule_for(n) is None)
    infos = _group_infos(c.cg, c.groups, stats.macs) + (_group_infos(c.cg2, c.head_dims, stats.macs)
                                                          if c.head_dims else ())
    notes = ((m.sizes_note,) if m.sizes_note else ()) + tuple(_interface_note(c, stats.macs))
    return Analysis(m.path or "<model>", stats, infos, tuple(sorted(missing.items())), read_provenance(m.proto),
                    notes)


def prune(model, output=None, *, ratio=None, target_macs=None, criterion=None, reduce="mean",
          global_ranking=False, round_to="auto", exclude=(), input_shapes=None, seed=0,
          force=False, kinds=None, external_data=None, verify=True, compensate=None, calib=None,
          normalize="mean", max_ratio=MAX_RATIO, recover=None, sensitivity=None, progress=None,
          inputs=None, threads=None, allow_interface_change=False, target_latency=None, batch=1,
          device="cpu") -> PruneResult:
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
            obs) and for recovery: an .npz path, a folder of <input>.npy files, or
            {input name: array}, samples on axis 0.
        recover: refit the pruned model's weights so each layer reproduces the original's
            outputs on `calib` (spa.recover, docs/recover.md); None: on whenever `calib`
            is given; True without `calib`: on SYNTHETIC_SAMPLES synthetic inputs (the
            probe's smooth random fields, float inputs only). The masked-equivalence oracle
            then no longer holds for the refitted weights.
        sensitivity: measure, on `calib`, how much the outputs change when each group alone
            loses channels (spa.verify.sensitivity), and let a global plan (target_macs,
            global_ranking) remove where the measured error per MACs saved is lowest; None:
            on whenever `calib` is given and the plan is global.
        inputs: inputs to measure the pruned model's fidelity on (Verdict.fidelity): an
            .npz path, a folder of <input>.npy files or {input name: array}, samples on
            axis 0, extra arrays ignored; None: `calib` when given, else generated inputs.
        threads: threads for onnxruntime sessions and numpy's BLAS during this prune (None: as
            set before, by default onnxruntime's and OpenBLAS's own counts).
        allow_interface_change: let groups that reach graph inputs or outputs be pruned (True,
            or glob patterns of the input and output names that may change), e.g. a decoder's
            KV cache. The pruned model then takes and gives those tensors with the removed
            elements dropped (PruneResult.interface; with `output`, a JSON sidecar
            <stem>.interface.json lists each change), and verification feeds and compares them so.
        target_latency: instead of ratio or target_macs, prune globally until the pruned
            model's latency is this share of the original's, measured in onnxruntime with the
            `spa bench` protocol at `batch` on `device` ("cpu" or "cuda") with `threads`
            (spa.measure.target: a latency model from the profiled kernels, then measured and
            corrected). PruneResult.latency reports predicted and measured ratios.
        progress: optional callable(stage, i, n, name): (stage, 0, 0, "") as each stage
            begins (load, reference, graph, score, sensitivity, plan, rewrite, recover, verify,
            stats, write), and (stage, i, n, name) as counted stages advance (sensitivity:
            after each group; recovery: after each layer; verification: after each run).

    Returns:
        A PruneResult; `.model` holds the pruned onnx.ModelProto (with external data,
        it refers to the written data file).
    """
    if threads is not None:
        args = dict(locals())
        del args["model"], args["output"]
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise UsageError(f"--threads must be a non-negative integer, got {threads!r}")
        previous = set_threads(threads)
        try:
            return prune(model, output, **{**args, "threads": None})
        finally:
            set_threads(previous)
    kinds = {k: v for k, v in (kinds or {}).items() if v is not None}
    _check_args(ratio, target_macs, round_to, reduce, kinds, normalize, max_ratio, global_ranking,
                target_latency is not None)
    latency = _latency_settings(target_latency, ratio, target_macs, kinds, batch, device, threads)
    if latency is not None and allow_interface_change:
        raise UsageError("--target-latency cannot be combined with --allow-interface-change yet (the timed "
                         "variants would take other inputs than the original)")
    if recover is None:
        recover = calib is not None
    criterion = check_criterion(criterion, calib is not None, recover)
    check_output(model, output, force)
    clock = _Clock(progress)
    clock.begin("load")
    m = load(model, _shapes(input_shapes))
    where = m.path or "<model>"
    clock.lap("load")
    _check_exclude(m, exclude)
    criterion = criterion or default_criterion(m)
    external = _wants_external(m, external_data, output)
    check_targets(m, output, external, force)
    feeds = random_inputs(m.proto, m.input_shapes, seed, where)
    reference = _reference(m, feeds, clock) if verify else None
    local = target_macs is None and target_latency is None and not global_ranking
    clock.begin("graph")
    c = couple(m, exclude, head_dims=local, interface=allow_interface_change)
    clock.lap("graph", then="score")
    before = _stats(m, c.cg.ctx, m.file_size)
    data = None if calib is None else read_calib(calib, m.proto)
    measure = _fidelity_inputs(m, inputs, data, calib)
    sensing = not local and data is not None and sensitivity is not False and not m.external
    fit_on, held = _split(data) if sensing else (data, data)
    stats, scores = _score(m, c, criterion, reduce, seed, fit_on)
    clock.lap("score")
    if compensate is None:
        compensate = criterion in ("obspa", "obs")
    curves, skipped = {}, []
    if not local and data is not None and sensitivity is not False and m.external:
        skipped.append("measured sensitivity skipped: a model with external data is planned by normalised scores")
    elif sensing:
        clock.begin("sensitivity")
        step = None if progress is None else (lambda i, n, name: progress("sensitivity", i, n, name))
        curves = measure_sensitivity(m.runnable, c, scores, _stats_or_moments(stats, c), held, compensate, max_ratio,
                                     fixed_batch(m.proto) or 16, step)
        clock.lap("sensitivity")
    clock.begin("plan")
    timed = None
    if latency is not None:
        latency = replace(latency, input_shapes=m.input_shapes or {})
        plan, timed = latency_plan(_source(m), c, scores, target_latency, latency, round_to, normalize, max_ratio,
                                   curves, clock.steps("plan"))
    elif local:
        plan = local_plan(c.all, scores, ratio, round_to, kinds)
    else:
        plan = global_plan(c.cg, c.groups, scores, round_to, ratio=ratio, target_macs=target_macs,
                           normalize=normalize, max_ratio=max_ratio, curves=curves)
    if not plan:
        raise NothingToPrune(f"{where}: the settings remove no channel")
    keep = keep_map(c.cg, removed_elements(c.all, plan))
    changed_io = interface_changes(m.proto, keep)
    clock.lap("plan", then="rewrite")
    edited = c.cg.copy()  # compensation and rewrite edit a copy: c stays as analysed
    updates = _compensate(edited, c, stats, plan) if compensate else ()
    stats = None  # covariances and moments: not needed past compensation, and large
    notes = ([m.sizes_note] if m.sizes_note else []) + skipped + _interface_note(c, before.macs, cache_like=True)
    if recover and changed_io:
        recover = False
        notes.append("recovery skipped: the graph interface changed (refitting feeds the original's inputs)")
    if recover and data is None:
        data = _synthetic(m)
    if recover and external:
        notes.append("recovery skipped: models written with external data (over 2 GB) are not refitted yet")
    fit = _Refit(m, keep, data, progress) if recover and not external else None
    settings = {"ratio": ratio, "target_macs": target_macs, "target_latency": target_latency, "kinds": kinds, "global_ranking": global_ranking,
                "reduce": reduce, "normalize": normalize, "max_ratio": max_ratio, "round_to": round_to,
                "exclude": list(exclude), "input_shapes": _shapes(input_shapes), "seed": seed,
                "calib": calib if calib is None or isinstance(calib, str) else "<arrays>", "recover": recover,
                "compensate": compensate, "verify": verify,
                "inputs": inputs if inputs is None or isinstance(inputs, str) else "<arrays>",
                "allow_interface_change": allow_interface_change if isinstance(allow_interface_change, bool)
                else list(allow_interface_change)}
    mark = _Provenance(m, before, criterion, settings, checked=reference is not None, interface=changed_io)
    try:
        if external:
            pruned, verdict, size = _write_external(m, edited, keep, output, feeds, reference, clock, measure, mark)
        else:
            pruned, verdict, size = _write_proto(m, edited, keep, output, feeds, reference, clock, fit, measure,
                                                 mark)
        if output is not None and allow_interface_change:
            _write_text(sidecar_path(os.fspath(output)), sidecar(changed_io))
    except OSError as exc:  # a full disk, a read-only folder: nothing was written
        raise UsageError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    after = Stats(mark.after.params, mark.after.macs, size)
    grew = None if external else growth_note(m.proto, pruned, m.file_size, size)
    if grew:
        notes.append(grew)
    changes = tuple(GroupChange(g.id, g.channels, g.channels - len(plan.get(g.id, ())))
                    for g in c.all if g.id in plan)
    exact = all(g.kind != "hidden" for g in c.groups if g.id in plan)
    return PruneResult(where, output, before, after, changes, sum(not g.prunable for g in c.groups), len(scores),
                       verdict, clock.times, oracle_mask(c, plan), pruned, exact, updates, criterion, keep,
                       _notes(target_macs, before, after, max_ratio) + tuple(notes), fit and fit.report,
                       {gid: tuple(zip(cv.counts.tolist(), cv.errors.tolist())) for gid, cv in curves.items()},
                       changed_io, timed)


def default_criterion(m) -> str:
    """"obspa", or "l2" above OBSPA_MAX_BYTES of weights: obspa holds every weight in
    memory and may run the model on synthetic inputs, l2 streams the weights (on the 3.25 GB
    model of tools/memory_bench.py: 8.4 GB peak RSS and 91 s against 0.9 GB and 8 s)."""
    size = m.store.data_bytes if m.store else m.proto.ByteSize()
    return "obspa" if size <= OBSPA_MAX_BYTES else "l2"


def _latency_settings(target_latency, ratio, target_macs, kinds, batch, device, threads):
    """Bench settings for a --target-latency plan (input shapes follow once the model is
    loaded), or None without a latency target."""
    if target_latency is None:
        return None
    if ratio is not None or target_macs is not None or kinds:
        raise UsageError("--target-latency cannot be combined with --ratio, --target-macs or per-kind ratios")
    if not 0 < target_latency < 1:
        raise UsageError(f"--target-latency must be between 0 and 1 (exclusive), got {target_latency}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch!r}")
    settings = BenchSettings(device=device, batches=(batch,), warmup=3, threads=threads or threads_set(),
                             memory=False)
    check_settings(settings)
    check_device(settings)
    return settings


def _check_args(ratio, target_macs, round_to, reduce, kinds, normalize, max_ratio, global_ranking, timed=False):
    if target_macs is not None and (ratio is not None or kinds):
        raise UsageError("--target-macs cannot be combined with --ratio, --heads, --head-dim, --mlp or --hidden")
    if ratio is None and target_macs is None and not kinds and not timed:
        raise UsageError("give --ratio, --target-macs, --target-latency, or a per-kind ratio (--heads, --head-dim, "
                         "--mlp, --hidden)")
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
    check_reduce(reduce)
    if not 0 < max_ratio <= 1:
        raise UsageError(f"--max-ratio must be above 0 and at most 1, got {max_ratio}")
    if normalize not in NORMALIZE:
        raise UsageError(f"unknown normalisation {normalize!r}; choose from {', '.join(NORMALIZE)}")
    if kinds and global_ranking:
        raise UsageError("per-kind ratios (--heads, --head-dim, --mlp, --hidden) work with local ranking only")


def _shapes(input_shapes):
    if input_shapes is None or isinstance(input_shapes, dict):
        return input_shapes
    return parse_input_shapes(input_shapes)


def _stats(model, ctx, size) -> Stats:
    return Stats(param_count(model.graph, ctx), total_macs(model.graph.nodes, ctx), size)


def _fidelity_inputs(m, inputs, data, calib) -> tuple:
    """(arrays, where they came from) that verification measures fidelity on: `inputs`,
    else the calibration data (else None: it generates them)."""
    if inputs is None:
        return data, calib if isinstance(calib, str) else "calibration data"
    where = os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else "given inputs"
    arrays = load_arrays(inputs) if isinstance(inputs, (str, os.PathLike)) else dict(inputs)
    names = [vi.name for vi in graph_inputs(m.proto)]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"--inputs {where}: no array for input(s) {', '.join(missing)} "
                         f"(has: {', '.join(sorted(arrays)) or 'none'})")
    return {n: arrays[n] for n in names}, where


def _check_exclude(m, patterns):
    """An --exclude pattern that matches no node or tensor name is a typo: refuse it."""
    names = [n.name for n in m.graph.nodes] + list(m.graph.tensors())
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise UsageError(f"--exclude {p!r} matches no node or tensor name of {m.path or '<model>'} "
                             "(names are case-sensitive; see `spa analyze -v`)")


LABELS = {"heads": "heads", "head_dim": "head_dim", "hidden": "hidden size"}


def _group_infos(cg, groups, macs):
    infos = []
    for gr in groups:
        members = tuple(f"{n}[{a}]" for (n, a) in gr.spaces if cg.g.nodes[(n, a)]["param"])
        owners = [o for (n, a) in gr.spaces if cg.g.nodes[(n, a)]["param"] for o in cg.ctx.tensors[n].outputs]
        layers = tuple(dict.fromkeys(o.name for o in owners))
        label = LABELS.get(gr.kind) or ("conv channels" if any(o.op.startswith("Conv") for o in owners)
                                        else "MLP width")
        nodes = sorted({n.name for (name, _) in gr.spaces
                        for n in list(cg.ctx.tensors[name].inputs) + list(cg.ctx.tensors[name].outputs)})
        reason = "; ".join(gr.blockers[:3]) + (f" (+{len(gr.blockers) - 3} more)" if len(gr.blockers) > 3 else "")
        span = max(int(np.bincount(ch).max()) for _, ch in gr.spaces.values())
        infos.append(GroupInfo(gr.id, gr.channels, members, tuple(nodes),
                               gr.macs / macs if macs else 0.0, gr.prunable, reason, span, gr.kind, layers, label))
    return tuple(infos)


def _wants_external(m, external_data, output) -> bool:
    external = bool(external_data) if external_data is not None else m.store.data_bytes > EXTERNAL_ABOVE
    if external and output is None:
        raise UsageError("writing external data needs an output path")
    return external


def _reference(m, feeds, clock) -> dict:
    """Make sure the original is valid and runs (rules assume a sound model); its outputs."""
    clock.begin("reference")
    try:  # load ran the plain checker already
        full_check(m.path if m.external else m.runnable, checked=True)
    except Exception as exc:  # the checker and strict shape inference raise several types
        raise ModelError(f"{m.path or '<model>'}: invalid ONNX model (full check: {first_line(exc)})") from exc
    out = run_original(_source(m), feeds, m.path or "<model>")
    clock.lap("reference")
    return out


def _score(m, c, criterion, reduce, seed, calib):
    """(statistics, {group id: channel scores}) of every prunable group."""
    stats = statistics(c.cg, criterion, calib)
    scores = score(c.cg, Releasing(c.groups, m.release), criterion, reduce, seed, stats)
    if c.head_dims:
        stats2 = stats if stats is None or isinstance(stats, Measured) else statistics(c.cg2, criterion, like=stats)
        scores.update(score(c.cg2, Releasing(c.head_dims, m.release), criterion, reduce, seed, stats2))
    m.release()
    if not scores:
        raise NothingToPrune(f"{m.path or '<model>'}: no prunable channel group{_main_blocker(c.groups)} "
                             "(see `spa analyze`)")
    return stats, scores


def _compensate(edited, c, stats, plan) -> tuple:
    """Fold what the removed channels contributed into the weights of `edited` that stay
    (bias folds follow the main graph's groups only); the updates, for the masked oracle."""
    main = {gid: ch for gid, ch in plan.items() if gid < len(c.groups)}
    removed = removed_elements(c.groups, main)
    return fold_means(edited, _stats_or_moments(stats, c), removed, keep_map(c.cg, removed))


def _split(data) -> tuple:
    """(samples the statistics are measured on, samples sensitivity is measured on): the last
    SENSITIVITY_SAMPLES are held out when there are at least twice as many (measured on the
    samples that fitted the compensation, a wide layer's removal looks free)."""
    n = len(next(iter(data.values())))
    if n < 2 * SENSITIVITY_SAMPLES:
        return data, data
    return ({k: v[:n - SENSITIVITY_SAMPLES] for k, v in data.items()},
            {k: v[n - SENSITIVITY_SAMPLES:] for k, v in data.items()})


def _stats_or_moments(stats, c):
    """The criterion's statistics, or the data-free moments where it computed none."""
    return stats if stats is not None else Moments(c.cg)


def _notes(target_macs, before, after, max_ratio) -> tuple:
    """Say so when --target-macs stopped short: the reachable maximum with these settings."""
    reached = 1 - after.macs / before.macs if before.macs else 0.0
    if target_macs is None or reached >= target_macs - TARGET_SLACK:
        return ()
    return (f"--target-macs {target_macs:g} is out of reach: MACs fell by {reached:.1%}, the most these settings "
            f"allow (blocked groups, --max-ratio {max_ratio:g}, --exclude)",)


INTERFACE_NOTE_SHARE = 0.05  # analyze names --allow-interface-change from this share of the MACs on


def _interface_note(c, macs, cache_like=False) -> list:
    """A note naming --allow-interface-change when groups still blocked only by the graph's
    interface carry INTERFACE_NOTE_SHARE of the MACs or more (together). `cache_like`
    (prune's result): only when one of them reaches both a graph input and a graph output,
    as a KV cache does; a classifier's class axis alone is seldom meant to change."""
    graph = c.cg.model.graph
    ins, outs = {t.name for t in graph.inputs}, {t.name for t in graph.outputs}
    held = [g for g in c.groups if interface_blocked(g)]
    share = min(1.0, sum(g.macs for g in held) / macs) if macs else 0.0
    if not held or share < INTERFACE_NOTE_SHARE:
        return []
    names = [{s[0] for s in g.spaces} for g in held]
    if cache_like and not any(n & ins and n & outs for n in names):
        return []
    names = sorted(set().union(*names) & (ins | outs))
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    return [f"{len(held)} group(s) with {share:.0%} of the MACs are blocked only because they reach the graph's "
            f"inputs or outputs ({shown}); --allow-interface-change (API: allow_interface_change=True) prunes them "
            "and writes <output stem>.interface.json describing the new interface"]


def _write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _main_blocker(groups) -> str:
    top = max(groups, key=lambda g: g.macs, default=None)
    if top is None or not top.blockers:
        return ""
    return f"; the one with the most MACs is blocked: {top.blockers[0]}"


def _source(m):
    """What onnxruntime runs for the original: its file when it has one (no second
    serialisation), else the proto."""
    return m.path or m.runnable


def _probe(m):
    """Inputs at the larger probe sizes of the dynamic dims, or None."""
    return None if m.probe_shapes is None else random_inputs(m.proto, m.probe_shapes, 1, m.path or "<model>")


class _Clock:
    """Seconds per stage (`times`); tells `progress` (callable(stage, i, n, name)) when a
    stage begins, as (stage, 0, 0, ""), and hands counted stages a step callback."""

    def __init__(self, progress=None):
        self.times, self.t, self.progress = {}, time.perf_counter(), progress

    def begin(self, name):
        if self.progress is not None:
            self.progress(name, 0, 0, "")

    def steps(self, stage):
        """callable(i, n, name) reporting the steps of `stage`, or None without progress."""
        return None if self.progress is None else (lambda i, n, name="": self.progress(stage, i, n, name))

    def lap(self, name, then=None):
        now = time.perf_counter()
        self.times[name] = now - self.t
        self.t = now
        if then is not None:
            self.begin(then)

    def skip(self):
        self.t = time.perf_counter()


SYNTHETIC_SAMPLES = 64  # synthetic inputs recovery refits on when no calibration data is given


def _synthetic(m) -> dict:
    """Calibration inputs without data: the probe's smooth random fields and their sparse
    excursions (spa.score.probe), at the model's input shapes."""
    shapes = {k: (1,) + tuple(v[1:]) for k, v in m.input_shapes.items()}
    parts = []
    for seed in range(SYNTHETIC_SAMPLES):
        part = synthetic_inputs(m.proto, shapes, seed)
        if part is None:
            raise UsageError(f"{m.path or '<model>'}: recovery without --calib needs float inputs (it runs on "
                             "synthetic images); give --calib data")
        parts.append(part)
        if sum(len(next(iter(p.values()))) for p in parts) >= SYNTHETIC_SAMPLES:
            break
    return {k: np.concatenate([p[k] for p in parts])[:SYNTHETIC_SAMPLES] for k in parts[0]}


class _Refit:
    """The recovery stage: refit the rewritten model's weights on the calibration data
    (spa.recover); `report` holds what it did."""

    def __init__(self, m, keep, data, progress):
        self.m, self.keep, self.data, self.progress, self.report = m, keep, data, progress, None

    def __call__(self, pruned):
        step = None if self.progress is None else (lambda i, n, name: self.progress("recover", i, n, name))
        pruned, self.report = refit(_source(self.m), pruned, self.keep, self.data,
                                    batch=fixed_batch(self.m.proto) or 16, progress=step)
        return pruned


class _Provenance:
    """Measures the pruned model (params, MACs: `after`) and records the prune in its
    metadata_props (spa.report.provenance), after verification and before it is written."""

    def __init__(self, m, before, criterion, settings, checked, interface=()):
        self.m, self.before, self.criterion, self.settings, self.checked = m, before, criterion, settings, checked
        self.after, self.interface = None, interface

    def __call__(self, pruned, src=None):
        shapes = adapt_shapes(self.interface, self.m.input_shapes)
        pm = load(src or pruned, shapes, checked=self.checked, dynamic=False)
        self.after = _stats(pm, Ctx(pm), 0)
        stamp(pruned, provenance(self.m.path or "<model>", self.settings, self.criterion, self.before, self.after))


def _write_proto(m, cg, keep, output, feeds, reference, clock, fit, measure, mark):
    """Rewrite in memory, recover (with `fit`), verify (when `reference` is given), then
    write one file atomically."""
    pruned = apply(cg, keep)
    clock.lap("rewrite", then="recover" if fit is not None else None)
    if fit is not None:
        pruned = fit(pruned)
        clock.lap("recover")
    verdict = UNVERIFIED
    if reference is not None:
        clock.begin("verify")
        verdict = check_pruned(_source(m), pruned, feeds, reference, clock.times, m.path or "<model>", _probe(m),
                               *measure, progress=clock.steps("verify"), interface=mark.interface)
        clock.skip()
    clock.begin("stats")
    mark(pruned)
    clock.lap("stats", then="write" if output is not None else None)
    size = pruned.ByteSize()
    if output is not None:
        size = write_atomic(pruned, output)
        clock.lap("write")
    return pruned, verdict, size


def _write_external(m, cg, keep, output, feeds, reference, clock, measure, mark):
    """Rewrite straight into a staged model and data file, verify the staged files
    (when `reference` is given), then move them into place."""
    with Staged(output) as st:
        sink = DataFile(st.data, m.store.files)
        try:
            pruned = apply(cg, keep, sink)
        finally:
            sink.close()
        clock.lap("rewrite", then="write")
        size = st.write(pruned)
        m.release()
        clock.lap("write")
        verdict = UNVERIFIED
        if reference is not None:
            clock.begin("verify")
            verdict = check_pruned(_source(m), st.model, feeds, reference, clock.times, m.path or "<model>",
                                   _probe(m), *measure, progress=clock.steps("verify"), interface=mark.interface)
            clock.skip()
        clock.begin("stats")
        mark(pruned, st.model)
        size = st.write(pruned)  # again, with the provenance: the model file only, the data stays
        clock.lap("stats")
        st.commit()
    return pruned, verdict, size
