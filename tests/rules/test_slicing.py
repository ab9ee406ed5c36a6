"""spa/rules/slicing.py: Concat, Split and Slice keep each channel at an offset."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import attr, group_with, input_value, shape
from spa.testing.oracle import check_oracle



def _removed(r, name, axis):
    return np.asarray(dict(((n, a), i) for n, a, i in r.sinks)[(name, axis)])


# Concat ------------------------------------------------------------------------------
def test_concat_of_two_convs_keeps_two_groups():
    def fn(g, x):
        return g.op("Concat", [g.conv(x, 8, 4, name="ca"), g.conv(x, 8, 5, name="cb")], axis=1), 9

    m = sandwich(fn)
    a = spa.analyze(m)
    ga, gb = group_with(a, "ca_w[0]"), group_with(a, "cb_w[0]")
    assert ga.id != gb.id and ga.prunable and gb.prunable
    assert (ga.channels, gb.channels) == (4, 5)
    assert "tail_w[1]" in ga.members and "tail_w[1]" in gb.members
    r = check_oracle(m)
    removed = _removed(r, "tail_w", 1)
    assert len(removed) == 2 and 0 <= removed[0] < 4 <= removed[1] < 9  # one from each part
    assert shape(r.model, "ca_w")[0] == 3 and shape(r.model, "cb_w")[0] == 4
    assert shape(r.model, "tail_w") == (5, 7, 3, 3)


def test_concat_same_tensor_twice():
    def fn(g, x):
        return g.op("Concat", [x, x], axis=1), 16

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.channels == 8 and gr.elements == 2
    r = check_oracle(m)
    removed = _removed(r, "tail_w", 1)
    half = removed[removed < 8]
    np.testing.assert_array_equal(removed, np.concatenate([half, half + 8]))
    assert shape(r.model, "tail_w") == (5, 12, 3, 3)


def test_concat_on_spatial_axis_couples_both_inputs():
    def fn(g, x):
        return g.op("Concat", [x, g.conv(x, 8, 8, name="mid")], axis=3)

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and "mid_w[0]" in gr.members and "mid_w[1]" in gr.members
    r = check_oracle(m)
    assert shape(r.model, "mid_w") == (6, 6, 3, 3)


def test_concat_with_a_graph_input():
    """Concat(conv0, extra): `extra` is a second graph input only the Concat reads."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Concat", [x, "extra"], axis=1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [g.conv(x, 10, 6, name="tail")])], axis=1)
    m = g.model({"input": ["N", 3, 8, 8], "extra": ["N", 2, 8, 8]}, [g.gemm(x, 6, 5, name="fc")])
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.channels == 8, gr
    r = check_oracle(m)
    assert shape(r.model, "tail_w") == (5, 8, 3, 3)


# Split -------------------------------------------------------------------------------
def _split(g, x, opset):
    if opset >= 18:
        return g.op("Split", [x], n_out=2, name="split", axis=1, num_outputs=2)
    if opset >= 13:
        return g.op("Split", [x, g.ints("sizes", [3, 5])], n_out=2, name="split", axis=1)
    return g.op("Split", [x], n_out=2, name="split", axis=1, split=[3, 5])


@pytest.mark.parametrize("opset", [11, 17, 18], ids=["attr", "input", "num_outputs"])
def test_split_sizes_updated(opset):
    """conv0's channels split into two groups, one per Split output; sizes follow both."""
    sizes = [4, 4] if opset >= 18 else [3, 5]

    def fn(g, x):
        a, b = _split(g, x, opset)
        return g.op("Add", [g.conv(a, sizes[0], 4, name="ca"), g.conv(b, sizes[1], 4, name="cb")]), 4

    m = sandwich(fn, opset=opset)
    a = spa.analyze(m)
    ga, gb = group_with(a, "ca_w[1]"), group_with(a, "cb_w[1]")
    assert ga.id != gb.id and [ga.channels, gb.channels] == sizes, (ga, gb)
    assert ga.prunable and gb.prunable and "conv0_w[0]" in ga.members and "conv0_w[0]" in gb.members
    r = check_oracle(m, ratio=0.5)
    new = [shape(r.model, "ca_w")[1], shape(r.model, "cb_w")[1]]
    assert new == [(n + 1) // 2 for n in sizes]
    assert shape(r.model, "conv0_w")[0] == sum(new)
    got = input_value(r.model, "split", 1) if opset >= 13 else attr(r.model, "split", "split")
    np.testing.assert_array_equal(got, new)


def test_split_spatial_axis_passes_channels():
    def fn(g, x):
        a, b = g.op("Split", [x, g.ints("sizes", [3, 5])], n_out=2, name="split", axis=3)
        return g.op("Concat", [b, a], axis=3)

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").channels == 8
    r = check_oracle(m)
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)
    np.testing.assert_array_equal(input_value(r.model, "split", 1), [3, 5])


# Slice -------------------------------------------------------------------------------
def _slice(start, end, step=1, axis=1):
    def fn(g, x):
        ins = [x, g.ints("starts", [start]), g.ints("ends", [end]), g.ints("axes", [axis]), g.ints("steps", [step])]
        c = len(range(8)[start:end:step]) if axis == 1 else 8
        return g.op("Slice", ins, name="slice"), c

    return sandwich(fn)


@pytest.mark.parametrize("start,end", [
    (0, 5),
    (2, 7),
    (-6, -1),
    (3, 2**62),
])
def test_slice_channel_step1(start, end):
    m = _slice(start, end)
    gr = group_with(spa.analyze(m), "tail_w[1]")
    assert gr.prunable and gr.channels == 5 and "conv0_w[0]" in gr.members, gr
    r = check_oracle(m, ratio=0.5)
    s, e = int(input_value(r.model, "slice", 1)[0]), int(input_value(r.model, "slice", 2)[0])
    assert e - s == shape(r.model, "tail_w")[1] == 3  # 5 live channels -> 3
    assert 0 <= s <= start % 8


def test_slice_channel_step1_from_zero_rewrites_ends():
    """Channels 0..4 are read, 5..7 are dead: two groups; the live one prunes and `ends` shrinks."""
    m = _slice(0, 5)
    a = spa.analyze(m)
    live = group_with(a, "tail_w[1]")
    assert live.channels == 5
    r = check_oracle(m, ratio=0.5)
    assert shape(r.model, "tail_w")[1] == 3
    assert int(input_value(r.model, "slice", 1)[0]) == 0
    assert int(input_value(r.model, "slice", 2)[0]) == 3


def test_slice_spatial_axis_passes_channels():
    r = check_oracle(_slice(1, 7, axis=3))
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)


@pytest.mark.parametrize("step", [2, -1])
def test_slice_channel_other_steps_block(step):
    m = _slice(0 if step > 0 else -1, 8 if step > 0 else -9, step=step)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable and f"Slice with step {step} on axis 1" in gr.reason
