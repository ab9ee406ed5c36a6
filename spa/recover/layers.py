"""The layers recovery refits, and the weights they read and write.

A layer is a node with constant weights whose output is fitted to the original
model's value of the same tensor:

- "conv": Conv with a constant 1-D or 2-D kernel (grouped and depthwise included);
- "linear": Gemm (transA=0) or MatMul with a constant 2-D right operand (or the only-used
  Transpose of one); a bias is the
  Gemm's C, or the constant of an Add that alone consumes the MatMul;
- "affine": LayerNormalization / RMSNormalization / SimplifiedLayerNormalization, refit
  as a per-channel affine map of their output (scale and bias).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

NORMS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")


class Weights:
    """Read and write constant tensors of a model, in initializers or Constant nodes."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.where = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for a in n.attribute:
                    if a.name == "value" and a.HasField("t"):
                        self.where[n.output[0]] = a.t
        self.uses: dict = {}
        for n in g.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in g.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

    def has(self, name: str) -> bool:
        return bool(name) and name in self.where

    def get(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.where[name])

    def set(self, name: str, value: np.ndarray):
        """Overwrite a constant in place, keeping its dtype and shape."""
        t = self.where[name]
        old = numpy_helper.to_array(t)
        new = numpy_helper.from_array(np.asarray(value, dtype=old.dtype).reshape(old.shape), t.name)
        t.CopyFrom(new)

    def owned(self, name: str) -> bool:
        """A constant read by exactly one node (safe to refit)."""
        return self.has(name) and self.uses.get(name, 0) == 1


@dataclass
class Layer:
    name: str
    kind: str  # conv | linear | affine
    x: str  # tensor read from the pruned model (the norm's output for "affine")
    y: str  # tensor whose original value is the target
    weight: str
    node: str = ""  # first output of the layer's node (locates it in either model)
    bias: str | None = None  # where the fitted bias is written
    bias_sign: float = 1.0  # -1: the bias lives in a BatchNormalization mean (conv without bias)
    scale: float = 1.0  # Gemm alpha (weight) ; the bias is divided by beta
    beta: float = 1.0
    trans: bool = False  # Gemm transB: the stored weight is [out, in]
    attrs: dict = field(default_factory=dict)  # conv: group, strides, pads, dilations
    skip: str | None = None  # the other input of the residual Add the output flows into
    post: tuple | None = None  # (scale, var, eps) of a BatchNormalization between output and that Add


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(node, w: Weights, consumers) -> Layer | None:
    if not w.owned(node.input[1]):
        return None
    k = w.get(node.input[1])
    if k.ndim not in (3, 4):
        return None
    a = _attrs(node)
    pad = a.get("auto_pad", b"NOTSET")
    pad = pad.decode() if isinstance(pad, bytes) else pad
    if pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return None
    nd = k.ndim - 2
    attrs = dict(group=int(a.get("group", 1)), strides=list(a.get("strides", [1] * nd)),
                 dilations=list(a.get("dilations", [1] * nd)), pads=list(a.get("pads", [0] * 2 * nd)),
                 auto_pad=pad, kernel=list(k.shape[2:]))
    layer = Layer(node.name or node.output[0], "conv", node.input[0], node.output[0], node.input[1], attrs=attrs)
    if len(node.input) > 2 and node.input[2]:
        if not w.owned(node.input[2]):
            return None
        layer.bias = node.input[2]
    else:
        nxt = consumers.get(node.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization" and w.owned(nxt[0].input[3]):
            layer.bias, layer.bias_sign = nxt[0].input[3], -1.0  # fold the bias into the running mean
    return layer


def _transposed(name, w: Weights, producer) -> str | None:
    """The owned 2-D constant that `name` is the only-used Transpose of, or None."""
    t = producer.get(name)
    if t is None or t.op_type != "Transpose" or w.uses.get(name, 0) != 1 or not w.owned(t.input[0]):
        return None
    perm = _attrs(t).get("perm", [1, 0])
    return t.input[0] if list(perm) == [1, 0] and w.get(t.input[0]).ndim == 2 else None


def _linear(node, w: Weights, consumers, producer) -> Layer | None:
    name = node.name or node.output[0]
    if node.op_type == "MatMul" and not w.has(node.input[1]):
        src = _transposed(node.input[1], w, producer)  # torch's Linear without constant folding
        if src is None:
            return None
        layer = Layer(name, "linear", node.input[0], node.output[0], src, trans=True)
        return _matmul_bias(layer, node, w, consumers, w.get(src).shape[0])
    if not w.owned(node.input[1]) or w.get(node.input[1]).ndim != 2:
        return None
    if node.op_type == "Gemm":
        a = _attrs(node)
        if a.get("transA", 0):
            return None
        n_out = w.get(node.input[1]).shape[0 if a.get("transB", 0) else 1]
        layer = Layer(name, "linear", node.input[0], node.output[0], node.input[1], scale=float(a.get("alpha", 1.0)),
                      beta=float(a.get("beta", 1.0)), trans=bool(a.get("transB", 0)))
        if len(node.input) > 2 and node.input[2]:
            if not w.owned(node.input[2]) or w.get(node.input[2]).size != n_out:
                return None  # a bias that is not one value per output
            layer.bias = node.input[2]
        return layer
    layer = Layer(name, "linear", node.input[0], node.output[0], node.input[1])
    return _matmul_bias(layer, node, w, consumers, w.get(node.input[1]).shape[1])


def _matmul_bias(layer, node, w: Weights, consumers, n_out) -> Layer:
    """Take the bias from an Add with a constant that alone consumes the MatMul."""
    nxt = consumers.get(node.output[0], [])
    if len(nxt) == 1 and nxt[0].op_type == "Add":
        other = [i for i in nxt[0].input if i != node.output[0]]
        if len(other) == 1 and w.owned(other[0]):
            b = w.get(other[0])
            if b.size == n_out and b.shape[-1] == n_out:
                layer.bias, layer.y = other[0], nxt[0].output[0]
    return layer


def _norm(node, w: Weights) -> Layer | None:
    if len(node.input) < 2 or not w.owned(node.input[1]) or w.get(node.input[1]).ndim != 1:
        return None
    a = _attrs(node)
    if a.get("axis", -1) != -1:
        return None
    layer = Layer(node.name or node.output[0], "affine", node.output[0], node.output[0], node.input[1])
    if len(node.input) > 2 and node.input[2] and node.op_type == "LayerNormalization":
        if not w.owned(node.input[2]):
            return None
        layer.bias = node.input[2]
    return layer


def _residual(layer: Layer, w: Weights, consumers):
    """Note the residual Add that `layer` feeds (through at most one BatchNormalization):
    its target then absorbs the skip input's error."""
    t, nxt = layer.y, consumers.get(layer.y, [])
    post = None
    if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization" and all(w.has(i) for i in nxt[0].input[1:5]):
        post = (nxt[0].input[1], nxt[0].input[4], float(_attrs(nxt[0]).get("epsilon", 1e-5)))
        t, nxt = nxt[0].output[0], consumers.get(nxt[0].output[0], [])
    if len(nxt) == 1 and nxt[0].op_type == "Add":
        other = [i for i in nxt[0].input if i != t]
        if len(other) == 1 and not w.has(other[0]):
            layer.skip, layer.post = other[0], post


def find(model: onnx.ModelProto, targets: set) -> list:
    """Refittable layers of `model`, in graph (topological) order.

    Args:
        model: the pruned model.
        targets: tensor names the original model computes; a layer whose target is
            not among them is skipped.

    Returns:
        A list of Layer.
    """
    w = Weights(model)
    consumers: dict = {}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx", "com.microsoft") or len(n.input) < 2:
            continue
        layer = None
        if n.op_type == "Conv":
            layer = _conv(n, w, consumers)
        elif n.op_type in ("Gemm", "MatMul"):
            layer = _linear(n, w, consumers, producer)
        elif n.op_type in NORMS:
            layer = _norm(n, w)
        if layer is not None and layer.y in targets and not w.has(layer.x):
            layer.node = n.output[0]
            if layer.kind != "affine":
                _residual(layer, w, consumers)
            out.append(layer)
    return out
