"""MatMulNBits (com.microsoft). Load lifts every MatMulNBits it can to DequantizeLinear ->
MatMul (spa/io/nbits.py), which the quant and gemm rules prune; a node still in the graph
could not be lifted, so it refuses every axis it touches with the reason."""

from ..io.nbits import blocked
from .base import Rule, output_spaces, volume
from .registry import register


@register
class MatMulNBits(Rule):
    ops = ("com.microsoft::MatMulNBits",)

    def couple(self, node, flow):
        flow.refuse_node(node, blocked(node))

    def macs(self, node, ctx):
        """M x N x K, as MatMul counts them (nothing prunes them here)."""
        a, y = node.inputs[0], node.outputs[0]
        n, k = volume(ctx.shape(y)), ctx.dim(a, -1)
        if n is None or not isinstance(k, int):
            return 0, ()
        return n * k, tuple(output_spaces(ctx, y) + [(a.name, (ctx.rank(a) or 1) - 1)])
