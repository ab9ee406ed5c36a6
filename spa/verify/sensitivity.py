"""Measured sensitivity: how much the model's outputs change, on calibration data, when
one group alone loses its lowest-scored channels (with the prune's compensation), at a
few removal levels. A global plan then spends its MACs budget where the measured error
per MACs saved is lowest, instead of comparing scores normalised per group."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..edit import bias_of, export, fold_means, keep_map
from ..graph import oracle_mask, removed_elements
from ..io import load
from ..rules import Ctx
from ..runtime import run, session
from .masked import masked

LEVELS = (0.125, 0.25, 0.5, 0.8)  # shares of a group's channels removed at the measured points
SAMPLES = 32  # calibration samples the error is measured on


class Curve(NamedTuple):
    """A group's measured output error (relative squared error of all float outputs)
    after removing its `counts[i]` lowest-scored channels; counts[0] = 0, error 0."""

    counts: np.ndarray
    errors: np.ndarray

    def at(self, k) -> float:
        return float(np.interp(k, self.counts, self.errors))


def sensitivity(proto, coupling, scores, stats, data, compensate=True, max_ratio=0.8, batch=16,
                progress=None) -> dict:
    """{group id: Curve} for every scored group of the main graph.

    Args:
        proto: the loaded original model (load.Model.proto).
        coupling: its graph.Coupling.
        scores: {group id: channel scores}; channels go lowest first.
        stats: the criterion's statistics (compensation replays the prune's fold).
        data: {input: array} calibration samples; the first SAMPLES are used.
        compensate: replay the prune's compensation (edit.fold_means) in each measurement.
        max_ratio: the largest share of a group measured (the plan never removes more).
        batch: samples per onnxruntime run (a model with a fixed batch gets its own).
        progress: optional callable(i, n, name) after each group.
    """
    feeds = {k: np.asarray(v[:SAMPLES]) for k, v in data.items()}
    reference = _run(proto, feeds, batch)
    params = {name for (name, _), attrs in coupling.cg.g.nodes(data=True) if attrs["param"]}
    shared = Overridable(proto, params)
    groups = {g.id: g for g in coupling.groups}
    ids = [gid for gid in sorted(scores) if gid in groups]
    curves = {}
    for i, gid in enumerate(ids):
        order = np.argsort(scores[gid], kind="stable")
        n = len(order)
        counts = sorted({min(n - 1, max(1, round(f * n))) for f in LEVELS if f <= max_ratio + 1e-9})
        changes = [_change(shared, coupling, stats, {gid: np.sort(order[:k])}, compensate) for k in counts]
        try:
            sess = shared.session_for(set().union(*(v for _, _, v in changes if v is not None)))
        except Exception:  # onnxruntime errors have no common base class: build each masked model instead
            sess, changes = None, [(sinks, updates, None) for sinks, updates, _ in changes]
        errors = [_error(reference, _run(masked(proto, sinks, updates), feeds, batch) if values is None
                         else _run(sess, feeds, batch, values)) for sinks, updates, values in changes]
        errs = np.maximum.accumulate(np.maximum(errors, 0.0))  # removing more never helps
        curves[gid] = Curve(np.array([0] + counts), np.concatenate([[0.0], errs]))
        if progress is not None:
            progress(i + 1, len(ids), f"group {gid}")
    return curves


def _change(shared, coupling, stats, plan, compensate):
    """(sinks, compensation updates, {initializer: new value} or None) of one plan."""
    updates = ()
    if compensate:
        removed = removed_elements(coupling.groups, plan)
        updates = fold_means(coupling.cg.copy(), stats, removed, keep_map(coupling.cg, removed))
    sinks = oracle_mask(coupling, plan)
    return sinks, updates, shared.values(sinks, updates)


def _error(reference, outs) -> float:
    num = den = 0.0
    for name, want in reference.items():
        if np.issubdtype(want.dtype, np.floating):
            num += float(np.square(outs[name].astype(np.float64) - want).sum())
            den += float(np.square(want.astype(np.float64)).sum())
    return num / den if den else num


def _run(model, feeds, batch, extra=None) -> dict:
    sess = model if hasattr(model, "get_inputs") else session(model)
    n = len(next(iter(feeds.values())))
    parts = [run(sess, {**{k: v[i:i + batch] for k, v in feeds.items()}, **(extra or {})}) for i in range(0, n, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Overridable:
    """The original model with its parameters, and the biases and BatchNorm variances that
    compensation changes, as initializers that a run may override: one session per group
    serves its measurements, each run feeding the tensors its plan changes (building and
    loading a masked model per measurement costs 10x the run on a 90 MB transformer). Conv
    and Gemm without a bias get a zero one."""

    def __init__(self, proto, params):
        model = load(proto)
        ctx, graph = Ctx(model), model.graph
        self.bias, self.variance, names = {}, {}, set(params)
        for node in list(graph.nodes):
            if not node.outputs:
                continue
            out = node.outputs[0].name
            if node.op in ("Conv", "Gemm"):
                width = _output_width(node, ctx)
                if width and (len(node.inputs) < 3 or not node.inputs[2].name):
                    zero = gs.Constant(f"{out}_spa_zero_bias", np.zeros(width, ctx.const(node.inputs[1]).dtype))
                    if len(node.inputs) > 2:
                        node.inputs[2] = zero
                    else:
                        node.inputs.append(zero)
            if node.op == "BatchNormalization" and len(node.inputs) >= 5:
                self.variance[out] = node.inputs[4].name
            where = bias_of(node) if node.op in ("Conv", "Gemm", "MatMul") else None
            if where is not None and where[1] < len(where[0].inputs):
                self.bias[out] = where[0].inputs[where[1]].name
        names |= set(self.bias.values()) | set(self.variance.values())
        for name in names:
            _as_initializer(graph, ctx, name)
        self.base = export(model, graph)
        self.arrays = {t.name: numpy_helper.to_array(t) for t in self.base.graph.initializer if t.name in names}

    def session_for(self, names):
        """A session in which the initializers `names` (only those: onnxruntime cannot fuse
        or pre-pack an overridable weight) take fed values."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.base)
        listed = {i.name for i in proto.graph.input}
        proto.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                                 for t in proto.graph.initializer if t.name in names and t.name not in listed)
        return session(proto)

    def values(self, sinks, updates) -> dict | None:
        """{initializer: new value} for a plan's sinks and compensation, or None."""
        out = {}

        def value(name):
            if name not in self.arrays:
                raise KeyError(name)
            return out.setdefault(name, self.arrays[name].copy())

        try:
            for name, axis, idx in sinks:
                v = value(name)
                index = [slice(None)] * v.ndim
                index[axis] = np.asarray(idx)
                v[tuple(index)] = 0
            for kind, target, delta in updates:
                name = {"weight": target, "bias": self.bias.get(target), "variance": self.variance.get(target)}[kind]
                v = value(name)
                delta = np.asarray(delta, np.float64)
                if delta.size != v.size:
                    return None
                new = v * delta.reshape(v.shape) if kind == "variance" else v + delta.reshape(v.shape)
                out[name] = new.astype(v.dtype)
        except KeyError:
            return None
        return out


def _output_width(node, ctx) -> int | None:
    w = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim < 2 or not np.issubdtype(w.dtype, np.floating):
        return None
    if node.op == "Conv":
        return int(w.shape[0])
    return None if w.ndim != 2 else int(w.shape[0] if node.attrs.get("transB", 0) else w.shape[1])


def _as_initializer(graph, ctx, name):
    """Make the constant tensor `name` an initializer (a Constant or ConstantOfShape node's
    output becomes a gs.Constant of its value)."""
    t = graph.tensors().get(name)
    if t is None or isinstance(t, gs.Constant):
        return
    value = ctx.const(t)
    if value is None or not t.inputs:
        return
    const = gs.Constant(name, np.ascontiguousarray(value))
    t.inputs.clear()
    for user in list(t.outputs):
        for i, x in enumerate(user.inputs):
            if x is t:
                user.inputs[i] = const
