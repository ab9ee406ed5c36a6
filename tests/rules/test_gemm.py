"""spa/rules/gemm.py: Gemm and MatMul with a constant weight on either side; products
of two activations refuse the contracted axis."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with, shape, value
from spa.testing.oracle import check_oracle


def _head(trans_b, bias_shape):
    """input -> Conv(3->8) -> GAP -> Flatten -> Gemm(8->6, transB) -> Relu -> Gemm(6->5)."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.w("h_w", *((6, 8) if trans_b else (8, 6)))
    ins = [x, w] + ([g.w("h_b", *bias_shape, scale=0.1)] if bias_shape else [])
    x = g.op("Relu", [g.op("Gemm", ins, name="h", transB=trans_b)])
    return g.model({"input": ["N", 3, 8, 8]}, [g.gemm(x, 6, 5, name="fc")])


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_shape", [(6,), (1, 6), None], ids=["bias", "bias_1xN", "nobias"])
def test_gemm_trans_b(trans_b, bias_shape):
    m = _head(trans_b, bias_shape)
    gr = group_with(spa.analyze(m), "fc_w[1]")
    assert gr.prunable and gr.channels == 6
    assert f"h_w[{1 - trans_b}]" in gr.members  # the output axis of the weight
    r = check_oracle(m)
    assert shape(r.model, "h_w") == ((5, 6) if trans_b else (6, 5))  # in: 8 -> 6, out: 6 -> 5
    if bias_shape:
        assert shape(r.model, "h_b") == bias_shape[:-1] + (5,)
    assert shape(r.model, "fc_w") == (5, 5)


def test_gemm_constant_a():
    """y[H, N] = W[H, D] @ x^T[D, N] + c[H, 1]: the weight is the first operand."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    xt = g.op("Transpose", [x], perm=[1, 0])
    y = g.op("Gemm", [g.w("h_w", 6, 8), xt, g.w("h_b", 6, 1, scale=0.1)], name="h")
    y = g.op("Relu", [g.op("Transpose", [y], perm=[1, 0])])
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(y, 6, 5, name="fc")])
    r = check_oracle(m)
    assert shape(r.model, "h_w") == (5, 6)
    assert shape(r.model, "h_b") == (5, 1)


def test_matmul_constant_right():
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    y = g.op("Add", [g.op("MatMul", [x, g.w("mm_w", 8, 6)]), g.w("mm_b", 6, scale=0.1)])
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(g.op("Relu", [y]), 6, 5, name="fc")])
    r = check_oracle(m)
    assert shape(r.model, "mm_w") == (6, 5)
    assert shape(r.model, "mm_b") == (5,)


def test_matmul_constant_right_channels_last():
    """A 1x1 conv written as NHWC MatMul: [N,H,W,C] @ [C,D]."""
    def fn(g, x):
        y = g.op("MatMul", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), g.w("mm_w", 8, 7)])
        return g.op("Transpose", [y], perm=[0, 3, 1, 2]), 7

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "mm_w") == (6, 5)
    assert shape(r.model, "tail_w")[1] == 5


def test_matmul_constant_right_rank3_weight():
    def fn(g, x):
        y = g.op("MatMul", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), g.w("mm_w", 1, 8, 7)])
        return g.op("Transpose", [y], perm=[0, 3, 1, 2]), 7

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    r = check_oracle(m)
    assert shape(r.model, "mm_w") == (1, 6, 5)


def test_matmul_constant_left():
    """[D, C] @ [N, C, HW]: the weight is the left operand, channels on the right's rows."""
    def fn(g, x):
        y = g.op("Reshape", [x, g.ints("s1", [0, 8, 64])])
        y = g.op("MatMul", [g.w("mm_w", 7, 8), y])  # [N, 7, 64]
        y = g.op("ReduceMean", [y], axes=[2], keepdims=1)
        return g.op("Unsqueeze", [y, g.ints("ax", [3])]), 7  # [N, 7, 1, 1]

    m = sandwich(fn)
    assert "mm_w[1]" in group_with(spa.analyze(m), "conv0_w[0]").members
    assert "mm_w[0]" in group_with(spa.analyze(m), "tail_w[1]").members
    r = check_oracle(m)
    assert shape(r.model, "mm_w") == (5, 6)
    assert shape(r.model, "tail_w")[1] == 5


def _gram():
    """[N, 64, C] @ [N, C, 64]: a product of two activations contracting the channels."""
    def fn(g, x):
        r = g.op("Reshape", [x, g.ints("s", [0, 8, 64])])
        y = g.op("MatMul", [g.op("Transpose", [r], perm=[0, 2, 1]), r], name="gram")
        return g.op("Reshape", [y, g.ints("s2", [0, 1, 64, 64])]), 1

    return sandwich(fn)


def test_matmul_two_activations_refuses_contracted_axis():
    m = _gram()
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable
    assert "MatMul of two activations contracts axis 2" in gr.reason
    # the rest of the model still prunes
    r = check_oracle(m)
    assert shape(r.model, "conv0_w") == (8, 3, 3, 3)


def test_gemm_two_activations_refuses_contracted_axis():
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    y = g.op("Gemm", [x, x], transB=1)
    m = g.model({"input": ["N", 3, 8, 8]}, [y])
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable and "Gemm of two activations contracts axis 1" in gr.reason
    with pytest.raises(spa.NothingToPrune):
        spa.prune(m, ratio=0.3, round_to=1)


def test_matmul_sliced_values_follow_kept_channels():
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    y = g.op("Add", [g.op("MatMul", [x, g.w("mm_w", 8, 6)]), g.w("mm_b", 6, scale=0.1)])
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(g.op("Relu", [y]), 6, 5, name="fc")])
    r = check_oracle(m, ratio=0.5, criterion="l2")  # slices, not compensated weights
    sinks = {(name, axis): idx for name, axis, idx in r.sinks}
    rows = np.setdiff1d(np.arange(8), sinks[("mm_w", 0)])
    cols = np.setdiff1d(np.arange(6), sinks[("fc_w", 1)])
    np.testing.assert_array_equal(value(r.model, "mm_w"), value(m, "mm_w")[rows][:, cols])
    np.testing.assert_array_equal(value(r.model, "mm_b"), value(m, "mm_b")[cols])
