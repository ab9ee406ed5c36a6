"""Tiny ONNX model builders for the pruning tests.

Every builder is ``fn(seed=0) -> onnx.ModelProto`` with one input ``input`` of
shape ``["N", C, *spatial]`` (symbolic batch), float32 outputs, IR version 8 and
opset 17. Weights are seeded random float32, so models are numerically
non-trivial and reproducible.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17


class Builder:
    """Accumulates nodes/weights, makes unique names and tracks channel counts.

    ``weights`` picks how float parameters are stored: ``"init"`` (initializers),
    ``"constant"`` (Constant nodes, Paddle style) or ``"fill"`` (ConstantOfShape).
    """

    def __init__(self, cin, spatial=(16, 16), seed=0, weights="init", opset=OPSET):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], {}
        self.ch = {"input": cin}
        self.in_shape = ["N", cin, *spatial]
        self.nd, self.weights, self.opset = len(spatial), weights, opset

    def name(self, prefix):
        i = self.count.get(prefix, 0)
        self.count[prefix] = i + 1
        return f"{prefix}_{i}"

    def const(self, prefix, arr):
        """Store a parameter tensor according to ``self.weights``; return its name."""
        arr, n = np.asarray(arr), self.name(prefix)
        if self.weights == "constant":
            self.nodes.append(helper.make_node(
                "Constant", [], [n], name=n, value=numpy_helper.from_array(arr, n)))
        elif self.weights == "fill" and arr.dtype == np.float32:
            shape = self.name(prefix + "_shape")
            self.inits.append(numpy_helper.from_array(np.array(arr.shape, np.int64), shape))
            val = helper.make_tensor("value", TensorProto.FLOAT, [1], [float(np.abs(arr).mean())])
            self.nodes.append(helper.make_node("ConstantOfShape", [shape], [n], name=n, value=val))
        else:
            self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, *shape, lo=0.5, hi=1.5):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def op(self, op_type, inputs, c=None, **attrs):
        """Append a single-output node; output channels default to the first input's."""
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        self.ch[out] = self.ch[inputs[0]] if c is None else c
        return out

    # -- layers ---------------------------------------------------------------
    def conv(self, x, cout, k=3, stride=1, group=1, bias=True):
        cin = self.ch[x]
        w = self.randn(cout, cin // group, *[k] * self.nd, scale=np.sqrt(2.0 / (cin // group * k ** self.nd)))
        ins = [x, self.const("conv_w", w)] + ([self.const("conv_b", self.randn(cout, scale=0.1))] if bias else [])
        return self.op("Conv", ins, cout, kernel_shape=[k] * self.nd, strides=[stride] * self.nd,
                       pads=[k // 2] * (2 * self.nd), group=group)

    def conv_t(self, x, cout, k=2, stride=2, bias=True):
        cin = self.ch[x]
        w = self.randn(cin, cout, *[k] * self.nd, scale=np.sqrt(1.0 / (cin * k ** self.nd)))
        ins = [x, self.const("convt_w", w)] + ([self.const("convt_b", self.randn(cout, scale=0.1))] if bias else [])
        return self.op("ConvTranspose", ins, cout, kernel_shape=[k] * self.nd, strides=[stride] * self.nd)

    def bn(self, x):
        c = self.ch[x]
        p = [self.uniform(c), self.randn(c, scale=0.1), self.randn(c, scale=0.1), self.uniform(c)]
        names = [self.const(s, a) for s, a in zip(("bn_g", "bn_b", "bn_m", "bn_v"), p)]
        return self.op("BatchNormalization", [x, *names], epsilon=1e-5)

    def relu(self, x):
        return self.op("Relu", [x])

    def sigmoid(self, x):
        return self.op("Sigmoid", [x])

    def clip(self, x, lo=0.0, hi=6.0):
        return self.op("Clip", [x, self.const("clip_min", np.float32(lo)), self.const("clip_max", np.float32(hi))])

    def add(self, a, b):
        return self.op("Add", [a, b])

    def mul(self, a, b):
        return self.op("Mul", [a, b])

    def chan_const(self, prefix, x, lo=None):
        """Per-channel [1, C, 1, ...] constant for ``x`` (positive uniform when ``lo`` is given)."""
        shape = (1, self.ch[x]) + (1,) * self.nd
        return self.const(prefix, self.uniform(*shape, lo=lo) if lo is not None else self.randn(*shape))

    def concat(self, xs, axis=1):
        return self.op("Concat", xs, sum(self.ch[x] for x in xs), axis=axis)

    def gap(self, x):
        return self.op("GlobalAveragePool", [x])

    def flatten(self, x, features=None):
        return self.op("Flatten", [x], features or self.ch[x], axis=1)

    def pool(self, x, kind="MaxPool", k=2, stride=2):
        return self.op(kind, [x], kernel_shape=[k] * self.nd, strides=[stride] * self.nd)

    def resize(self, x, scale=2.0):
        s = self.const("scales", np.array([1.0, 1.0] + [scale] * self.nd, np.float32))
        return self.op("Resize", [x, "", s], mode="nearest")

    def gemm(self, x, nout):
        nin = self.ch[x]
        w = self.const("fc_w", self.randn(nout, nin, scale=np.sqrt(1.0 / nin)))
        return self.op("Gemm", [x, w, self.const("fc_b", self.randn(nout, scale=0.1))], nout, transB=1)

    def matmul_const(self, x, nout):
        nin = self.ch[x]
        y = self.op("MatMul", [x, self.const("mm_w", self.randn(nin, nout, scale=np.sqrt(1.0 / nin)))], nout)
        return self.add(y, self.const("mm_b", self.randn(nout, scale=0.1)))

    def cbr(self, x, cout, k=3, stride=1, group=1):
        return self.relu(self.bn(self.conv(x, cout, k, stride, group)))

    def head(self, x, nout=10):
        return self.gemm(self.flatten(self.gap(x)), nout)

    def model(self, outputs, name):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, self.in_shape)
        graph = helper.make_graph(self.nodes, name, [inp], outs, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                              ir_version=IR_VERSION, producer_name="spa-tests")
        # Declare output shapes: inferred, batch forced to "N"; [N, C] where inference gives up.
        for o, i in zip(m.graph.output, onnx.shape_inference.infer_shapes(m).graph.output):
            t = i.type.tensor_type
            dims = [d.dim_value or None for d in t.shape.dim] if t.HasField("shape") else [0, self.ch[o.name]]
            o.CopyFrom(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, ["N", *dims[1:]]))
        return m


# -- builders -------------------------------------------------------------------
def conv_bn_relu(seed: int = 0) -> onnx.ModelProto:
    # input -> Conv -> BN -> Relu -> Conv -> GAP -> Flatten -> Gemm
    b = Builder(3, seed=seed)
    return b.model([b.head(b.conv(b.cbr("input", 16), 32))], "conv_bn_relu")


def _basic_block(b, x, cout, stride=1):
    y = b.bn(b.conv(b.cbr(x, cout, stride=stride), cout))
    sc = x if stride == 1 and b.ch[x] == cout else b.bn(b.conv(x, cout, k=1, stride=stride))
    return b.relu(b.add(y, sc))


def resnet(seed: int = 0) -> onnx.ModelProto:
    # stem CBR -> block(id) -> block(1x1 s2 proj) -> block(id) -> GAP -> Flatten -> Gemm
    b = Builder(3, seed=seed)
    x = b.cbr("input", 16)
    x = _basic_block(b, _basic_block(b, _basic_block(b, x, 16), 32, stride=2), 32)
    return b.model([b.head(x)], "resnet")


def densenet(seed: int = 0) -> onnx.ModelProto:
    # conv -> 3x [BN-Relu-Conv3x3 -> Concat(x, .)] -> BN-Relu-Conv1x1-AvgPool -> BN-Relu -> head
    b = Builder(3, seed=seed)
    x = b.conv("input", 16)
    for _ in range(3):
        x = b.concat([x, b.conv(b.relu(b.bn(x)), 8)])
    x = b.pool(b.conv(b.relu(b.bn(x)), 20, k=1), "AveragePool")
    return b.model([b.head(b.relu(b.bn(x)))], "densenet")


def _inverted_residual(b, x, cout, stride=1, t=4):
    hid = b.ch[x] * t
    y = b.clip(b.bn(b.conv(x, hid, k=1, bias=False)))
    y = b.clip(b.bn(b.conv(y, hid, stride=stride, group=hid, bias=False)))
    y = b.bn(b.conv(y, cout, k=1, bias=False))
    return b.add(x, y) if stride == 1 and b.ch[x] == cout else y


def mobilenetv2(seed: int = 0) -> onnx.ModelProto:
    # CBClip -> IR(16->24,s2) -> IR(24->24,+res) -> IR(24->32) -> 1x1 CBClip -> head
    b = Builder(3, seed=seed)
    x = b.clip(b.bn(b.conv("input", 16, bias=False)))
    for cout, s in ((24, 2), (24, 1), (32, 1)):
        x = _inverted_residual(b, x, cout, s)
    return b.model([b.head(b.clip(b.bn(b.conv(x, 64, k=1, bias=False))))], "mobilenetv2")


def resnext(seed: int = 0) -> onnx.ModelProto:
    # CBR -> 2x [1x1 CBR -> 3x3 grouped(g=4) CBR -> 1x1 CB -> Add(id) -> Relu] -> head
    b = Builder(3, seed=seed)
    x = b.cbr("input", 32)
    for _ in range(2):
        y = b.bn(b.conv(b.cbr(b.cbr(x, 32, k=1), 32, group=4), 32, k=1))
        x = b.relu(b.add(y, x))
    return b.model([b.head(x)], "resnext")


def se_net(seed: int = 0) -> onnx.ModelProto:
    # CBR=s -> CBR=x -> x*Sigmoid(Conv(Relu(Conv(GAP x)))) -> HardSwish -> Add(s) -> Relu -> head
    b = Builder(3, seed=seed)
    s = b.cbr("input", 16)
    x = b.cbr(s, 16)
    e = b.sigmoid(b.conv(b.relu(b.conv(b.gap(x), 4, k=1)), 16, k=1))
    y = b.op("HardSwish", [b.mul(x, e)])
    return b.model([b.head(b.relu(b.add(y, s)))], "se_net")


def fpn(seed: int = 0) -> onnx.ModelProto:
    # CBR(16) -> CBR s2 (c2) -> CBR s2 (c3); p3=1x1(c3); p2=1x1(c2)+Resize(p3); out: 3x3(p2), 3x3(p3)
    b = Builder(3, seed=seed)
    c2 = b.cbr(b.cbr("input", 16), 32, stride=2)
    c3 = b.cbr(c2, 64, stride=2)
    p3 = b.conv(c3, 24, k=1)
    p2 = b.add(b.conv(c2, 24, k=1), b.resize(p3, 2.0))
    return b.model([b.conv(p2, 24), b.conv(p3, 24)], "fpn")


def _to_4x4(b):
    return b.cbr(b.cbr("input", 8, stride=2), 16, stride=2)  # [N, 16, 4, 4]


def flatten_gemm(seed: int = 0) -> onnx.ModelProto:
    # CBR s2 -> CBR s2 [N,16,4,4] -> Flatten [N,256] -> Gemm -> Relu -> Gemm
    b = Builder(3, seed=seed)
    x = b.flatten(_to_4x4(b), 16 * 4 * 4)
    return b.model([b.gemm(b.relu(b.gemm(x, 32)), 10)], "flatten_gemm")


def reshape_head(seed: int = 0) -> onnx.ModelProto:
    # CBR s2 -> CBR s2 [N,16,4,4] -> Reshape[-1,256] -> MatMul+Add -> Relu -> MatMul+Add
    b = Builder(3, seed=seed)
    shape = b.const("shape", np.array([-1, 256], np.int64))
    x = b.op("Reshape", [_to_4x4(b), shape], 256)
    return b.model([b.matmul_const(b.relu(b.matmul_const(x, 32)), 10)], "reshape_head")


def _residual_chain(b, name):
    # CBR=a -> Conv -> BN -> Add(a) -> Relu -> Conv -> head
    a = b.cbr("input", 16)
    x = b.relu(b.add(b.bn(b.conv(a, 16)), a))
    return b.model([b.head(b.conv(x, 32))], name)


def paddle_style(seed: int = 0) -> onnx.ModelProto:
    # conv_bn_relu + residual Add; every weight is a Constant node
    return _residual_chain(Builder(3, seed=seed, weights="constant"), "paddle_style")


def fill_style(seed: int = 0) -> onnx.ModelProto:
    # conv_bn_relu + residual Add; every weight is ConstantOfShape(int64 init) with a fill value
    return _residual_chain(Builder(3, seed=seed, weights="fill"), "fill_style")


def misc_ops(seed: int = 0) -> onnx.ModelProto:
    # Conv-PRelu-LeakyRelu-Conv-InstNorm-Elu-Mul-Sub-Div-Pad-AvgPool-Conv
    #   -Tanh-Sigmoid-Softplus-GlobalMaxPool-Flatten-Gemm
    # (no GroupNormalization: opset 18's version is deprecated and rejected by the checker,
    #  opset 21's needs IR version 10)
    b = Builder(3, seed=seed)
    x = b.conv("input", 16)
    x = b.op("PRelu", [x, b.const("slope", b.uniform(16, 1, 1, lo=0.05, hi=0.3))])
    x = b.conv(b.op("LeakyRelu", [x], alpha=0.1), 16)
    x = b.op("InstanceNormalization", [x, b.const("in_s", b.uniform(16)), b.const("in_b", b.randn(16, scale=0.1))])
    x = b.op("Elu", [x])
    x = b.mul(x, b.chan_const("mul_c", x))
    x = b.op("Sub", [x, b.chan_const("sub_c", x)])
    x = b.op("Div", [x, b.chan_const("div_c", x, lo=0.5)])
    x = b.op("Pad", [x, b.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="constant")
    x = b.conv(b.pool(x, "AveragePool"), 16)  # 18x18 -> 9x9
    x = b.op("Softplus", [b.sigmoid(b.op("Tanh", [x]))])
    return b.model([b.gemm(b.flatten(b.op("GlobalMaxPool", [x])), 10)], "misc_ops")


def conv1d(seed: int = 0) -> onnx.ModelProto:
    # input [N,4,32]: CBR -> MaxPool -> CBR -> GAP -> Flatten -> Gemm
    b = Builder(4, spatial=(32,), seed=seed)
    return b.model([b.head(b.cbr(b.pool(b.cbr("input", 16)), 32))], "conv1d")


def conv3d(seed: int = 0) -> onnx.ModelProto:
    # input [N,2,8,8,8]: CBR -> MaxPool -> CBR -> GAP -> Flatten -> Gemm
    b = Builder(2, spatial=(8, 8, 8), seed=seed)
    return b.model([b.head(b.cbr(b.pool(b.cbr("input", 8)), 16))], "conv3d")


def conv_transpose(seed: int = 0) -> onnx.ModelProto:
    # CBR s2 (8x8) -> ConvTranspose s2 (16x16) -> BN -> Relu -> Conv -> head
    b = Builder(3, seed=seed)
    x = b.relu(b.bn(b.conv_t(b.cbr("input", 16, stride=2), 12)))
    return b.model([b.head(b.conv(x, 24))], "conv_transpose")


ALL = {f.__name__: f for f in (
    conv_bn_relu, resnet, densenet, mobilenetv2, resnext, se_net, fpn, flatten_gemm,
    reshape_head, paddle_style, fill_style, misc_ops, conv1d, conv3d, conv_transpose)}
