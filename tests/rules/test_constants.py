"""spa/rules/constants.py: Constant and ConstantOfShape outputs are weights that get
sliced in place; Shape blocks only the dims its consumers read."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with, input_value, node, producer, shape, value
from spa.testing.oracle import check_oracle


def _bn_mul(g, x):
    """BatchNorm and a per-channel Mul, so every kind of weight is a Constant/fill too."""
    ins = [g.w("bn_s", 8, lo=0.5, hi=1.5), g.w("bn_b", 8, scale=0.1), g.w("bn_m", 8, scale=0.1),
           g.w("bn_v", 8, lo=0.5, hi=1.5)]
    x = g.op("BatchNormalization", [x, *ins], name="bn")
    return g.op("Mul", [g.op("Relu", [x]), g.w("c", 1, 8, 1, 1, lo=0.5, hi=1.5)])


@pytest.mark.parametrize("weights,op", [("constant", "Constant"), ("fill", "ConstantOfShape")])
def test_weights_from_constant_nodes(weights, op):
    m = sandwich(_bn_mul, weights=weights)
    assert producer(m, "conv0_w").op_type == op
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and {"bn_s[0]", "c[1]", "tail_w[1]"} <= set(gr.members)
    r = check_oracle(m)
    assert producer(r.model, "conv0_w").op_type == op  # sliced in place, still the same kind of node
    assert shape(r.model, "conv0_w") == (6, 3, 3, 3)
    assert shape(r.model, "bn_v") == (6,) and shape(r.model, "c") == (1, 6, 1, 1)
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)
    if weights == "fill":
        np.testing.assert_array_equal(np.unique(value(r.model, "conv0_w")), np.unique(value(m, "conv0_w")))


def test_constant_node_reshape_target_rewritten():
    g = Graph(weights="constant")
    x = g.conv("input", 3, 8, name="conv0", strides=[2, 2])
    x = g.op("Reshape", [x, g.ints("target", [-1, 128])], name="rs")
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(g.op("Relu", [x]), 128, 5, name="fc")])
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [-1, 96])
    assert shape(r.model, "fc_w") == (5, 96)


@pytest.mark.parametrize("attr", ["value_floats", "value"])
def test_constant_attribute_kinds(attr):
    """A per-channel scale in NHWC layout given as Constant(value_floats=[...]) or Constant(value=tensor)."""
    def fn(g, x):
        vals = np.linspace(0.5, 1.5, 8).astype(np.float32)
        kw = {"value_floats": vals.tolist()} if attr == "value_floats" else {
            "value": helper.make_tensor("v", TensorProto.FLOAT, [8], vals)}
        g.nodes.append(helper.make_node("Constant", [], ["scale"], name="scale_node", **kw))
        y = g.op("Mul", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), "scale"])
        return g.op("Transpose", [y], perm=[0, 3, 1, 2])

    m = sandwich(fn)
    assert "scale[0]" in group_with(spa.analyze(m), "conv0_w[0]").members
    r = check_oracle(m)
    assert shape(r.model, "scale") == (6,)


def test_constant_scalar_is_not_a_channel():
    def fn(g, x):
        g.nodes.append(helper.make_node("Constant", [], ["half"], name="half_node", value_float=0.5))
        return g.op("Mul", [x, "half"])

    r = check_oracle(sandwich(fn))
    assert value(r.model, "half") == np.float32(0.5)


def test_constant_of_shape_fill_as_per_channel_bias():
    def fn(g, x):
        g.ints("bias_shape", [1, 8, 1, 1])
        g.nodes.append(helper.make_node("ConstantOfShape", ["bias_shape"], ["bias"], name="bias_node",
                                        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25])))
        return g.op("Relu", [g.op("Add", [x, "bias"])])

    m = sandwich(fn)
    assert "bias[1]" in group_with(spa.analyze(m), "conv0_w[0]").members
    r = check_oracle(m)
    assert producer(r.model, "bias").op_type == "ConstantOfShape"
    np.testing.assert_array_equal(input_value(r.model, "bias_node", 0), [1, 6, 1, 1])


# Shape ---------------------------------------------------------------------------------


def _scale_by(g, x, dims):
    """x / prod(dims): uses the dims Shape read without Concat."""
    d = g.op("ReduceProd", [g.op("Cast", [dims], to=TensorProto.FLOAT)], keepdims=1)
    return g.op("Div", [x, d])


def test_shape_gather_batch_does_not_block_channels():
    def fn(g, x):
        return _scale_by(g, x, g.op("Gather", [g.op("Shape", [x]), g.ints("zero", [0])], axis=0))

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    check_oracle(m)


@pytest.mark.parametrize("ends,blocks", [(1, False), (2, True)])
def test_shape_slice_reads_only_sliced_dims(ends, blocks):
    def fn(g, x):
        return _scale_by(g, x, g.op("Slice", [g.op("Shape", [x]), g.ints("s", [0]), g.ints("e", [ends])]))

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable != blocks
    if blocks:
        assert "Shape reads dim 1 at run time" in gr.reason
    else:
        check_oracle(m)


def test_shape_gather_into_reshape_concat_target():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [8], [64])): only dim 0 is read, [8] is rewritten."""
    def fn(g, x):
        n = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [x]), g.ints("zero", 0)], axis=0), g.ints("ax", [0])])
        t = g.op("Concat", [n, g.ints("c", [8]), g.ints("hw", [64])], name="target", axis=0)
        y = g.op("ReduceMean", [g.op("Reshape", [x, t], name="rs")], axes=[2], keepdims=1)  # [N, 8, 1]
        return g.op("Unsqueeze", [y, g.ints("ax2", [3])])

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [-1, 6, 64])


def test_shape_read_fully_blocks():
    """ConstantOfShape(Shape(x)) needs every dim of x, the channel count included."""
    def fn(g, x):
        ones = g.op("ConstantOfShape", [g.op("Shape", [x])], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
        return g.op("Mul", [x, ones])

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable and "Shape reads dim 1 at run time" in gr.reason
    r = check_oracle(m)  # the rest of the model still prunes
    assert shape(r.model, "conv0_w") == (8, 3, 3, 3)


@pytest.mark.parametrize("index", [0, 1])
def test_shape_start_attribute(index):
    """Shape(x, start=1) = [C, H, W]; x / C or x / H. Both dims are static, so the value
    folds to a constant: x keeps being divided by the original C after pruning."""
    def fn(g, x):
        d = g.op("Gather", [g.op("Shape", [x], start=1), g.ints("i", [index])], axis=0)
        return g.op("Div", [x, g.op("Cast", [d], to=TensorProto.FLOAT)], name="div")

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "div", 1), 8.0)


def test_shape_dynamic_dim_is_read_at_run_time():
    """x / N, N the dynamic batch: not folded (the value differs between input sizes)."""
    def fn(g, x):
        d = g.op("Gather", [g.op("Shape", [x]), g.ints("i", [0])], axis=0)
        return g.op("Div", [x, g.op("Cast", [d], to=TensorProto.FLOAT)], name="div")

    m = sandwich(fn)
    r = check_oracle(m)
    assert producer(r.model, node(r.model, "div").input[1]).op_type == "Cast"


def _arange(g, n, dtype=TensorProto.FLOAT):
    """Cast(Range(0, n, 1)): a 1-D run-time vector of n values."""
    start, limit, delta = (g.init(g.name(k), np.array(v, np.int64)) for k, v in
                           [("start", 0), ("limit", n), ("delta", 1)])
    return g.op("Cast", [g.op("Range", [start, limit, delta])], to=dtype)


def test_range_along_width_does_not_block_channels():
    """conv0 [N, 8, 8, 8] + Cast(Range(0, 8, 1)) broadcast over the width: the channel
    group passes the Add; Range touches only the width."""
    m = sandwich(lambda g, x: g.op("Add", [x, _arange(g, 8)]))
    an = spa.analyze(m)
    assert "Range" not in dict(an.blocked_ops)
    gr = group_with(an, "conv0_w[0]")
    assert gr.prunable, gr.reason
    r = check_oracle(m)
    assert shape(r.model, "tail_w")[1] < 8


def test_range_along_channels_blocks():
    """conv0 + Unsqueeze(Cast(Range(0, 8, 1)), [1, 2]) added per channel: Range cannot be
    assumed to pass channels (its length is a value), so the group is blocked."""
    def fn(g, x):
        return g.op("Add", [x, g.op("Unsqueeze", [_arange(g, 8), g.ints("axes", [1, 2])])])

    gr = group_with(spa.analyze(sandwich(fn)), "conv0_w[0]")
    assert not gr.prunable and "Range" in gr.reason
