"""QOperator models (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearMul,
QLinearConcat, QLinearGlobalAveragePool, QLinearSigmoid) and dynamically quantized ones (ConvInteger,
MatMulInteger, DynamicQuantizeLinear): lifted to QDQ on load (spa.io.qop), pruned, and
lowered back, they keep their op types, add no float weight and equal the masked original."""

import collections

import numpy as np
import pytest

import spa
from spa.edit import export
from spa.io import load
from spa.runtime import run
from spa.testing.graphs import Graph, sandwich
from spa.testing.nets import densenet, mobilenetv2, resnet, se_net
from spa.testing.oracle import assert_oracle, feeds
from spa.testing.quant import float_weights, quantize


def mlp(seed=0):
    """x [N, 16] -> MatMul(24) + b -> Relu -> MatMul(24) + b -> Mul(sigmoid gate) -> MatMul(10)"""
    g = Graph(seed)
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", ["x", g.w("w1", 16, 24)]), g.w("b1", 24, scale=0.1)])])
    h = g.op("Add", [g.op("MatMul", [h, g.w("w2", 24, 24)]), g.w("b2", 24, scale=0.1)])
    h = g.op("Mul", [h, g.op("Sigmoid", [h])])
    return g.model({"x": ["N", 16]}, [g.op("MatMul", [h, g.w("w3", 24, 10)])])


def ops(model):
    return collections.Counter(n.op_type for n in model.graph.node)


NETS = {"resnet": resnet, "mobilenetv2": mobilenetv2, "densenet": densenet, "se_net": se_net, "mlp": mlp}


@pytest.mark.parametrize("net", NETS)
def test_qoperator_model_prunes_and_keeps_its_ops(net):
    q = quantize(NETS[net](), "qop")
    lifted = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
              "QLinearGlobalAveragePool", "QLinearSigmoid"}
    assert lifted & set(ops(q))
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.2
    assert_oracle(q, r)
    assert ops(r.model) == ops(q)
    assert set(float_weights(r.model)) <= set(float_weights(q)), "a float weight was added"


def test_lift_and_lower_give_back_the_same_model():
    q = quantize(densenet(), "qop")
    m = load(q)
    assert m.lifted and not {"QLinearConv", "QLinearConcat"} & {n.op for n in m.graph.nodes}
    back = export(m, m.graph)
    assert ops(back) == ops(q)
    x = feeds(q)
    for name, want in run(q, x).items():
        np.testing.assert_array_equal(run(back, x)[name], want)


@pytest.mark.parametrize("net", ["resnet", "mlp"])
def test_dynamically_quantized_model(net):
    """quantize_dynamic: ConvInteger / MatMulInteger behind DynamicQuantizeLinear."""
    q = quantize(NETS[net](), "dynamic", per_channel=False, op_types_to_quantize=["Conv", "MatMul"])
    assert {"ConvInteger", "MatMulInteger"} & set(ops(q))
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.2
    # DynamicQuantizeLinear takes its scale from the range of the channels it is given,
    # which the removed ones no longer widen: equal up to rounding at that scale
    assert_oracle(q, r, rtol=0, atol=0.02)
    assert ops(r.model) == ops(q)
    assert set(float_weights(r.model)) <= set(float_weights(q))


def test_qlinear_leaky_relu_and_average_pool():
    """conv0 -> QLinearLeakyRelu -> QLinearAveragePool -> tail: conv0's channels pass both."""
    def fn(g, x):
        return g.op("AveragePool", [g.op("LeakyRelu", [x], alpha=0.1)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    q = quantize(sandwich(fn), "qop")
    assert {"QLinearLeakyRelu", "QLinearAveragePool"} <= set(ops(q))
    r = spa.prune(q, ratio=0.3, seed=0, round_to=1)
    assert_oracle(q, r)
    assert ops(r.model) == ops(q) and {c.before for c in r.changes} == {8, 6}


def test_qlinear_softmax_over_another_axis_passes_channels():
    """x [N, 4, 16] -> QLinearMatMul(24) -> QLinearSoftmax(axis 1) -> QLinearMatMul(10)"""
    g = Graph(0)
    h = g.op("Softmax", [g.op("MatMul", ["x", g.w("w1", 16, 24)])], axis=1)
    q = quantize(g.model({"x": ["N", 4, 16]}, [g.op("MatMul", [h, g.w("w2", 24, 10)])]), "qop")
    assert "QLinearSoftmax" in ops(q)
    r = spa.prune(q, ratio=0.3, seed=0)
    assert_oracle(q, r)
    assert ops(r.model) == ops(q) and [(c.before, c.after) for c in r.changes] == [(24, 16)]
