"""Elementwise ops: every axis of every input passes straight to the output,
with numpy broadcasting. Constant operands are per-channel parameters ("elem").

ACTIVATIONS and ARITHMETIC give the values of the ops whose statistics spa.score pushes
through (a Gaussian by quadrature): f(x, attrs) and f(a, b) in numpy.
"""

import math

import numpy as np

from .base import Rule, broadcast
from .registry import register

_erf = np.vectorize(math.erf)


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


ACTIVATIONS = {
    "Relu": lambda x, a: np.maximum(x, 0),
    "Sigmoid": lambda x, a: sigmoid(x),
    "Tanh": lambda x, a: np.tanh(x),
    "LeakyRelu": lambda x, a: np.where(x > 0, x, a.get("alpha", 0.01) * x),
    "Elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1)),
    "HardSigmoid": lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    "Softplus": lambda x, a: np.logaddexp(0, x),
    "Mish": lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    "Gelu": lambda x, a: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "Erf": lambda x, a: _erf(x),
    "Identity": lambda x, a: x,
    "Dropout": lambda x, a: x,
}


ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
              "Div": lambda a, b: a / np.where(b == 0, 1e-30, b),
              "Pow": lambda a, b: np.power(np.abs(a), b) * np.where((a < 0) & (np.mod(b, 2) == 1), -1, 1)}


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
