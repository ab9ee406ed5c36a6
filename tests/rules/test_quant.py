"""spa/rules/quant.py: QuantizeLinear / DequantizeLinear. A DequantizeLinear of constants
is a weight: its integers, scale and zero point are cut with its channels; activation
Q/DQ pass channels through, slicing a per-channel scale."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, shape, value
from spa.testing.oracle import check_oracle
from spa.testing.quant import qweight

# name -> (opset, qweight options)
SCHEMES = {
    "int8_per_channel": (17, {}),
    "uint8_zero_point": (17, {"dtype": np.uint8, "zero": True}),
    "int8_per_tensor": (17, {"axis": None}),
    "int4_per_channel": (21, {"dtype": "int4"}),
    "uint4_zero_point": (21, {"dtype": "uint4", "zero": True}),
}


def qconv(g, x, cin, cout, name, **q):
    """Conv whose weight is read through a DequantizeLinear (`name`_w_q, _scale, _zp)."""
    w = g.randn(cout, cin, 3, 3, scale=1 / np.sqrt(cin * 9))
    return g.op("Conv", [x, qweight(g, f"{name}_w", w, **q)], name=name, c=cout, kernel_shape=[3, 3],
                pads=[1, 1, 1, 1])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantized_conv_weight(scheme):
    """conv0 -> mid (quantized weight) -> tail: both groups cut mid's integers."""
    opset, q = SCHEMES[scheme]
    m = sandwich(lambda g, x: qconv(g, x, 8, 8, "mid", **q), opset=opset)
    gr = group_with(spa.analyze(m), "mid_w_q[0]")
    assert gr.prunable and "tail_w[1]" in gr.members
    per_channel = q.get("axis", 0) is not None
    assert ("mid_w_scale[0]" in gr.members) == per_channel
    before = value(m, "mid_w_q").dtype
    r = check_oracle(m)
    assert shape(r.model, "mid_w_q") == (6, 6, 3, 3) and value(r.model, "mid_w_q").dtype == before
    assert shape(r.model, "mid_w_scale") == ((6,) if per_channel else ())
    if q.get("zero"):
        assert shape(r.model, "mid_w_zp") == (6,)


def test_activation_quantize_per_tensor_passes_channels():
    def fn(g, x):
        s, z = g.floats("s", 0.05), g.init("z", np.int8(0))
        return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z])

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "conv0_w")[0] == 6 and shape(r.model, "s") == ()


def test_activation_quantize_per_channel_slices_its_scale():
    def fn(g, x):
        s, z = g.floats("s", np.linspace(0.02, 0.1, 8)), g.init("z", np.zeros(8, np.uint8) + 128)
        return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z], axis=1), s, z], axis=1)

    m = sandwich(fn)
    assert "s[0]" in group_with(spa.analyze(m), "conv0_w[0]").members
    r = check_oracle(m)
    assert shape(r.model, "s") == (6,) and shape(r.model, "z") == (6,)


def test_blocked_weight_loses_whole_blocks():
    """conv0 (8) -> GAP -> Flatten -> MatMul by a weight quantized in blocks of 4 along
    its input axis: conv0's channels go 4 at a time, with one row of block scales."""
    def fn(g, x):
        y = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
        w = qweight(g, "mm", g.randn(8, 5, scale=0.3), axis=0, block=4)
        return g.op("MatMul", [y, w], name="mm", c=5), 5, False

    m = sandwich(fn, opset=21)
    gr = group_with(spa.analyze(m), "mm_q[0]")
    assert gr.prunable and gr.channels == 2 and "mm_scale[0]" in gr.members
    r = check_oracle(m, ratio=0.5)
    assert shape(r.model, "mm_q") == (4, 5) and shape(r.model, "mm_scale") == (1, 5)


def test_unused_axes_of_a_quantized_weight_form_no_group():
    """The kernel axes of a quantized conv weight are not channels (as for a float weight)."""
    a = spa.analyze(sandwich(lambda g, x: qconv(g, x, 8, 8, "mid")))
    assert not any(m.startswith(("mid_w_q[2]", "mid_w_q[3]")) for g in a.groups for m in g.members)
