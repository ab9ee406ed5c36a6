"""Reshape and Flatten.

The input and output shapes are split into segments of equal element count. A
segment of one axis on each side passes through. Where several input axes merge
into one output axis (Flatten into a Gemm head), the outermost input axis of size
> 1 maps to strided blocks of the output: one channel becomes a block of
features. Where one input axis splits into several, the outermost output axis
takes blocks of the input. The other axes of a merge or split are refused.
"""

import numpy as np
import onnx_graphsurgeon as gs

from .base import Rule, broadcast, shape_source
from .recurrent import direction_axis
from .registry import register


def segments(src, dst):
    """Pair up runs of axes with equal products: [(src axes, dst axes)].

    Only the concrete trailing dims are matched; a leading run of symbolic dims
    (the batch) is skipped on both sides, and their products must agree.
    """
    i0 = max((k + 1 for k, d in enumerate(src) if not isinstance(d, int)), default=0)
    j0 = max((k + 1 for k, d in enumerate(dst) if not isinstance(d, int)), default=0)
    if np.prod(src[i0:], dtype=np.int64) != np.prod(dst[j0:], dtype=np.int64):
        return []
    out, i, j = [], i0, j0
    while i < len(src) and j < len(dst):
        pi, pj, ei, ej = src[i], dst[j], i + 1, j + 1
        while pi != pj:
            if pi < pj:
                pi, ei = pi * src[ei], ei + 1
            else:
                pj, ej = pj * dst[ej], ej + 1
        out.append((list(range(i, ei)), list(range(j, ej))))
        i, j = ei, ej
    return out


def strided(sizes, m):
    """For merged axes `sizes`, the index of axis m at each flat position."""
    inner = int(np.prod(sizes[m + 1:], dtype=np.int64))
    return (np.arange(int(np.prod(sizes, dtype=np.int64))) // inner) % sizes[m]


def couple_segments(flow, x, y, xs, ys):
    for a, d in enumerate(xs):
        if d == 1:
            flow.handle(x, a)
    for ax, ay in segments(xs, ys):
        big_x = _fixed_first([a for a in ax if xs[a] != 1], x, flow.ctx)
        big_x = [a for a in big_x if not direction_axis(flow.ctx, x, a)] + \
            [a for a in big_x if direction_axis(flow.ctx, x, a)]  # a recurrent op's directions join its hidden axis
        big_y = _after_permute(_fixed_first([b for b in ay if ys[b] != 1], y, flow.ctx), y)
        if flow.ctx.inner and len(big_x) + len(big_y) > 2:
            big_x, big_y = _innermost(big_x, flow, x), _innermost(big_y, flow, y)
        if len(big_x) == 1 and len(big_y) == 1:
            flow.identity(x, big_x[0], y, big_y[0])
        elif len(big_y) == 1 and big_x:
            order = sorted(big_x)
            flow.pairs(x, big_x[0], y, big_y[0], strided([xs[a] for a in order], order.index(big_x[0])),
                       np.arange(ys[big_y[0]]))
            for a in big_x[1:]:
                flow.refuse(x, a, f"{flow.node.op} merges axis {a} into axis {big_y[0]}")
        elif len(big_x) == 1 and big_y:
            order = sorted(big_y)
            flow.pairs(y, big_y[0], x, big_x[0], strided([ys[b] for b in order], order.index(big_y[0])),
                       np.arange(xs[big_x[0]]))
            for b in big_y[1:]:
                flow.refuse(y, b, f"{flow.node.op} splits axis {big_x[0]} into axis {b}")
        elif big_x and big_y and not flow.ctx.inner:
            _regroup(flow, x, y, xs, ys, big_x, big_y)


def _regroup(flow, x, y, xs, ys, big_x, big_y):
    """Several axes on both sides (GroupNorm lowered to InstanceNorm: [N, C, H, W] to
    [N, G, C/G*H*W] and back). Where the outermost axis of one side is a whole number of
    blocks of the other's outermost axis, element g of the coarser one holds elements
    g*k .. g*k+k-1 of the finer one (k = ratio of their sizes): they go together. The other
    axes are refused."""
    a, b = min(big_x), min(big_y)
    if flow.ctx.dynamic(x, a) or flow.ctx.dynamic(y, b):
        return
    if xs[a] % ys[b] == 0:
        k = xs[a] // ys[b]
        flow.pairs(x, a, y, b, np.arange(xs[a]), np.arange(xs[a]) // k)
    elif ys[b] % xs[a] == 0:
        k = ys[b] // xs[a]
        flow.pairs(y, b, x, a, np.arange(ys[b]), np.arange(ys[b]) // k)
    else:
        return
    for c in big_x:
        if c != a:
            flow.refuse(x, c, f"{flow.node.op} merges axis {c} with axis {a}")
    for c in big_y:
        if c != b:
            flow.refuse(y, c, f"{flow.node.op} merges axis {c} with axis {b}")


def _innermost(axes, flow, t):
    """Inner mode: the last fixed axis of a split or merge leads, tagged head_dim."""
    if len(axes) < 2:
        return axes
    fixed = [a for a in axes if not flow.ctx.dynamic(t, a)]
    lead = max(fixed) if fixed else axes[0]
    flow.tag(t, lead, "head_dim")
    return [lead] + [a for a in axes if a != lead]


def _fixed_first(axes, t, ctx):
    """Axes of a merge or split, the outermost fixed-size one first: a dynamic batch
    merged with heads must not take the heads' place."""
    fixed = [a for a in axes if not ctx.dynamic(t, a)]
    return fixed[:1] + [a for a in axes if a not in fixed[:1]] if fixed else axes


def _after_permute(axes, y):
    """Axes of a split, the one a following Transpose moves outermost first. A channel
    shuffle (split, swap, merge) then links the same axis at both Reshapes."""
    users = y.outputs
    if len(axes) < 2 or len(users) != 1 or users[0].op != "Transpose" or "perm" not in users[0].attrs:
        return axes
    perm = list(users[0].attrs["perm"])
    return sorted(axes, key=perm.index)


RUNTIME = "runtime"  # shape_spec's pieces for a target that is a Shape: nothing to rewrite


def shape_spec(node, ctx):
    """The target shape of a Reshape as a list of ints, None for entries known only at run time.

    Returns (spec, pieces) where pieces lists (concat input index, position) per entry (RUNTIME:
    the target is the Shape of a tensor), or (None, None) when even the length is unknown.
    """
    t = node.inputs[1]
    prod = t.inputs[0] if len(t.inputs) == 1 else None
    v = ctx.const(t)
    if v is not None and (prod is None or prod.op != "Concat"):
        return [int(x) for x in v.reshape(-1)], None
    if prod is not None and prod.op == "Shape" and not prod.attrs.get("start") and prod.attrs.get("end") is None:
        src = ctx.shape(prod.inputs[0])  # the whole shape of a tensor, read at run time: it follows that tensor
        return (None, None) if src is None else ([None] * len(src), RUNTIME)
    if prod is None or prod.op != "Concat":
        return None, None
    # a Concat target is rewritten piece by piece even where load's sizes fold it to a constant:
    # a piece read from a Shape at run time (PaddleOCR's sequence length) must stay so
    spec, pieces = [], []
    for k, part in enumerate(prod.inputs):
        shape = ctx.shape(part)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return ([int(x) for x in v.reshape(-1)], None) if v is not None else (None, None)
        vals = ctx.ints(part)
        for p in range(shape[0]):
            spec.append(None if vals is None else vals[p])
            pieces.append((k, p))
    if v is not None and len(spec) == v.size:  # entries load's sizes fold (a Shape read at run time)
        spec = [int(x) if s is None else s for s, x in zip(spec, v.reshape(-1))]
    return spec, pieces


def runtime_dims(flow, target, y, spec):
    """Entries of a shape target known only at run time: one copied from a Shape
    ties that dim to the output axis; any other refuses the axis."""
    for b, s in enumerate(spec):
        if s is not None or flow.space(y, b) is None:
            continue
        src = shape_source(flow.ctx, target, b)
        if src is not None:
            flow.same_size(src[0], src[1], y, b, f"{flow.node.op} '{flow.node.name}' copies dim {src[1]} of "
                                                   f"'{src[0].name}' into axis {b}", src[2])
        elif flow.space(y, b) in flow.handled:
            flow.handled.discard(flow.space(y, b))
            flow.refuse(y, b, f"{flow.node.op} size of axis {b} is computed at run time")


@register
class Reshape(Rule):
    ops = ("Reshape",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = flow.ctx.shape(x), flow.ctx.shape(y)
        spec, _ = shape_spec(node, flow.ctx)
        if xs is None or ys is None or spec is None or len(spec) != len(ys):
            return
        couple_segments(flow, x, y, xs, ys)
        runtime_dims(flow, node.inputs[1], y, spec)

    def shrink(self, node, ctx, keep):
        y = node.outputs[0]
        spec, pieces = shape_spec(node, ctx)
        if spec is None:
            return
        new = list(spec)
        for b, s in enumerate(spec):
            kept = keep.get((y.name, b))
            if kept is not None and s not in (-1, None):
                new[b] = len(kept)
        _write_spec(node, ctx, spec, new, pieces)


def _write_spec(node, ctx, spec, new, pieces):
    """Store a changed shape target: the constant itself, or the Concat pieces that changed."""
    if new == spec or pieces == RUNTIME:
        return
    if pieces is None:
        ctx.set_input(node, 1, np.asarray(new, dtype=np.int64))
        return
    concat = _own_concat(node, ctx)
    for k in sorted({k for (k, _), a, b in zip(pieces, spec, new) if a != b}):
        vals = [new[i] for i, (kk, _) in enumerate(pieces) if kk == k]
        ctx.set_input(concat, k, np.asarray(vals, dtype=np.int64))


def _own_concat(node, ctx):
    """The Concat that builds the node's shape target, copied first when other nodes
    read it too (K and V views may share one target yet lose different head_dim slices)."""
    target = node.inputs[1]
    concat = target.inputs[0]
    if len(target.outputs) == 1:
        return concat
    ctx._fresh += 1
    out = gs.Variable(f"{target.name}__spa{ctx._fresh}", dtype=np.int64, shape=target.shape)
    copy = gs.Node("Concat", f"{concat.name}__spa{ctx._fresh}", dict(concat.attrs), list(concat.inputs), [out])
    ctx.model.graph.nodes.append(copy)
    node.inputs[1] = out
    return copy


@register
class Flatten(Rule):
    """Flatten is a Reshape to [prod(dims before axis), prod(dims from axis)]."""

    ops = ("Flatten",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = flow.ctx.shape(x), flow.ctx.shape(y)
        if xs is not None and ys is not None:
            couple_segments(flow, x, y, xs, ys)


@register
class Expand(Rule):
    """Numpy broadcasting to a target shape; entries that are not 1 follow their axis."""

    ops = ("Expand",)

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        broadcast(flow, [x], y)
        spec, _ = shape_spec(node, flow.ctx)
        if spec is not None:
            runtime_dims(flow, node.inputs[1], y, [1] * (flow.ctx.rank(y) - len(spec)) + spec)

    def shrink(self, node, ctx, keep):
        y = node.outputs[0]
        spec, pieces = shape_spec(node, ctx)
        if spec is None:
            return
        pad = ctx.rank(y) - len(spec)
        new = [len(keep[(y.name, b + pad)]) if (y.name, b + pad) in keep and s not in (1, None) else s
               for b, s in enumerate(spec)]
        _write_spec(node, ctx, spec, new, pieces)
