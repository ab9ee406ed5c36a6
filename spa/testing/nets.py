"""The test architectures: small ONNX models for the pruning tests.

Every builder is ``fn(seed=0) -> onnx.ModelProto`` with one input ``input`` of
shape ``["N", C, *spatial]`` (symbolic batch), float32 outputs, IR version 8 and
opset 17. Weights are seeded random float32, so models are numerically
non-trivial and reproducible. `ALL` maps each builder's name to it.
"""

from __future__ import annotations

import numpy as np
import onnx

from .graphs import Graph


# -- builders -------------------------------------------------------------------
def conv_bn_relu(seed: int = 0) -> onnx.ModelProto:
    """input -> Conv -> BN -> Relu -> Conv -> GAP -> Flatten -> Gemm"""
    b = Graph(seed=seed, cin=3)
    return b.image_model([b.head(b.conv_to(b.cbr("input", 16), 32))], "conv_bn_relu")


def _basic_block(b, x, cout, stride=1):
    y = b.bn(b.conv_to(b.cbr(x, cout, stride=stride), cout))
    sc = x if stride == 1 and b.ch[x] == cout else b.bn(b.conv_to(x, cout, k=1, stride=stride))
    return b.relu(b.add(y, sc))


def resnet(seed: int = 0) -> onnx.ModelProto:
    """stem CBR -> block(id) -> block(1x1 s2 proj) -> block(id) -> GAP -> Flatten -> Gemm"""
    b = Graph(seed=seed, cin=3)
    x = b.cbr("input", 16)
    x = _basic_block(b, _basic_block(b, _basic_block(b, x, 16), 32, stride=2), 32)
    return b.image_model([b.head(x)], "resnet")


def densenet(seed: int = 0) -> onnx.ModelProto:
    """conv -> 3x [BN-Relu-Conv3x3 -> Concat(x, .)] -> BN-Relu-Conv1x1-AvgPool -> BN-Relu -> head"""
    b = Graph(seed=seed, cin=3)
    x = b.conv_to("input", 16)
    for _ in range(3):
        x = b.concat([x, b.conv_to(b.relu(b.bn(x)), 8)])
    x = b.pool(b.conv_to(b.relu(b.bn(x)), 20, k=1), "AveragePool")
    return b.image_model([b.head(b.relu(b.bn(x)))], "densenet")


def _inverted_residual(b, x, cout, stride=1, t=4):
    hid = b.ch[x] * t
    y = b.clip(b.bn(b.conv_to(x, hid, k=1, bias=False)))
    y = b.clip(b.bn(b.conv_to(y, hid, stride=stride, group=hid, bias=False)))
    y = b.bn(b.conv_to(y, cout, k=1, bias=False))
    return b.add(x, y) if stride == 1 and b.ch[x] == cout else y


def mobilenetv2(seed: int = 0) -> onnx.ModelProto:
    """CBClip -> IR(16->24,s2) -> IR(24->24,+res) -> IR(24->32) -> 1x1 CBClip -> head"""
    b = Graph(seed=seed, cin=3)
    x = b.clip(b.bn(b.conv_to("input", 16, bias=False)))
    for cout, s in ((24, 2), (24, 1), (32, 1)):
        x = _inverted_residual(b, x, cout, s)
    return b.image_model([b.head(b.clip(b.bn(b.conv_to(x, 64, k=1, bias=False))))], "mobilenetv2")


def resnext(seed: int = 0) -> onnx.ModelProto:
    """CBR -> 2x [1x1 CBR -> 3x3 grouped(g=4) CBR -> 1x1 CB -> Add(id) -> Relu] -> head"""
    b = Graph(seed=seed, cin=3)
    x = b.cbr("input", 32)
    for _ in range(2):
        y = b.bn(b.conv_to(b.cbr(b.cbr(x, 32, k=1), 32, group=4), 32, k=1))
        x = b.relu(b.add(y, x))
    return b.image_model([b.head(x)], "resnext")


def se_net(seed: int = 0) -> onnx.ModelProto:
    """CBR=s -> CBR=x -> x*Sigmoid(Conv(Relu(Conv(GAP x)))) -> HardSwish -> Add(s) -> Relu -> head"""
    b = Graph(seed=seed, cin=3)
    s = b.cbr("input", 16)
    x = b.cbr(s, 16)
    e = b.sigmoid(b.conv_to(b.relu(b.conv_to(b.gap(x), 4, k=1)), 16, k=1))
    y = b.layer("HardSwish", [b.mul(x, e)])
    return b.image_model([b.head(b.relu(b.add(y, s)))], "se_net")


def fpn(seed: int = 0) -> onnx.ModelProto:
    """CBR(16) -> CBR s2 (c2) -> CBR s2 (c3); p3=1x1(c3); p2=1x1(c2)+Resize(p3); out: 3x3(p2), 3x3(p3)"""
    b = Graph(seed=seed, cin=3)
    c2 = b.cbr(b.cbr("input", 16), 32, stride=2)
    c3 = b.cbr(c2, 64, stride=2)
    p3 = b.conv_to(c3, 24, k=1)
    p2 = b.add(b.conv_to(c2, 24, k=1), b.resize(p3, 2.0))
    return b.image_model([b.conv_to(p2, 24), b.conv_to(p3, 24)], "fpn")


def _to_4x4(b):
    return b.cbr(b.cbr("input", 8, stride=2), 16, stride=2)  # [N, 16, 4, 4]


def flatten_gemm(seed: int = 0) -> onnx.ModelProto:
    """CBR s2 -> CBR s2 [N,16,4,4] -> Flatten [N,256] -> Gemm -> Relu -> Gemm"""
    b = Graph(seed=seed, cin=3)
    x = b.flatten(_to_4x4(b), 16 * 4 * 4)
    return b.image_model([b.dense(b.relu(b.dense(x, 32)), 10)], "flatten_gemm")


def reshape_head(seed: int = 0) -> onnx.ModelProto:
    """CBR s2 -> CBR s2 [N,16,4,4] -> Reshape[-1,256] -> MatMul+Add -> Relu -> MatMul+Add"""
    b = Graph(seed=seed, cin=3)
    shape = b.const("shape", np.array([-1, 256], np.int64))
    x = b.layer("Reshape", [_to_4x4(b), shape], 256)
    return b.image_model([b.matmul_const(b.relu(b.matmul_const(x, 32)), 10)], "reshape_head")


def _residual_chain(b, name):
    # CBR=a -> Conv -> BN -> Add(a) -> Relu -> Conv -> head
    a = b.cbr("input", 16)
    x = b.relu(b.add(b.bn(b.conv_to(a, 16)), a))
    return b.image_model([b.head(b.conv_to(x, 32))], name)


def paddle_style(seed: int = 0) -> onnx.ModelProto:
    """conv_bn_relu + residual Add; every weight is a Constant node"""
    return _residual_chain(Graph(seed=seed, cin=3, weights="constant"), "paddle_style")


def fill_style(seed: int = 0) -> onnx.ModelProto:
    """conv_bn_relu + residual Add; every weight is ConstantOfShape(int64 init) with a fill value"""
    return _residual_chain(Graph(seed=seed, cin=3, weights="fill"), "fill_style")


def misc_ops(seed: int = 0) -> onnx.ModelProto:
    """Conv-PRelu-LeakyRelu-Conv-InstNorm-Elu-Mul-Sub-Div-Pad-AvgPool-Conv-Tanh-Sigmoid-Softplus-GlobalMaxPool-Flatten-Gemm.

    (no GroupNormalization: opset 18's version is deprecated and rejected by the checker,
     opset 21's needs IR version 10)
    """
    b = Graph(seed=seed, cin=3)
    x = b.conv_to("input", 16)
    x = b.layer("PRelu", [x, b.const("slope", b.uniform(16, 1, 1, lo=0.05, hi=0.3))])
    x = b.conv_to(b.layer("LeakyRelu", [x], alpha=0.1), 16)
    x = b.layer("InstanceNormalization", [x, b.const("in_s", b.uniform(16)), b.const("in_b", b.randn(16, scale=0.1))])
    x = b.layer("Elu", [x])
    x = b.mul(x, b.chan_const("mul_c", x))
    x = b.layer("Sub", [x, b.chan_const("sub_c", x)])
    x = b.layer("Div", [x, b.chan_const("div_c", x, lo=0.5)])
    x = b.layer("Pad", [x, b.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="constant")
    x = b.conv_to(b.pool(x, "AveragePool"), 16)  # 18x18 -> 9x9
    x = b.layer("Softplus", [b.sigmoid(b.layer("Tanh", [x]))])
    return b.image_model([b.dense(b.flatten(b.layer("GlobalMaxPool", [x])), 10)], "misc_ops")


def conv1d(seed: int = 0) -> onnx.ModelProto:
    """input [N,4,32]: CBR -> MaxPool -> CBR -> GAP -> Flatten -> Gemm"""
    b = Graph(cin=4, spatial=(32,), seed=seed)
    return b.image_model([b.head(b.cbr(b.pool(b.cbr("input", 16)), 32))], "conv1d")


def conv3d(seed: int = 0) -> onnx.ModelProto:
    """input [N,2,8,8,8]: CBR -> MaxPool -> CBR -> GAP -> Flatten -> Gemm"""
    b = Graph(cin=2, spatial=(8, 8, 8), seed=seed)
    return b.image_model([b.head(b.cbr(b.pool(b.cbr("input", 8)), 16))], "conv3d")


def conv_transpose(seed: int = 0) -> onnx.ModelProto:
    """CBR s2 (8x8) -> ConvTranspose s2 (16x16) -> BN -> Relu -> Conv -> head"""
    b = Graph(seed=seed, cin=3)
    x = b.relu(b.bn(b.convt_to(b.cbr("input", 16, stride=2), 12)))
    return b.image_model([b.head(b.conv_to(x, 24))], "conv_transpose")


ALL = {f.__name__: f for f in (
    conv_bn_relu, resnet, densenet, mobilenetv2, resnext, se_net, fpn, flatten_gemm,
    reshape_head, paddle_style, fill_style, misc_ops, conv1d, conv3d, conv_transpose)}
