"""Weights computed in the graph from parameters (spa.rules: Ctx.computed, Reduce,
BatchNormalization in training mode): the parameter is pruned and the computation follows.

Each case: input -> conv0 -> W(v) conv "dw" (8 -> 8) -> tail conv -> head, where the weight of
"dw" is computed at run time from the parameter v ([8, 8, 3, 3]):

    v --(standardise | normalise | scale)--> w --> Conv dw

Per-output-channel statistics keep dw's output channels exact (the masked oracle); its input
channels (conv0's outputs) change the statistics, so that group is approximate ("hidden").
"""

import numpy as np
import pytest

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, shape
from spa.testing.oracle import check_oracle

AXES = [1, 2, 3]


def _conv(g, x, w):
    return g.op("Conv", [x, w, g.w("dw_b", 8, scale=0.1)], name="dw", kernel_shape=[3, 3], pads=[1] * 4), 8


def standardised(g, x):
    """timm's ScaledStdConv2d written out: (v - mean) / sqrt(var + eps) * gain."""
    v = g.w("v", 8, 8, 3, 3)
    centred = g.op("Sub", [v, g.op("ReduceMean", [v], axes=AXES, keepdims=1)])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=AXES, keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.floats("eps", [1e-5])])])
    return _conv(g, x, g.op("Mul", [g.op("Div", [centred, std]), g.w("gain", 8, 1, 1, 1, lo=0.5, hi=1.5)]))


def batchnorm_training(g, x):
    """The TorchScript exporter: BatchNormalization in training mode on v as [1, 8, 72]."""
    v = g.w("v", 1, 8, 72)
    ins = [v, g.w("gain", 8, lo=0.5, hi=1.5), g.floats("zero", np.zeros(8)), g.floats("m", np.zeros(8)),
           g.floats("s", np.ones(8))]
    y = g.op("BatchNormalization", ins, n_out=3, training_mode=1, epsilon=1e-5)[0]  # and running statistics
    return _conv(g, x, g.op("Reshape", [y, g.ints("to", [8, 8, 3, 3])]))


def batchnorm_statistics(g, x):
    """The dynamo exporter: statistics by ReduceMean without keepdims, an inference-mode
    BatchNormalization, and a zero bias that another norm shares."""
    v3 = g.op("Reshape", [g.w("v", 8, 8, 3, 3), g.ints("to3", [1, 8, 72])])
    mean = g.op("ReduceMean", [v3], axes=[0, 2], keepdims=0)
    centred = g.op("Sub", [v3, g.op("ReduceMean", [v3], axes=[0, 2], keepdims=1)])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=[0, 2], keepdims=0)
    zero = g.floats("zero", np.zeros(8))
    y = g.op("BatchNormalization", [v3, g.w("gain", 8, lo=0.5, hi=1.5), zero, mean, var], epsilon=1e-5)
    x, c = _conv(g, x, g.op("Reshape", [y, g.ints("to", [8, 8, 3, 3])]))
    ins = [x, g.w("bn_s", 8, lo=0.5, hi=1.5), zero, g.w("bn_m", 8, scale=0.1), g.w("bn_v", 8, lo=0.5, hi=1.5)]
    return g.op("BatchNormalization", ins, name="bn"), c


def weight_norm(g, x):
    """torch's weight_norm: g * v / ||v|| per output channel."""
    v = g.w("v", 8, 8, 3, 3)
    norm = g.op("ReduceL2", [v], axes=AXES, keepdims=1)
    return _conv(g, x, g.op("Mul", [g.w("gain", 8, 1, 1, 1, lo=0.5, hi=1.5), g.op("Div", [v, norm])]))


def spectral_scale(g, x):
    """One scale for the whole weight (spectral norm's sigma, here the Frobenius norm)."""
    v = g.w("v", 8, 8, 3, 3)
    return _conv(g, x, g.op("Div", [v, g.op("Sqrt", [g.op("ReduceSumSquare", [v], keepdims=0)])]))


def constant_gain(g, x):
    """v times a constant gain: no statistics, every axis exact."""
    return _conv(g, x, g.op("Mul", [g.w("v", 8, 8, 3, 3), g.floats("gain", [1.7])]))


STATISTICS = [standardised, batchnorm_training, batchnorm_statistics, weight_norm, spectral_scale]


@pytest.mark.parametrize("fn", STATISTICS + [constant_gain], ids=lambda f: f.__name__)
def test_output_channels_follow_the_parameter(fn):
    m = sandwich(fn)
    a = spa.analyze(m)
    out = group_with(a, "tail_w[1]")
    v_out = "v[1]" if fn is batchnorm_training else "v[0]"  # v is [1, 8, 72] there
    assert out.prunable and v_out in out.members
    exact = fn is not spectral_scale  # one scale for all: every channel's removal changes it
    assert (out.kind != "hidden") == exact
    r = check_oracle(m, exclude=["conv0"]) if exact else spa.prune(m, ratio=0.3, exclude=["conv0"], seed=0)
    assert shape(r.model, "tail_w")[1] == 6 and shape(r.model, "v")[int(v_out[2])] == 6


@pytest.mark.parametrize("fn", STATISTICS, ids=lambda f: f.__name__)
def test_input_channels_pass_the_statistics_approximately(fn):
    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.kind == "hidden"
    r = spa.prune(m, ratio=0.3, exclude=["tail"], seed=0, round_to=1)
    assert r.verdict.runs and r.verdict.checker
    assert shape(r.model, "conv0_w")[0] == 6


def test_constant_gain_input_channels_are_exact():
    m = sandwich(constant_gain)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.kind != "hidden" and "v[1]" in gr.members
    r = check_oracle(m, exclude=["tail"])  # the masked oracle zeroes the computed weight's slices
    assert shape(r.model, "v") == (8, 6, 3, 3)


def test_shared_zero_bias_does_not_tie_two_norms():
    a = spa.analyze(sandwich(batchnorm_statistics))
    assert "bn_s[0]" not in group_with(a, "conv0_w[0]").members


def test_statistics_alone_are_not_a_group():
    """A copy of v whose only use is a statistic is no channel to prune."""
    def fn(g, x):
        y, c = standardised(g, x)
        copy = g.w("copy", 72, 8)
        bias = g.op("ReduceMean", [g.op("Mul", [copy, copy])], axes=[0], keepdims=0)
        return g.op("Add", [y, g.op("Reshape", [bias, g.ints("b4", [1, 8, 1, 1])])]), c

    a = spa.analyze(sandwich(fn))
    assert not group_with(a, "copy[0]").prunable
