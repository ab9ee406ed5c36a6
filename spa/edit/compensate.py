"""Compensation of the layers that lose input channels (see docs/obspa.md):

- where the input covariance is known (measured, or estimated by spa.moments), the
  kept weights take over the part of the removed channels that the kept ones predict
  (the OBS update, as a linear regression);
- fold the rest of the removed channels' expected contribution into the consumers'
  biases (the mean part of the OBS update);
- where a consumer feeds a BatchNormalization, shrink that BatchNorm's running variance
  by the share of the consumer's output variance the removed channels carried, so the
  BatchNorm still normalises the pruned output to the scale the following layers were
  trained on (a data-free BatchNorm recalibration).

Each change is recorded as an Update for the masked oracle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from ..io import nbits
from ..io.quant import dq_node, past_fake_quant, quantized_bias
from ..rules import data_axis
from ..score import consumer_of
from .rewrite import write_const



def bias_of(node):
    """(holder node, input slot) where the node's output bias lives, or None.
    Conv and Gemm hold it themselves (the slot may not exist yet); MatMul's is a
    constant added right after it (an initializer, or a Constant node's output)."""
    if node.op in ("Conv", "Gemm"):
        return node, 2
    if node.op == "MatMul":
        users = node.outputs[0].outputs
        if len(users) == 1 and users[0].op == "Add":
            add = users[0]
            other = 1 if add.inputs[0] is node.outputs[0] else 0
            b = add.inputs[other]
            if isinstance(b, gs.Constant) or (len(b.inputs) == 1 and b.inputs[0].op == "Constant"):
                return add, other
    return None


def mean_shift(node, w, idx, mean):
    """Expected change of the node's output per output channel when input channels
    `idx` (with means `mean[idx]`) are removed."""
    if node.op == "Conv":
        return np.einsum("ock,c->o", w[:, idx].reshape(w.shape[0], len(idx), -1), mean[idx])
    if node.op == "Gemm":
        wt = w.T if node.attrs.get("transB", 0) else w
        return float(node.attrs.get("alpha", 1.0)) * (mean[idx] @ wt[idx])
    return mean[idx] @ w[idx]


class Update(NamedTuple):
    """One compensation change, replayed by spa.masked: `kind` "bias" adds `value` to the
    bias of the node whose first output is tensor `target` (node names may be empty),
    "variance" multiplies that BatchNorm's running variance, "weight" adds `value` to the
    weight tensor `target`."""

    kind: str
    target: str
    value: np.ndarray


def fold_means(cg, stats, removed, keep) -> tuple:
    """Compensate each consumer of removed input channels: with the input covariance
    known (stats.cov), the kept weights take over what the removed channels' linear
    regression on the kept ones predicts (the OBS update) and the rest of their mean goes
    into the bias; without it, the removed channels' means go into the bias.

    Args:
        cg: the channel graph (its constants are updated in place).
        stats: moments.ChannelStats of the model.
        removed: {space: removed element indices}.
        keep: {space: kept indices}, to size a bias created for a pruned output.

    Returns:
        Update records for the masked oracle.
    """
    ctx, updates = cg.ctx, []
    for (name, axis), idx in sorted(removed.items()):
        attrs = cg.g.nodes[(name, axis)]
        t = ctx.tensors[name]
        if not attrs["param"] or attrs["role"] != "in" or len(t.outputs) != 1:
            continue
        node, w, axis = consumer_of(ctx, t, axis)
        if node is None or data_axis(node) is None or (node.op == "Conv" and node.attrs.get("group", 1) != 1):
            continue
        if node.op == "Gemm" and node.attrs.get("transA", 0):
            continue
        if w.ndim != 2 and node.op != "Conv":
            continue
        x, idx = node.inputs[0], np.asarray(idx)
        x_axis = data_axis(node) % (ctx.rank(x) or 1)
        n = w.shape[axis]
        mean, var = stats.at(x, x_axis, n)
        if not stats.known(x, x_axis, n):  # statistics guessed from the input alone: no fold
            mean = np.zeros(n)
        # a fill (weightless model), or a MatMulNBits weight: bias fold only. A 4-bit grid
        # swamps the OBS update: measured on MLPs, it left the model 2x the quantization
        # noise from the float model pruned the same way (0.8x without it), at a lower cosine
        plain = _uniform(w) or nbits.lifted(t)
        factor = None if plain else stats.cov_factor(x, x_axis, n)
        cov = None if plain or factor is not None else stats.cov(x, x_axis, n)
        delta = None
        if cov is not None or factor is not None:
            kept = np.setdiff1d(np.arange(n), idx)
            reg = regression(cov, idx, kept, stats.source(x, x_axis, n).ridge, factor)
            delta = np.zeros_like(w)
            moved = np.moveaxis(delta, axis, 0)
            # in the weight's own precision where it is float32: the update is stored so anyway
            coef = reg.astype(w.dtype) if w.dtype == np.float32 else reg
            moved[kept] = np.tensordot(coef, np.moveaxis(w, axis, 0)[idx], axes=([1], [0]))
            mean = mean.copy()
            mean[idx] = mean[idx] - reg.T @ mean[kept] if len(kept) else mean[idx]
        shift = mean_shift(node, w, idx, mean)
        if node.op == "Gemm":
            shift = shift / float(node.attrs.get("beta", 1.0))
        if delta is not None and np.any(shift) and not _can_shift(ctx, node, shift):
            # the weight update leans on its mean correction: without a bias to hold it, neither
            # (PaddleOCR's recogniser: its CTC head's logits moved by up to 16)
            delta, shift = None, np.zeros_like(shift)
        if delta is not None and np.any(delta):  # before the bias, as spa.masked replays them
            stored = add_weight(ctx, t, node, delta)
            updates.append(Update("weight", name, stored))
        if np.any(shift) and apply_shift(ctx, node, shift, keep):
            updates.append(Update("bias", node.outputs[0].name, shift))
        bn = following_batchnorm(node)
        if bn is not None and node.op == "Conv":
            spread = var if delta is None else cov if cov is not None else stats.cov(x, x_axis, n)
            share = kept_variance(w, w if delta is None else w + delta, idx, spread)
            if np.any(share != 1) and apply_shift(ctx, bn, share):
                updates.append(Update("variance", bn.outputs[0].name, share))
    return tuple(updates)


def _uniform(w) -> bool:
    """One value repeated: a placeholder fill (ConstantOfShape) that an OBS update would
    turn into a dense tensor of the full size."""
    flat = w.reshape(-1)
    return flat.size > 1 and bool(np.all(flat == flat[0]))


def regression(cov, removed, kept, ridge, factor=None):
    """[kept, removed] coefficients of the removed channels' linear regression on the
    kept ones (ridge-regularised by `ridge` times the mean kept variance). With `factor`
    F (cov = F^T F; cov may then be None) of r samples < kept channels, the same coefficients through
    (F_k^T F_k + lam I)^-1 F_k^T = F_k^T (F_k F_k^T + lam I)^-1: an r x r solve
    (ResNet-50's 2048-wide inputs, 392 probe rows: 0.1-0.17 s -> about 0.01 s each)."""
    if not len(kept):
        return np.zeros((0, len(removed)))
    if factor is not None:
        factor = factor.astype(np.float64, copy=False)  # may be stored as float32
    if factor is not None and len(factor) < len(kept):
        fk = factor[:, kept]
        lam = ridge * max(float(np.einsum("ij,ij->", fk, fk)) / len(kept), 1e-30)
        gram = fk @ fk.T
        gram[np.diag_indices_from(gram)] += lam
        return fk.T @ np.linalg.solve(gram, factor[:, removed])
    if cov is None:
        cov = factor.T @ factor
    ckk = cov[np.ix_(kept, kept)]  # a copy: the ridge goes onto its diagonal in place
    lam = ridge * max(float(np.trace(ckk)) / len(kept), 1e-30)
    ckk[np.diag_indices_from(ckk)] += lam
    return np.linalg.solve(ckk, cov[np.ix_(kept, removed)])


def add_weight(ctx, t, node, delta):
    """Add `delta` (in the layout the consumer reads) to weight tensor t; returns the delta
    in t's own layout."""
    if t.outputs[0] is not node:  # read through a Transpose
        perm = list(t.outputs[0].attrs.get("perm", range(delta.ndim)[::-1]))
        delta = np.transpose(delta, np.argsort(perm))
    old = ctx.const(t)
    if old.dtype == np.float32 and delta.dtype == np.float32:
        new = old + delta  # rounded once, as the float64 sum cast back is, but for rare double rounding
    else:
        new = (old.astype(np.float64) + delta).astype(old.dtype)
    write_const(ctx, t, new)
    return delta


MIN_KEPT = 0.05  # never shrink a BatchNorm's variance below this share


def kept_variance(w, w2, idx, spread):
    """Per output channel of a Conv, the share of its output variance left when input
    channels `idx` go and the weights become w2 (w when nothing is compensated), taps
    independent. `spread`: the input covariance, or per-channel variances (independent
    channels: sum over kept q of var_q * sum_k W[o, q, k]^2 over the same sum for all q)."""
    w2 = w2.copy()
    w2[:, idx] = 0

    def out_var(v):
        vk = np.moveaxis(v.reshape(v.shape[0], v.shape[1], -1), 2, 0)  # [taps, out, in]
        if spread.ndim == 1:
            return (vk * vk * spread).sum((0, 2))
        return ((vk @ spread) * vk).sum((0, 2))

    total, kept = out_var(w), out_var(w2)
    share = np.where(total > 0, kept / np.where(total > 0, total, 1), 1.0)
    return np.clip(share, MIN_KEPT, 1.0)


def following_batchnorm(node):
    """The BatchNormalization reading the node's output (after a fake-quantizing
    QuantizeLinear -> DequantizeLinear pair, if any), when it is the only reader."""
    y = past_fake_quant(node.outputs[0])
    users = y.outputs
    if len(users) == 1 and users[0].op == "BatchNormalization" and users[0].inputs[0] is y \
            and len(users[0].inputs) >= 5:
        return users[0]
    return None


def _can_shift(ctx, node, shift) -> bool:
    """Whether apply_shift can fold `shift` into the node's bias (one it has or creates)."""
    where = bias_of(node)
    if where is None:
        return False
    holder, slot = where
    if slot < len(holder.inputs) and holder.inputs[slot].name:
        old = ctx.const(holder.inputs[slot])
        return old is not None and old.size in (1, shift.size)
    return True


def apply_shift(ctx, node, shift, keep=None) -> bool:
    """Add `shift` to the node's bias, creating the bias if the node has none; for a
    BatchNormalization, multiply its running variance by `shift` instead."""
    if node.op == "BatchNormalization":
        return _scale_variance(ctx, node, shift)
    if not _can_shift(ctx, node, shift):
        return False
    holder, slot = bias_of(node)
    if slot < len(holder.inputs) and holder.inputs[slot].name:
        t = holder.inputs[slot]
        old = ctx.const(t)
        new = (np.broadcast_to(old.reshape(-1), shift.shape) + shift).astype(old.dtype).reshape(
            old.shape if old.size == shift.size else shift.shape)
        write_const(ctx, t, new)
        return True
    y = node.outputs[0]
    kept = (keep or {}).get((y.name, 1))
    value = (shift if kept is None else shift[kept]).astype(np.float32)
    if dq_node(node.inputs[1]) is not None:  # a quantized layer gets a quantized bias, or none
        bias = quantized_bias(ctx.model.graph, node, value, kept)
        if bias is None:
            return False
    else:
        bias = _fill_bias(ctx, node, value) if _uniform(value) else gs.Constant(f"{node.name}_spa_bias", value)
    while len(holder.inputs) < slot:
        holder.inputs.append(gs.Variable.empty())
    holder.inputs.append(bias)
    return True


def _fill_bias(ctx, node, value):
    """A new bias of one repeated value (a fold into a weightless model's layer) as a
    ConstantOfShape fill, as the model stores its other weights."""
    out = gs.Variable(f"{node.name}_spa_bias", dtype=value.dtype, shape=list(value.shape))
    fill = gs.Node("ConstantOfShape", f"{node.name}_spa_bias_fill", inputs=[ctx.fill_shape(value.shape)],
                   outputs=[out], attrs={"value": gs.Constant(f"{node.name}_spa_bias_value", value.reshape(-1)[:1])})
    ctx.model.graph.nodes.append(fill)
    return out


def _scale_variance(ctx, bn, factor) -> bool:
    t = bn.inputs[4]
    old = ctx.const(t)
    if old is None or old.size != factor.size:
        return False
    new = (old.astype(np.float64) * factor.reshape(old.shape)).astype(old.dtype)
    write_const(ctx, t, new)
    return True
