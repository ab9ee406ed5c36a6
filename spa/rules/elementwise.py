"""Elementwise ops: every axis of every input passes straight to the output,
with numpy broadcasting. Constant operands are per-channel parameters ("elem")."""

from .base import Rule, broadcast
from .registry import register


@register
class Unary(Rule):
    ops = (
        "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu",
        "Celu", "Tanh", "Erf", "Gelu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
        "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
        "Sin", "Cos", "Identity", "Cast", "Not", "IsNaN", "IsInf",
    )

    def couple(self, node, flow):
        x, y = node.inputs[0], node.outputs[0]
        for axis in range(flow.ctx.rank(x) or 0):
            flow.identity(x, axis, y, axis)


@register
class Dropout(Rule):
    """Inference Dropout is the identity; its optional mask has the same shape."""

    ops = ("Dropout",)

    def couple(self, node, flow):
        x = node.inputs[0]
        for y in node.outputs:
            for axis in range(flow.ctx.rank(x) or 0):
                flow.identity(x, axis, y, axis)


@register
class Binary(Rule):
    ops = (
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
        "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
    )

    def couple(self, node, flow):
        broadcast(flow, node.inputs, node.outputs[0])
        for t in node.inputs:
            if flow.ctx.const(t) is not None:
                for axis in range(flow.ctx.rank(t) or 0):
                    flow.param(t, axis, "elem")
