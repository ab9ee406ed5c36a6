"""Gemm and MatMul. A constant weight contracts the input's channels ("in") and
produces the output's ("out"). A product of two activations keeps its batch, row
and column axes but refuses the contracted axis."""

from .base import Rule, broadcast, output_spaces, volume
from .registry import register

TWO_ACTIVATIONS = "{op} of two activations contracts axis {axis}"


@register
class Gemm(Rule):
    ops = ("Gemm",)

    def couple(self, node, flow):
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        a_m, a_k = (1, 0) if ta else (0, 1)
        b_k, b_n = (1, 0) if tb else (0, 1)
        flow.identity(a, a_m, y, 0)
        flow.identity(b, b_n, y, 1)
        if flow.ctx.const(b) is not None:
            flow.identity(a, a_k, b, b_k)
            flow.param(b, b_k, "in")
            flow.param(b, b_n, "out")
        elif flow.ctx.const(a) is not None:
            flow.identity(a, a_k, b, b_k)
            flow.param(a, a_k, "in")
            flow.param(a, a_m, "out")
        else:
            flow.refuse(a, a_k, TWO_ACTIVATIONS.format(op="Gemm", axis=a_k))
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = node.inputs[2]
            broadcast(flow, [c], y)
            for axis in range(flow.ctx.rank(c) or 0):
                flow.param(c, axis, "out")

    def data_axis(self, node):
        return 0 if node.attrs.get("transA", 0) else 1

    def macs(self, node, ctx):
        """M x N x K: every output axis and the contracted axis of A scale it."""
        a, y = node.inputs[0], node.outputs[0]
        k = 0 if node.attrs.get("transA", 0) else 1
        n, kk = volume(ctx.shape(y)), ctx.dim(a, k)
        if n is None or ctx.rank(a) != 2:
            return 0, ()
        return n * (kk if isinstance(kk, int) else 1), tuple(output_spaces(ctx, y) + [(a.name, k)])


@register
class MatMul(Rule):
    ops = ("MatMul",)

    def data_axis(self, node):
        return -1

    def macs(self, node, ctx):
        """Every output element sums over the contracted axis (a weight product, or two
        activations: attention); every output axis and that axis scale it."""
        a, y = node.inputs[0], node.outputs[0]
        ra, ry = ctx.rank(a), ctx.rank(y)
        n = volume(ctx.shape(y))
        if n is None or ra is None or ry is None or ra < 2 or ry < 2:
            return 0, ()
        kk = ctx.dim(a, ra - 1)
        return n * (kk if isinstance(kk, int) else 1), tuple(output_spaces(ctx, y) + [(a.name, ra - 1)])

    def couple(self, node, flow):
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ctx = flow.ctx
        ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
        if ra is None or rb is None or ry is None or ra < 2 or rb < 2:
            return
        # batch axes broadcast like elementwise ops
        for t, r in ((a, ra), (b, rb)):
            for k in range(r - 2):
                j = ry - r + k
                if ctx.dim(t, k) == ctx.dim(y, j):
                    flow.identity(t, k, y, j)
                elif ctx.dim(t, k) == 1:
                    flow.handle(t, k)
        flow.identity(a, ra - 2, y, ry - 2)
        flow.identity(b, rb - 1, y, ry - 1)
        wb = weight_of(ctx, b)
        if wb is not None and _matrix(ctx, wb[0]):
            flow.identity(a, ra - 1, b, rb - 2)
            src, axes = wb
            flow.param(src, axes[rb - 2], "in")
            flow.param(src, axes[rb - 1], "out")
        elif ctx.const(a) is not None and _matrix(ctx, a):
            flow.identity(a, ra - 1, b, rb - 2)
            flow.param(a, ra - 1, "in")
            flow.param(a, ra - 2, "out")
        else:
            if ctx.inner:  # Q.K^T over head_dim: dropping index k from both drops one term of the sum
                flow.identity(a, ra - 1, b, rb - 2)
            else:
                flow.refuse(a, ra - 1, TWO_ACTIVATIONS.format(op="MatMul", axis=ra - 1))
            for k in range(ry - 2):  # attention: Q.K^T and probs.V batch over heads
                flow.tag(y, k, "heads")


def _matrix(ctx, t):
    """A constant that is one matrix: rank 2, or leading dims of size 1."""
    return all(d == 1 for d in ctx.shape(t)[:-2])


def weight_of(ctx, t):
    """A constant, seen directly or through Transpose/Identity/Cast (a tied embedding
    used as the output projection): (constant tensor, its axis for each axis of t)."""
    axes = list(range(ctx.rank(t) or 0))
    for _ in range(8):
        if ctx.const(t) is not None:
            return t, axes
        if len(t.inputs) != 1 or t.inputs[0].op not in ("Transpose", "Identity", "Cast"):
            return None
        node = t.inputs[0]
        if node.op == "Transpose":
            perm = node.attrs.get("perm") or list(reversed(range(len(axes))))
            axes = [perm[a] for a in axes]
        t = node.inputs[0]
    return None
