"""spa/rules/reshape.py: Reshape and Flatten merge a channel axis into feature blocks
(and split them back); constant target shapes are rewritten."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with, input_value, runtime_input, shape
from spa.testing.oracle import check_oracle



def _head(reshape, batch="N"):
    """input -> Conv(3->8) s2 -> [N,8,4,4] -> reshape(g, x) -> [N,128] -> Gemm(128->5)."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0", strides=[2, 2])
    x = reshape(g, x)
    return g.model({"input": [batch, 3, 8, 8]}, [g.gemm(g.op("Relu", [x]), 128, 5, name="fc")])


def _check_blocks(m, r):
    """fc_w loses 16 columns per removed channel: whole blocks [16c, 16c+16)."""
    removed = dict(((n, a), np.asarray(i)) for n, a, i in r.sinks)[("fc_w", 1)]
    chans = np.unique(removed // 16)
    assert len(chans) == 2
    np.testing.assert_array_equal(removed, (chans[:, None] * 16 + np.arange(16)).reshape(-1))
    assert shape(r.model, "conv0_w") == (6, 3, 3, 3)
    assert shape(r.model, "fc_w") == (5, 96)


def test_flatten_into_gemm():
    m = _head(lambda g, x: g.op("Flatten", [x], axis=1))
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and "fc_w[1]" in gr.members and gr.elements == 16
    _check_blocks(m, check_oracle(m))


@pytest.mark.parametrize("target,expected", [([-1, 128], [-1, 96]), ([0, 128], [0, 96]), ([0, -1], [0, -1])])
def test_reshape_constant_target_updated(target, expected):
    m = _head(lambda g, x: g.op("Reshape", [x, g.ints("target", target)], name="rs"))
    r = check_oracle(m)
    _check_blocks(m, r)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), expected)


def _runtime_target(g, x, tail):
    """The legacy torch exporter's pattern: Concat(Unsqueeze(Gather(Shape(x), 0)), tail)."""
    n = g.op("Gather", [g.op("Shape", [x]), g.ints("zero", 0)], axis=0)
    n = g.op("Unsqueeze", [n, g.ints("ax", [0])])
    return g.op("Concat", [n, g.ints("rest", tail)], name="target", axis=0)



@pytest.mark.parametrize("batch", [
    "N",
    1,
    2,
])
def test_reshape_runtime_target_concat_minus_one(batch):
    m = _head(lambda g, x: g.op("Reshape", [x, _runtime_target(g, x, [-1])], name="rs"), batch)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.channels == 8, gr
    r = check_oracle(m)
    _check_blocks(m, r)
    np.testing.assert_array_equal(runtime_input(r.model, "rs", 1), [2 if batch == "N" else batch, -1])


@pytest.mark.parametrize("batch", ["N", 2])
def test_reshape_runtime_target_concat_explicit_size(batch):
    """Concat([N], [128]): folded to [-1, 128] (dynamic N) or [2, 128], then rewritten to 96."""
    m = _head(lambda g, x: g.op("Reshape", [x, _runtime_target(g, x, [128])], name="rs"), batch)
    r = check_oracle(m)
    _check_blocks(m, r)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [-1 if batch == "N" else 2, 96])


def test_reshape_two_dynamic_dims_keeps_them_at_run_time():
    """Concat([N], [H], [C*W]) with N and H dynamic: the static entry becomes a constant
    piece of a new Concat and is rewritten; the dynamic ones are still read at run time."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")  # [N, 8, H, 8]
    t = g.op("Transpose", [x], perm=[0, 2, 1, 3])  # [N, H, 8, 8]
    n = [g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [t]), g.ints(f"i{k}", k)], axis=0), g.ints(f"a{k}", [0])])
         for k in range(2)]
    y = g.op("Reshape", [t, g.op("Concat", [*n, g.ints("cw", [64])], axis=0)], name="rs")  # [N, H, 64]
    y = g.op("ReduceMean", [g.op("Relu", [y])], axes=[1], keepdims=0)  # [N, 64]
    m = g.model({"input": ["N", 3, "H", 8]}, [g.gemm(y, 64, 5, name="fc")])
    r = check_oracle(m)
    assert shape(r.model, "conv0_w")[0] == 6
    np.testing.assert_array_equal(runtime_input(r.model, "rs", 1), [2, 2, 48])


def test_flatten_axis2_refuses_the_merge():
    """Flatten(axis=2) of [N,8,4,4] -> [N*8, 16]: the channel joins the batch."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0", strides=[2, 2])
    x = g.op("Flatten", [x], axis=2)
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(x, 16, 5, name="fc")])
    assert not group_with(spa.analyze(m), "conv0_w[0]").prunable


def test_reshape_split_channel_blocks_back():
    """[N,8,8,8] -> [N,512] -> Relu -> [N,8,8,8]: the split side maps blocks back to channels."""
    def fn(g, x):
        y = g.op("Relu", [g.op("Reshape", [x, g.ints("t1", [0, 512])], name="rs1")])
        return g.op("Reshape", [y, g.ints("t2", [0, 8, 8, 8])], name="rs2")

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and "tail_w[1]" in gr.members and gr.channels == 8, gr
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs1", 1), [0, 384])
    np.testing.assert_array_equal(input_value(r.model, "rs2", 1), [0, 6, 8, 8])


def test_reshape_split_spatial_axis():
    """[N,C,8,8] -> [N,C,64] -> Relu -> [N,C,8,8]: only spatial axes merge and split."""
    def fn(g, x):
        y = g.op("Relu", [g.op("Reshape", [x, g.ints("t1", [0, 8, 64])])])
        return g.op("Reshape", [y, g.ints("t2", [0, 8, 8, 8])], name="rs2")

    m = sandwich(fn)
    a = spa.analyze(m)
    assert group_with(a, "conv0_w[0]").prunable and group_with(a, "tail_w[0]").prunable
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs2", 1), [0, 6, 8, 8])


def test_reshape_merge_spatial_axes_passes_channels():
    """[N,C,8,8] -> [N,C,64] -> ReduceMean(2) -> [N,C] -> Gemm."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0")
    x = g.op("Reshape", [x, g.ints("t", [0, 8, 64])], name="rs")
    x = g.op("ReduceMean", [x], axes=[2], keepdims=0)
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(x, 8, 5, name="fc")])
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [0, 6, 64])


def test_reshape_to_shape_of_other_tensor():
    """Reshape(Relu(x), Shape(x)): the static dims fold to constants ([-1, 8, 8, 8] with a
    dynamic batch), so the channels prune and the target is rewritten."""
    def fn(g, x):
        return g.op("Reshape", [g.op("Relu", [x]), g.op("Shape", [x])], name="rs")

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "conv0_w")[0] == 6
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [-1, 6, 8, 8])


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle_prunes_and_matches_masked_original(groups):
    """ShuffleNet's Reshape [N,g,C/g,H,W] -> Transpose(0,2,1,3,4) -> Reshape [N,C,H,W]."""
    def shuffle(g, x):
        y = g.op("Reshape", [x, g.ints("split", [0, groups, 8 // groups, 8, 8])])
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return g.op("Reshape", [y, g.ints("merge", [0, 8, 8, 8])]), 8

    m = sandwich(shuffle)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.channels == 8 // groups
    r = check_oracle(m, ratio=0.5)
    assert shape(r.model, "conv0_w")[0] == 4
