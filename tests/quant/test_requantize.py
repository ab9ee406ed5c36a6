"""spa/io/quant.py and rewrite.write_const on a quantized weight: values that still fit
keep the scheme; a channel that no longer fits gets a larger scale, and the int32 bias of
the layer follows it (bias scale = input scale x weight scale)."""

import numpy as np

from spa.edit import write_const
from spa.io import load
from spa.rules import Ctx
from spa.testing.graphs import Graph
from spa.testing.quant import quantized, qweight


def qdq_conv():
    """x -> Q -> DQ -> Conv(DQ(int8 w, per channel), DQ(int32 b)) -> y"""
    g = Graph()
    s, z = g.floats("xs", 0.05), g.init("xz", np.int8(0))
    x = g.op("DequantizeLinear", [g.op("QuantizeLinear", ["input", s, z]), s, z])
    weights = g.randn(4, 3, 3, 3, scale=0.2)
    w = qweight(g, "w", weights)
    bscale = quantized(weights)[1] * 0.05
    b = g.op("DequantizeLinear", [g.init("b_q", np.array([100, -50, 7, 0], np.int32)), g.init("b_scale", bscale),
                                  g.init("b_zp", np.zeros(4, np.int32))], name="b_dq", axis=0)
    y = g.op("Conv", [x, w, b], name="conv", kernel_shape=[3, 3])
    return g.model({"input": [1, 3, 5, 5]}, [y])


def test_values_that_fit_keep_the_scale_and_round_trip():
    m = load(qdq_conv())
    ctx = Ctx(m)
    w = ctx.tensors["w_dq"]
    before, scale = ctx.const(w).copy(), ctx.const(ctx.tensors["w_scale"]).copy()
    write_const(ctx, w, before * 0.5)
    assert np.array_equal(ctx.const(ctx.tensors["w_scale"]), scale)
    assert np.abs(ctx.const(w) - before * 0.5).max() <= scale.max() / 2 + 1e-7
    write_const(ctx, w, before)
    assert np.array_equal(ctx.const(w), before)


def test_a_channel_that_outgrows_its_range_gets_a_larger_scale_and_the_bias_follows():
    m = load(qdq_conv())
    ctx = Ctx(m)
    w, b = ctx.tensors["w_dq"], ctx.tensors["b_dq"]
    ws, bs = ctx.tensors["w_scale"], ctx.tensors["b_scale"]
    old_ws, bias = ctx.const(ws).copy(), ctx.const(b).copy()
    value = ctx.const(w).copy()
    value[1] *= 3  # channel 1 no longer fits in int8 at its scale
    write_const(ctx, w, value)
    new_ws = ctx.const(ws)
    assert new_ws[1] > old_ws[1] and np.array_equal(np.delete(new_ws, 1), np.delete(old_ws, 1))
    assert np.abs(ctx.const(w) - value).max() <= new_ws.max() / 2 + 1e-6
    np.testing.assert_allclose(ctx.const(bs), new_ws * 0.05, rtol=1e-6)  # still input scale x weight scale
    assert np.abs(ctx.const(b) - bias).max() <= ctx.const(bs).max() / 2 + 1e-7
    assert ctx.const(ctx.tensors["w_q"]).dtype == np.int8
