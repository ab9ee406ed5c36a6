"""spa/rules/layout.py: Transpose, Squeeze/Unsqueeze, reductions, ArgMax/ArgMin and the
Softmax family."""

import pytest
from onnx import TensorProto

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with, shape
from spa.testing.oracle import check_oracle


def _blocked(m, text):
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable and text in gr.reason, gr.reason


def _prunes(m):
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "conv0_w")[0] == 6
    return r


def test_transpose_nhwc_roundtrip():
    def fn(g, x):
        y = g.op("Relu", [g.op("Transpose", [x], perm=[0, 2, 3, 1])])
        return g.op("Transpose", [y], perm=[0, 3, 1, 2])

    _prunes(sandwich(fn))


def test_transpose_default_perm_reverses():
    def fn(g, x):
        return g.op("Transpose", [g.op("Sigmoid", [g.op("Transpose", [x])])])

    _prunes(sandwich(fn))


def test_transpose_nhwc_per_channel_constant():
    """Mul by a [C] constant on the last (channel) axis of an NHWC tensor."""
    def fn(g, x):
        y = g.op("Mul", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), g.w("c", 8)])
        return g.op("Transpose", [y], perm=[0, 3, 1, 2])

    r = _prunes(sandwich(fn))
    assert shape(r.model, "c") == (6,)


@pytest.mark.parametrize("opset", [11, 17])
def test_unsqueeze_squeeze(opset):
    def fn(g, x):
        if opset >= 13:
            y = g.op("Unsqueeze", [x, g.ints("ax", [2])])
            return g.op("Squeeze", [g.op("Relu", [y]), g.ints("ax2", [2])])
        return g.op("Squeeze", [g.op("Relu", [g.op("Unsqueeze", [x], axes=[2])])], axes=[2])

    _prunes(sandwich(fn, opset=opset))


def test_squeeze_into_gemm_and_unsqueeze_into_conv():
    """GAP [N,C,1,1] -> Squeeze -> [N,C] -> Gemm -> Unsqueeze -> [N,D,1,1] -> Conv 1x1."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Squeeze", [g.op("GlobalAveragePool", [x]), g.ints("ax", [2, 3])])
    x = g.op("Unsqueeze", [g.gemm(x, 8, 6, name="h"), g.ints("ax2", [2, 3])])
    x = g.op("Flatten", [g.conv(x, 6, 4, k=1, name="tail")], axis=1)
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(x, 4, 5, name="fc")])
    r = _prunes(m)
    assert shape(r.model, "h_w") == (5, 6)
    assert shape(r.model, "tail_w") == (3, 5, 1, 1)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_spatial(keepdims, opset):
    def axes(g, x, op, ax):
        if opset >= 18:
            return g.op(op, [x, g.ints("axes", ax)], keepdims=keepdims)
        return g.op(op, [x], axes=ax, keepdims=keepdims)

    g = Graph(opset=opset)
    x = g.conv("input", 3, 8, name="conv0")
    x = axes(g, x, "ReduceMean", [2, 3])  # [N, 8] or [N, 8, 1, 1]
    if keepdims:
        x = g.op("Flatten", [x], axis=1)
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(x, 8, 5, name="fc")])
    r = _prunes(m)
    assert shape(r.model, "fc_w") == (5, 6)


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_mean_over_channels_without_keepdims_blocks(opset):
    def fn(g, x):
        if opset >= 18:
            return g.op("Unsqueeze", [g.op("ReduceMean", [x, g.ints("axes", [1])], keepdims=0), g.ints("u", [1])]), 1
        return g.op("Unsqueeze", [g.op("ReduceMean", [x], axes=[1], keepdims=0), g.ints("u", [1])]), 1

    _blocked(sandwich(fn, opset=opset), "ReduceMean reduces axis 1")


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_mean_over_channels_with_keepdims_is_a_norm_statistic(opset):
    """x - mean_c(x): the channels pass, approximately (the mean covers the kept ones)."""
    def fn(g, x):
        axes = dict(axes=[1]) if opset < 18 else {}
        extra = [g.ints("axes", [1])] if opset >= 18 else []
        return g.op("Sub", [x, g.op("ReduceMean", [x] + extra, keepdims=1, **axes)]), 8

    m = sandwich(fn, opset=opset)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.kind == "hidden"
    r = spa.prune(m, ratio=0.3, round_to=1)
    assert not r.exact and shape(r.model, "conv0_w")[0] == 6


def test_reduce_without_axes_reduces_everything():
    _blocked(sandwich(lambda g, x: (g.op("Unsqueeze", [g.op("ReduceMax", [x], keepdims=0),
                                                        g.ints("ax", [0, 1, 2, 3])]), 1)),
             "ReduceMax reduces axis 1")


REDUCE = sorted(spa.rules.layout.REDUCE)


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_over_width(op):
    def fn(g, x):
        if op in ("ReduceLogSum", "ReduceProd"):
            x = g.op("Sigmoid", [x])
        if op == "ReduceSum":  # axes became an input in opset 13 for ReduceSum only
            return g.op(op, [x, g.ints("axes", [3])], keepdims=1)
        return g.op(op, [x], axes=[3], keepdims=1)

    _prunes(sandwich(fn))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_max_min_over_width(op):
    def fn(g, x):
        idx = g.op("Cast", [g.op(op, [x], axis=3, keepdims=1)], to=TensorProto.FLOAT)  # [N, C, H, 1]
        return g.op("Mul", [x, idx])

    _prunes(sandwich(fn))


def test_arg_max_over_channels_blocks():
    def fn(g, x):
        return g.op("Cast", [g.op("ArgMax", [x], axis=1, keepdims=1)], to=TensorProto.FLOAT), 1

    _blocked(sandwich(fn), "ArgMax reduces axis 1")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_over_spatial_axis(op):
    _prunes(sandwich(lambda g, x: g.op(op, [x], axis=-1)))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_over_channels_blocks(op):
    _blocked(sandwich(lambda g, x: g.op(op, [x], axis=1)), f"{op} normalises over axis 1")


def test_softmax_opset11_coerces_trailing_axes():
    """Before opset 13 Softmax flattens axes >= axis: axis=1 covers the channels, axis=3 does not."""
    _blocked(sandwich(lambda g, x: g.op("Softmax", [x], axis=1), opset=11), "Softmax normalises over axis 1")
    _prunes(sandwich(lambda g, x: g.op("Softmax", [x], axis=3), opset=11))
