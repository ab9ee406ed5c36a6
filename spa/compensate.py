"""Data-free compensation (see docs/obspa.md):

- fold the expected contribution of removed channels into the consumers' biases (the
  mean part of the OBS update);
- where a consumer feeds a BatchNormalization, shrink that BatchNorm's running variance
  by the share of the consumer's output variance the removed channels carried, so the
  BatchNorm still normalises the pruned output to the scale the following layers were
  trained on (a data-free BatchNorm recalibration).

Each change is recorded as (node name, value) for the masked oracle: for a Conv, Gemm or
MatMul the value is added to its bias; for a BatchNormalization it multiplies the running
variance.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .rewrite import write_const

IN_AXIS = {"Conv": 1, "Gemm": 1, "MatMul": -1}


def bias_of(node):
    """(holder node, input slot) where the node's output bias lives, or None.
    Conv and Gemm hold it themselves (the slot may not exist yet); MatMul's is a
    constant added right after it."""
    if node.op in ("Conv", "Gemm"):
        return node, 2
    if node.op == "MatMul":
        users = node.outputs[0].outputs
        if len(users) == 1 and users[0].op == "Add":
            add = users[0]
            other = 1 if add.inputs[0] is node.outputs[0] else 0
            if isinstance(add.inputs[other], gs.Constant):
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


def fold_means(cg, stats, removed, keep) -> tuple:
    """Add each removed input channel's mean contribution to its consumer's bias.

    Args:
        cg: the channel graph (its constants are updated in place).
        stats: moments.Moments of the model.
        removed: {space: removed element indices}.
        keep: {space: kept indices}, to size a bias created for a pruned output.

    Returns:
        ((consumer node name, full-size bias shift), ...) for the masked oracle.
    """
    ctx, updates = cg.ctx, []
    for (name, axis), idx in sorted(removed.items()):
        attrs = cg.g.nodes[(name, axis)]
        t = ctx.tensors[name]
        if not attrs["param"] or attrs["role"] != "in" or len(t.outputs) != 1:
            continue
        node, w, axis = consumer_of(ctx, t, axis)
        if node is None or node.op not in IN_AXIS or (node.op == "Conv" and node.attrs.get("group", 1) != 1):
            continue
        if node.op == "Gemm" and node.attrs.get("transA", 0):
            continue
        if w.ndim != 2 and node.op != "Conv":
            continue
        x = node.inputs[0]
        mean, _ = stats.at(x, IN_AXIS[node.op] % (ctx.rank(x) or 1), w.shape[axis])
        shift = mean_shift(node, w, np.asarray(idx), mean)
        if node.op == "Gemm":
            shift = shift / float(node.attrs.get("beta", 1.0))
        if np.any(shift) and apply_shift(ctx, node, shift, keep):
            updates.append((node.name, shift))
        bn = following_batchnorm(node)
        if bn is not None and node.op == "Conv":
            factor = kept_variance(w, np.asarray(idx), stats.at(x, 1, w.shape[1])[1])
            if np.any(factor != 1) and apply_shift(ctx, bn, factor):
                updates.append((bn.name, factor))
    return tuple(updates)


def consumer_of(ctx, t, axis):
    """(consumer node, weight as the consumer reads it, channel axis in it) for a weight
    read as input 1 of its consumer directly or through a Transpose (exports without
    constant folding transpose Linear weights at run time); (None, None, axis) else."""
    node, w = t.outputs[0], ctx.const(t)
    if w is None:
        return None, None, axis
    w = w.astype(np.float64)
    if node.op == "Transpose" and len(node.outputs[0].outputs) == 1:
        perm = list(node.attrs.get("perm", range(w.ndim)[::-1]))
        w, axis, src = np.transpose(w, perm), perm.index(axis % w.ndim), node.outputs[0]
        node = src.outputs[0]
    else:
        src = t
    if len(node.inputs) < 2 or node.inputs[1] is not src:
        return None, None, axis
    return node, w, axis


MIN_KEPT = 0.05  # never shrink a BatchNorm's variance below this share


def kept_variance(w, idx, var):
    """Per output channel of a Conv, the share of its output variance that the input
    channels not in `idx` carry, with independent inputs of variance `var` (and
    independent positions): sum over kept q of var_q * sum_k W[o, q, k]^2, over the
    same sum for all q."""
    energy = (w.reshape(w.shape[0], w.shape[1], -1) ** 2).sum(2) * var[None, :]
    total = energy.sum(1)
    removed = energy[:, idx].sum(1)
    share = np.where(total > 0, (total - removed) / np.where(total > 0, total, 1), 1.0)
    return np.clip(share, MIN_KEPT, 1.0)


def following_batchnorm(node):
    """The BatchNormalization reading the node's output, when it is the only reader."""
    users = node.outputs[0].outputs
    if len(users) == 1 and users[0].op == "BatchNormalization" and users[0].inputs[0] is node.outputs[0] \
            and len(users[0].inputs) >= 5:
        return users[0]
    return None


def apply_shift(ctx, node, shift, keep=None) -> bool:
    """Add `shift` to the node's bias, creating the bias if the node has none; for a
    BatchNormalization, multiply its running variance by `shift` instead."""
    if node.op == "BatchNormalization":
        return _scale_variance(ctx, node, shift)
    where = bias_of(node)
    if where is None:
        return False
    holder, slot = where
    if slot < len(holder.inputs) and holder.inputs[slot].name:
        t = holder.inputs[slot]
        old = ctx.const(t)
        if old is None or old.size not in (1, shift.size):
            return False
        new = (np.broadcast_to(old.reshape(-1), shift.shape) + shift).astype(old.dtype).reshape(
            old.shape if old.size == shift.size else shift.shape)
        ctx._consts[t.name] = new
        write_const(ctx, t, new)
        return True
    y = node.outputs[0]
    kept = (keep or {}).get((y.name, 1))
    value = (shift if kept is None else shift[kept]).astype(np.float32)
    while len(holder.inputs) < slot:
        holder.inputs.append(gs.Variable.empty())
    holder.inputs.append(gs.Constant(f"{node.name}_spa_bias", value))
    return True


def _scale_variance(ctx, bn, factor) -> bool:
    t = bn.inputs[4]
    old = ctx.const(t)
    if old is None or old.size != factor.size:
        return False
    new = (old.astype(np.float64) * factor.reshape(old.shape)).astype(old.dtype)
    ctx._consts[t.name] = new
    write_const(ctx, t, new)
    return True
