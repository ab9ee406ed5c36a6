"""Sequential layer-wise reconstruction of a pruned model from unlabeled samples."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import onnx

from . import fit, layers, params, rows
from .report import LayerFit, RecoveryReport
from .session import _reads, batches, cpu_session, live, segment

MAX_GRAM_BYTES = 1 << 28  # Gram sums of the layers fitted from one pass, at most
HALF_ABOVE = 1 << 16  # cached float32 tensors of more elements are kept as bfloat16 bits


def _pack(a):
    """Halve a large cached float32 activation: keep its top 16 bits (bfloat16, rounded to
    nearest; about 3 significant digits, far below the errors being fitted)."""
    if a.dtype != np.float32 or a.size <= HALF_ABOVE:
        return a
    u = a.view(np.uint32)
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def _unpack(a, dtype):
    if a.dtype == np.uint16 and dtype == np.float32:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(os.fspath(model))


def _positions(d: int, samples: int, positions: int) -> int:
    """Rows per sample: `positions`, or more so a layer gets about 4 rows per unknown."""
    return max(positions, -(-4 * d // max(samples, 1)))


def _ancestors(model, name, producer) -> set:
    """Indices of the nodes `name` depends on."""
    out, todo = set(), [name]
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in out:
            out.add(i)
            todo.extend(_reads(model.graph.node[i]))
    return out


def passes(model, found: list, sizes: list) -> list:
    """Group consecutive layers that can be fitted from one forward pass: none reads a
    tensor computed from another layer of its group, and their Gram sums fit in
    MAX_GRAM_BYTES.

    Returns:
        A list of lists of layer indices, in order.
    """
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    out, cur, nodes, used = [], [], set(), 0
    for i, layer in enumerate(found):
        if cur and (_ancestors(model, layer.x, producer) & nodes or used + sizes[i] > MAX_GRAM_BYTES):
            out.append(cur)
            cur, nodes, used = [], set(), 0
        cur.append(i)
        nodes.add(producer[layer.node])
        used += sizes[i]
    return out + ([cur] if cur else [])


class _Stream:
    """One model over the calibration batches, resumed from a cached cut: the tensors
    live at some node, for every batch. Advancing the cut runs only the nodes between."""

    def __init__(self, model, calib, batch):
        self.model = model
        self.starts, self.cache = zip(*batches(calib, batch))
        self.cache = list(self.cache)
        self.dtypes = dict.fromkeys(calib)  # the real dtype of every cached tensor
        self.dtypes.update({k: v.dtype for k, v in calib.items()})
        self.index = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
        self.seconds = 0.0

    def run(self, names, until=None):
        """Yield (start, {name: array}) per batch. `until`: a node output; the cut then
        moves to that node (with this model's current weights)."""
        cut = live(self.model, self.index[until]) if until in self.index else None
        want = list(dict.fromkeys(names + (cut or [])))
        missing = [n for n in want if n not in self.cache[0]]
        sess, feeds = None, []
        if missing:
            t = time.perf_counter()
            sess = cpu_session(segment(self.model, missing, {k: self.dtypes[k] for k in self.cache[0]}))
            feeds = [i.name for i in sess.get_inputs()]
            self.seconds += time.perf_counter() - t
        for k, (start, have) in enumerate(zip(self.starts, self.cache)):
            got = {n: _unpack(have[n], self.dtypes[n]) for n in want if n in have}
            if sess is not None:
                t = time.perf_counter()
                feed = {f: _unpack(have[f], self.dtypes[f]) for f in feeds}
                got.update(zip(missing, sess.run(missing, feed)))
                del feed
                self.seconds += time.perf_counter() - t
            if cut is not None:
                self.dtypes.update({n: got[n].dtype for n in cut})
                self.cache[k] = {n: have[n] if n in have else _pack(got[n]) for n in cut}
            yield start, {n: got[n] for n in names}


class _Target:
    """How to read a layer's target from an original tensor: kept channels, and an
    offset (the original BatchNorm mean when the bias lives in it)."""

    def __init__(self, layer, keep_by_name, orig_w, keep):
        self.axes = keep_by_name.get(layer.y, {})
        self.offset = None
        if layer.bias_sign < 0 and orig_w.has(layer.bias):
            mean = orig_w.get(layer.bias).astype(np.float64).ravel()
            idx = keep.get((layer.bias, 0))
            self.offset = mean if idx is None else mean[idx]

    def __call__(self, y, axis):
        return self.restrict(y, axis, self.axes, self.offset)

    @staticmethod
    def restrict(y, axis, axes, offset=None):
        if set(axes) - {axis}:
            raise ValueError("target lost channels on another axis")
        if axis in axes:
            y = np.take(y, axes[axis], axis=axis)
        if offset is not None:
            y = y - offset.reshape([-1] + [1] * (y.ndim - 2)).astype(y.dtype)
        return y


def _channels(v, axis, ndim):
    """A per-channel vector shaped to broadcast along `axis` of an ndim array."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _skip_term(layer, w, keep_by_name, s_o, s_p, axis):
    """(original skip - pruned skip) / the BatchNorm scale between the layer and the Add:
    what the layer's output must add so that the Add's output matches the original's."""
    s_o = _Target.restrict(s_o, axis, keep_by_name.get(layer.skip, {}))
    if s_o.shape != s_p.shape:
        raise ValueError(f"skip {layer.skip} has {s_o.shape} in the original, {s_p.shape} pruned")
    diff = s_o - s_p
    if layer.post is not None:
        scale, var, eps = layer.post
        a = w.get(scale).astype(np.float64).ravel() / np.sqrt(w.get(var).astype(np.float64).ravel() + eps)
        a = np.where(np.abs(a) > 1e-6, a, np.inf)  # a dead channel: no correction
        diff = diff / _channels(a.astype(diff.dtype), axis, diff.ndim)
    return diff


def _rows(layer, x, y, rng, per, has_bias):
    if layer.kind == "conv":
        return rows.conv_rows(layer, x, y, rng, per, has_bias)
    if layer.kind == "linear":
        return rows.linear_rows(x, y, rng, per, has_bias)
    return rows.affine_rows(x, y, rng, per, has_bias)


def recover(original, pruned, keep, calib, *, samples=256, batch=16, ridge=1e-3, positions=32, seed=0,
            residual=True, progress=None):
    """Refit a pruned model's weights so each layer reproduces the original's outputs.

    Layers are refit in topological order. Both models are run over the calibration
    data once, from cut to cut: after each group of independent layers is refit, the
    pruned model's live tensors are recomputed with the new weights, so every layer is
    fitted on inputs that carry the refits of all earlier layers.

    Args:
        original: path or onnx.ModelProto of the unpruned model.
        pruned: the pruned onnx.ModelProto (same tensor names); not modified.
        keep: {(tensor, axis): kept indices} for every tensor axis that lost channels.
        calib: {input name: array}, samples on axis 0.
        samples: use at most this many calibration samples.
        batch: samples per onnxruntime run.
        ridge: regularisation toward the current weights, relative to the mean diagonal
            of each layer's X^T X; 10x and 100x and 1000x of it are also tried per group on held-out samples.
        positions: least-squares rows taken per sample and layer (conv output positions or tokens);
            layers with many inputs take more.
        seed: seed of the row sampling.
        residual: a layer that feeds a residual Add (through at most one BatchNorm) is fitted so
            that the Add's output matches, absorbing the error its skip input carries.
        progress: optional callable(i, n, layer name) after each layer.

    Returns:
        (the recovered onnx.ModelProto, a RecoveryReport).
    """
    t0 = time.perf_counter()
    orig = _load(original)
    model = copy.deepcopy(pruned)
    calib = {k: np.asarray(v)[:samples] for k, v in calib.items()}
    n_samples = len(next(iter(calib.values())))
    targets = {o for n in orig.graph.node for o in n.output}
    found = layers.find(model, targets)
    w, orig_w = layers.Weights(model), layers.Weights(orig)
    keep_by_name: dict = {}
    for (name, axis), idx in keep.items():
        keep_by_name.setdefault(name, {})[axis] = np.asarray(idx)
    shapes = [params.dims(layer, w) for layer in found]
    groups = passes(model, found, [16 * g * d * (d + m) for g, d, m in shapes])
    rng = np.random.default_rng(seed)
    fits, done = [None] * len(found), 0
    ps, os_ = _Stream(model, calib, batch), _Stream(orig, calib, batch)
    for k, part in enumerate(groups):
        nxt = found[groups[k + 1][0]].node if k + 1 < len(groups) else None
        skips = {found[i].skip for i in part if found[i].skip and residual}
        xs = sorted({found[i].x for i in part} | skips)
        ys = sorted({found[i].y for i in part} | skips)
        grams = {i: fit.Gram() for i in part}
        spent = {i: 0.0 for i in part}
        why = {}
        tgt = {i: _Target(found[i], keep_by_name, orig_w, keep) for i in part}
        for (start, xa), (_, ya) in zip(ps.run(xs), os_.run(ys, nxt)):
            for i in part:
                if i in why:
                    continue
                t = time.perf_counter()
                layer, (g, d, m) = found[i], shapes[i]
                try:
                    axis = 1 if layer.kind == "conv" else ya[layer.y].ndim - 1
                    y = tgt[i](ya[layer.y], axis)
                    if layer.skip and residual:
                        y = y + _skip_term(layer, w, keep_by_name, ya[layer.skip], xa[layer.skip], axis)
                    if y.shape[axis] != g * m:
                        raise ValueError(f"target has {y.shape[axis]} channels for {g * m} outputs")
                    per = _positions(d, n_samples, positions)
                    X, Y, s = _rows(layer, xa[layer.x], y, rng, per, layer.bias is not None)
                    grams[i].add(X, Y, s + start)
                except ValueError as exc:  # a layer whose target cannot be matched is left alone
                    why[i] = str(exc)
                spent[i] += time.perf_counter() - t
        for i in part:
            layer = found[i]
            t = time.perf_counter()
            if i in why or grams[i].rows == 0:
                fits[i] = LayerFit(layer.name, layer.kind, 0, 0.0, 0.0, 0.0, 0.0, 1.0, spent[i],
                                   why.get(i, "no rows"))
            else:
                theta, st = fit.refit(grams[i], params.read(layer, w), ridge)
                if st["kept_old"] < 1.0:
                    params.write(layer, w, theta)
                e, he = max(st["energy"], 1e-30), max(st["held_energy"], 1e-30)
                fits[i] = LayerFit(layer.name, layer.kind, grams[i].rows, st["before"] / e, st["after"] / e,
                                   st["held_before"] / he, st["held_after"] / he, st["kept_old"],
                                   spent[i] + time.perf_counter() - t)
            grams[i] = None
            done += 1
            if progress is not None:
                progress(done, len(found), layer.name)
        if nxt is not None:  # move the pruned model's cut past the refit layers
            for _ in ps.run([], nxt):
                pass
    out_before, out_after = _output_errors(orig, pruned, model, calib, batch, keep_by_name)
    if out_after > out_before:  # the layer fits did not carry to the outputs: keep the pruned weights
        model = copy.deepcopy(pruned)
    report = RecoveryReport(tuple(fits), n_samples, len(groups), time.perf_counter() - t0, ps.seconds + os_.seconds,
                            out_before, out_after, out_after > out_before)
    return model, report


def _output_errors(orig, pruned, model, calib, batch, keep_by_name):
    """Squared error of the graph outputs against the original's, relative to their energy,
    on the held-out samples (index 3 mod 4; all samples when there are fewer than 4):
    (pruned weights, recovered weights)."""
    n = len(next(iter(calib.values())))
    idx = np.arange(3, n, 4) if n >= 4 else np.arange(n)
    held = {k: v[idx] for k, v in calib.items()}
    names = [o.name for o in orig.graph.output]
    sessions = [cpu_session(m) for m in (orig, pruned, model)]
    err, energy = np.zeros(2), 0.0
    for _, feed in batches(held, batch):
        ref, *outs = [s.run(names, {i.name: feed[i.name] for i in s.get_inputs()}) for s in sessions]
        for j, name in enumerate(names):
            r = ref[j].astype(np.float64)
            for axis, kept in keep_by_name.get(name, {}).items():
                r = np.take(r, kept, axis=axis)
            energy += float((r * r).sum())
            for k in range(2):
                err[k] += float(((outs[k][j] - r) ** 2).sum())
    return float(err[0] / max(energy, 1e-30)), float(err[1] / max(energy, 1e-30))
