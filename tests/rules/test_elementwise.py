"""spa/rules/elementwise.py: Unary activations, Dropout, and broadcasting Binary ops
(arithmetic, comparisons, logic, Where, PRelu)."""

import numpy as np
import pytest
from onnx import TensorProto

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, shape
from spa.testing.oracle import check_oracle

# op -> the opset it needs (17 otherwise)
UNARY_OPSET = {"Gelu": 20, "Mish": 18}
# ops defined only on positive inputs get a Sigmoid first
POSITIVE = {"Log", "Sqrt", "Reciprocal"}
# ops with non-float outputs or extra inputs, tested on their own below
SPECIAL = {"Clip", "Cast", "Not", "IsNaN", "IsInf"}
UNARY = sorted(set(spa.rules.elementwise.Unary.ops) - SPECIAL)


@pytest.mark.parametrize("op", UNARY)
def test_unary(op):
    def fn(g, x):
        if op in POSITIVE:
            x = g.op("Sigmoid", [x])
        return g.op(op, [x], name="act")

    m = sandwich(fn, opset=UNARY_OPSET.get(op, 17))
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "conv0_w")[0] == shape(r.model, "tail_w")[1] == 6


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.3), (0.0, None)])
def test_clip_with_min_max_inputs(lo, hi):
    def fn(g, x):
        ins = [x, g.floats("lo", lo) if lo is not None else "", g.floats("hi", hi) if hi is not None else ""]
        while ins[-1] == "":
            ins.pop()
        return g.op("Clip", ins)

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "conv0_w")[0] == 6


def test_cast_roundtrip():
    def fn(g, x):
        return g.op("Cast", [g.op("Cast", [x], to=TensorProto.DOUBLE)], to=TensorProto.FLOAT)

    check_oracle(sandwich(fn))


@pytest.mark.parametrize("n_out", [1, 2], ids=["output", "output_and_mask"])
def test_dropout(n_out):
    def fn(g, x):
        out = g.op("Dropout", [x], n_out=n_out)
        return out if n_out == 1 else out[0]

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "conv0_w")[0] == 6


def test_prelu_per_channel_slope():
    def fn(g, x):
        return g.op("PRelu", [x, g.w("slope", 8, 1, 1, lo=0.05, hi=0.3)])

    m = sandwich(fn)
    assert "slope[0]" in group_with(spa.analyze(m), "conv0_w[0]").members
    r = check_oracle(m)
    assert shape(r.model, "slope") == (6, 1, 1)


def test_leaky_relu_then_prelu_scalar_slope():
    def fn(g, x):
        return g.op("PRelu", [g.op("LeakyRelu", [x], alpha=0.2), g.floats("slope", [0.1])])

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "slope") == (1,)


BINARY_CONST = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod"]


@pytest.mark.parametrize("const_first", [False, True], ids=["x_op_c", "c_op_x"])
@pytest.mark.parametrize("op", BINARY_CONST)
def test_binary_with_per_channel_constant(op, const_first):
    def fn(g, x):
        attrs = {"fmod": 1} if op == "Mod" else {}
        if op in ("Div", "Pow", "Mod"):
            c = g.w("c", 1, 8, 1, 1, lo=0.5, hi=1.5)  # positive divisor / exponent
            x = g.op("Sigmoid", [x]) if op == "Pow" else x
            if op == "Pow" and const_first:
                x = g.op("Tanh", [x])  # c ** x with a bounded exponent
        else:
            c = g.w("c", 1, 8, 1, 1)
        return g.op(op, [c, x] if const_first else [x, c], name="bin", **attrs)

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and "c[1]" in gr.members
    r = check_oracle(m)
    assert shape(r.model, "c") == (1, 6, 1, 1)


@pytest.mark.parametrize("c_shape", [(8, 1, 1), (1, 1, 8), (1,), ()], ids=["C11", "11W", "1", "scalar"])
def test_binary_broadcast_shapes(c_shape):
    def fn(g, x):
        return g.op("Add", [x, g.floats("c", np.linspace(-1, 1, int(np.prod(c_shape))).reshape(c_shape))])

    m = sandwich(fn)
    r = check_oracle(m)
    assert shape(r.model, "c") == ((6, 1, 1) if c_shape == (8, 1, 1) else c_shape)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min", "Sum", "Mean"])
def test_binary_of_two_activations_couples_them(op):
    """conv0 and mid=Conv(conv0) meet in `op`: one group holds both convs' outputs."""
    def fn(g, x):
        return g.op(op, [x, g.conv(x, 8, 8, name="mid")])

    m = sandwich(fn)
    a = spa.analyze(m)
    gr = group_with(a, "conv0_w[0]")
    assert {"mid_w[0]", "mid_w[1]", "tail_w[1]"} <= set(gr.members)
    assert [g.channels for g in a.prunable] == [8, 6]  # without the residual there would be 3 groups
    r = check_oracle(m)
    assert shape(r.model, "mid_w") == (6, 6, 3, 3)


def test_sum_and_mean_of_three():
    def fn(g, x):
        y = g.conv(x, 8, 8, name="mid")
        return g.op("Mean", [x, y, g.op("Sum", [x, y, g.w("c", 1, 8, 1, 1)])])

    m = sandwich(fn)
    assert len(spa.analyze(m).prunable) == 2
    r = check_oracle(m)
    assert shape(r.model, "c") == (1, 6, 1, 1)


def test_squeeze_excitation_gate():
    """x * Sigmoid(Conv(Relu(Conv(GAP(x))))): the [N, C, 1, 1] gate couples with x."""
    def fn(g, x):
        e = g.op("Relu", [g.conv(g.op("GlobalAveragePool", [x]), 8, 4, k=1, name="se1")])
        e = g.op("Sigmoid", [g.conv(e, 4, 8, k=1, name="se2")])
        return g.op("Mul", [x, e])

    m = sandwich(fn)
    a = spa.analyze(m)
    gr = group_with(a, "conv0_w[0]")
    assert {"se1_w[1]", "se2_w[0]", "se2_b[0]", "tail_w[1]"} <= set(gr.members)
    assert group_with(a, "se1_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "se1_w") == (3, 6, 1, 1)
    assert shape(r.model, "se2_w") == (6, 3, 1, 1)


# comparisons, logic, Where and bool-producing unary ops --------------------------------
def _where(g, x, cond):
    return g.op("Where", [cond, x, g.op("Mul", [x, g.floats("leak", 0.1)])])


LOGIC = {
    "Greater": lambda g, x: g.op("Greater", [x, g.w("c", 1, 8, 1, 1, scale=0.5)]),
    "Less": lambda g, x: g.op("Less", [x, g.w("c", 1, 8, 1, 1, scale=0.5)]),
    "GreaterOrEqual": lambda g, x: g.op("GreaterOrEqual", [x, g.floats("z", 0.0)]),
    "LessOrEqual": lambda g, x: g.op("LessOrEqual", [g.floats("z", 0.0), x]),
    "Equal": lambda g, x: g.op("Equal", [g.op("Relu", [x]), x]),
    "And": lambda g, x: g.op("And", [g.op("Greater", [x, g.floats("lo", -0.5)]),
                                     g.op("Less", [x, g.floats("hi", 0.5)])]),
    "Or": lambda g, x: g.op("Or", [g.op("Greater", [x, g.floats("lo", 0.5)]),
                                   g.op("Less", [x, g.floats("hi", -0.5)])]),
    "Xor": lambda g, x: g.op("Xor", [g.op("Greater", [x, g.floats("lo", -0.5)]),
                                     g.op("Greater", [x, g.floats("hi", 0.5)])]),
    "Not": lambda g, x: g.op("Not", [g.op("Greater", [x, g.floats("z", 0.0)])]),
    "IsNaN": lambda g, x: g.op("Not", [g.op("IsNaN", [x])]),
    "IsInf": lambda g, x: g.op("Not", [g.op("IsInf", [x])]),
}


@pytest.mark.parametrize("op", sorted(LOGIC))
def test_logic_into_where(op):
    m = sandwich(lambda g, x: _where(g, x, LOGIC[op](g, x)))
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    check_oracle(m)


def test_where_per_channel_constant_and_cast_mask():
    """Where(x > c, x, d) with per-channel c, d; then x * Cast(x > 0)."""
    def fn(g, x):
        y = g.op("Where", [g.op("Greater", [x, g.w("c", 1, 8, 1, 1)]), x, g.w("d", 1, 8, 1, 1)])
        return g.op("Mul", [y, g.op("Cast", [g.op("Greater", [y, g.floats("z", 0.0)])], to=TensorProto.FLOAT)])

    m = sandwich(fn)
    assert {"c[1]", "d[1]"} <= set(group_with(spa.analyze(m), "conv0_w[0]").members)
    r = check_oracle(m)
    assert shape(r.model, "c") == shape(r.model, "d") == (1, 6, 1, 1)
