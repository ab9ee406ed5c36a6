"""spa/rules/conv.py: Conv and ConvTranspose, any rank, any group."""

import pytest

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import attr, group_with, shape
from spa.testing.oracle import check_oracle


@pytest.mark.parametrize("spatial", [(16,), (8, 8), (4, 4, 4)], ids=["1d", "2d", "3d"])
def test_conv_any_rank(spatial):
    m = sandwich(spatial=spatial)
    r = check_oracle(m)
    k = (3,) * len(spatial)
    assert shape(r.model, "conv0_w") == (6, 3, *k)
    assert shape(r.model, "conv0_b") == (6,)
    assert shape(r.model, "tail_w") == (5, 6, *k)
    assert shape(r.model, "fc_w") == (5, 5)


def test_conv_without_bias():
    def fn(g, x):
        return g.conv(x, 8, 8, bias=False, name="mid")

    r = check_oracle(sandwich(fn))
    assert shape(r.model, "mid_w") == (6, 6, 3, 3)


@pytest.mark.parametrize("cin,cout,group,kept_group,w_shape", [
    (8, 8, 4, 3, (6, 2, 3, 3)),     # grouped
    (8, 16, 4, 3, (12, 2, 3, 3)),   # grouped, more outputs than inputs
    (8, 8, 8, 6, (6, 1, 3, 3)),     # depthwise
    (8, 16, 8, 6, (12, 1, 3, 3)),   # depthwise, channel multiplier 2
], ids=["group4", "group4_widen", "depthwise", "depthwise_x2"])
def test_grouped_conv_prunes_whole_groups(cin, cout, group, kept_group, w_shape):
    def fn(g, x):
        return g.conv(x, cin, cout, group=group, name="gconv"), cout

    m = sandwich(fn, C=cin)
    a = spa.analyze(m)
    gr = group_with(a, "gconv_w[0]")
    assert gr.prunable and gr.channels == group
    assert {"conv0_w[0]", "gconv_b[0]", "tail_w[1]"} <= set(gr.members)
    r = check_oracle(m)
    assert attr(r.model, "gconv", "group") == kept_group
    assert shape(r.model, "gconv_w") == w_shape
    assert shape(r.model, "gconv_b") == (w_shape[0],)
    assert shape(r.model, "conv0_w")[0] == kept_group * cin // group
    assert shape(r.model, "tail_w")[1] == w_shape[0]


@pytest.mark.parametrize("transpose", [False, True])
def test_few_wide_groups_lose_channels_inside_every_group(transpose):
    """group 2 with 16 -> 32 channels (AlexNet-like): the same input offsets go in both
    groups, outputs likewise; `group` stays 2."""
    def fn(g, x):
        return g.conv(x, 16, 32, group=2, name="gconv", transpose=transpose,
                      **({"k": 2, "strides": [2, 2]} if transpose else {})), 32

    m = sandwich(fn, C=16)
    a = spa.analyze(m)
    inner, outer = group_with(a, "conv0_w[0]"), group_with(a, "gconv_b[0]")
    assert inner.prunable and inner.channels == 8 and inner.elements == 2
    assert outer.prunable and outer.channels == 16 and outer.elements == 2
    r = check_oracle(m, ratio=0.5)
    assert attr(r.model, "gconv", "group") == 2
    assert shape(r.model, "gconv_w") == ((8, 8, 2, 2) if transpose else (16, 4, 3, 3))
    assert shape(r.model, "conv0_w")[0] == 8 and shape(r.model, "tail_w")[1] == 16


def test_grouped_conv_round_to():
    def fn(g, x):
        return g.conv(x, 8, 8, group=8, name="dw")

    r = check_oracle(sandwich(fn), ratio=0.4, round_to=2)
    assert attr(r.model, "dw", "group") == 6  # 8 * 0.6 = 4.8 -> rounded up to a multiple of 2
    assert shape(r.model, "dw_w") == (6, 1, 3, 3)


def test_conv_transpose():
    def fn(g, x):
        return g.conv(x, 8, 6, k=2, transpose=True, strides=[2, 2], name="up"), 6

    m = sandwich(fn)
    r = check_oracle(m)
    assert shape(r.model, "up_w") == (6, 5, 2, 2)  # [Cin, Cout, k, k]
    assert shape(r.model, "up_b") == (5,)
    assert shape(r.model, "tail_w") == (5, 5, 3, 3)


@pytest.mark.parametrize("cin,cout,w_shape", [(8, 8, (6, 2, 2, 2)), (8, 12, (6, 3, 2, 2))])
def test_grouped_conv_transpose(cin, cout, w_shape):
    def fn(g, x):
        return g.conv(x, cin, cout, k=2, group=4, transpose=True, strides=[2, 2], name="up"), cout

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "up_w[0]")
    assert gr.prunable and gr.channels == 4
    r = check_oracle(m)
    assert attr(r.model, "up", "group") == 3
    assert shape(r.model, "up_w") == w_shape
    assert shape(r.model, "up_b") == (cout * 3 // 4,)


def test_conv_transpose_1d():
    def fn(g, x):
        return g.conv(x, 8, 6, k=2, nd=1, transpose=True, strides=[2], name="up"), 6

    r = check_oracle(sandwich(fn, spatial=(16,)))
    assert shape(r.model, "up_w") == (6, 5, 2)
