"""Fused attention ops. SPA prunes heads in the unfused form (MatMul, Softmax,
Reshape); a fused op hides its head layout in attributes and packed weights, so it
refuses every axis it touches, saying so."""

from .base import Rule
from .registry import register

WHY = "fused attention op {op} '{name}': SPA prunes heads only in the unfused form (export without fusion)"
WHY_QUANT = ("quantized fused attention QAttention '{name}' (onnxruntime's dynamic quantizer): its int8 QKV weight "
             "packs the heads in one matrix; SPA prunes heads only in the unfused form (quantize a model exported "
             "without attention fusion)")


@register
class FusedAttention(Rule):
    ops = ("com.microsoft::Attention", "com.microsoft::MultiHeadAttention",
           "com.microsoft::GroupQueryAttention", "Attention")

    def couple(self, node, flow):
        flow.refuse_node(node, WHY.format(op=node.op, name=node.name))


@register
class QAttention(Rule):
    ops = ("com.microsoft::QAttention",)

    def couple(self, node, flow):
        flow.refuse_node(node, WHY_QUANT.format(name=node.name))
