"""spa/rules/pool.py: pooling, Resize/Upsample and Pad pass the channel axis when they
leave it alone."""

import numpy as np
import onnx
import pytest

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, input_value, shape
from spa.testing.oracle import check_oracle

POOLS = {
    "MaxPool": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "LpPool": dict(kernel_shape=[2, 2], strides=[2, 2], p=2),
    "GlobalAveragePool": {},
    "GlobalMaxPool": {},
    "GlobalLpPool": dict(p=2),
}


@pytest.mark.parametrize("op", sorted(POOLS))
def test_pool(op):
    m = sandwich(lambda g, x: g.op(op, [x], **POOLS[op]))
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)


@pytest.mark.parametrize("spatial", [(16,), (4, 4, 4)], ids=["1d", "3d"])
def test_max_pool_other_ranks(spatial):
    nd = len(spatial)
    m = sandwich(lambda g, x: g.op("MaxPool", [x], kernel_shape=[2] * nd, strides=[2] * nd), spatial=spatial)
    check_oracle(m)


def test_max_pool_with_indices_output():
    def fn(g, x):
        return g.op("MaxPool", [x], n_out=2, kernel_shape=[2, 2], strides=[2, 2])[0]

    check_oracle(sandwich(fn))


def test_max_roi_pool():
    """Two regions of image 0: the output batch is the region axis, channels pass."""
    def fn(g, x):
        rois = g.floats("rois", [[0, 0, 0, 7, 7], [0, 2, 2, 5, 5]])
        return g.op("MaxRoiPool", [x, rois], pooled_shape=[2, 2])

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)


@pytest.mark.parametrize("opset", [10, 17])
def test_resize_scales(opset):
    def fn(g, x):
        scales = g.floats("scales", [1, 1, 2, 2])
        return g.op("Resize", [x, scales] if opset < 11 else [x, "", scales], mode="nearest")

    r = check_oracle(sandwich(fn, opset=opset))
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_sizes_updated(mode):
    """`sizes` names the channel count, so it must shrink with the channels (concrete batch 2)."""
    def fn(g, x):
        return g.op("Resize", [x, "", "", g.ints("sizes", [2, 8, 12, 12])], name="rs", mode=mode)

    m = sandwich(fn, batch=2)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs", 3), [2, 6, 12, 12])


def test_resize_scaling_channels_blocks():
    def fn(g, x):
        return g.op("Resize", [x, "", g.floats("scales", [1, 2, 1, 1])], mode="nearest"), 16

    gr = group_with(spa.analyze(sandwich(fn)), "conv0_w[0]")
    assert not gr.prunable and "Resize scale of axis 1 is not a constant 1" in gr.reason




@pytest.mark.parametrize("factor", ["scales", "sizes"])
def test_resize_opset18_axes_attribute(factor):
    def fn(g, x):
        ins = [x, "", g.floats("scales", [2, 2])] if factor == "scales" else [x, "", "", g.ints("sizes", [16, 16])]
        return g.op("Resize", ins, mode="nearest", axes=[2, 3])

    m = sandwich(fn, opset=18)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    check_oracle(m)


def test_upsample_opset9():
    def fn(g, x):
        return g.op("Upsample", [x, g.floats("scales", [1, 1, 2, 2])], mode="nearest")

    m = sandwich(fn, opset=9)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "tail_w") == (5, 6, 3, 3)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_spatial(mode):
    def fn(g, x):
        return g.op("Pad", [x, g.ints("pads", [0, 0, 1, 2, 0, 0, 2, 1])], mode=mode)

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    check_oracle(m)


def test_pad_attribute_opset10():
    m = sandwich(lambda g, x: g.op("Pad", [x], pads=[0, 0, 1, 1, 0, 0, 1, 1]), opset=10)
    check_oracle(m)


def test_pad_channel_axis_constant_passes_with_offset():
    """A constant Pad of the channel axis (EfficientViT's linear attention pads v with a row of
    ones): channel i moves to 1 + i, the padded channels stay."""
    def fn(g, x):
        return g.op("Pad", [x, g.ints("pads", [0, 1, 0, 0, 0, 1, 0, 0]), g.floats("v", [1.0])]), 10

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "tail_w")[1] < 10


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_channel_axis_copying_modes_block(mode):
    def fn(g, x):
        return g.op("Pad", [x, g.ints("pads", [0, 1, 0, 0, 0, 1, 0, 0])], mode=mode), 10

    gr = group_with(spa.analyze(sandwich(fn)), "conv0_w[0]")
    assert not gr.prunable and f"Pad pads axis 1 in {mode} mode" in gr.reason


def test_pad_opset18_axes_input():
    def fn(g, x):
        return g.op("Pad", [x, g.ints("pads", [1, 1, 1, 1]), "", g.ints("axes", [2, 3])])

    m = sandwich(fn, opset=18)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    check_oracle(m)


def _computed_pads(g, x, multiple=8):
    """pads = [0, 0, 0, 0, 0, 0, p, p'] computed from the run-time width W of x, padding
    W up to a multiple of `multiple` (p' = that, p = 1): the TorchScript export of
    `F.pad(x, (1, (m - W % m) % m))`, a Concat of constants and shape arithmetic."""
    w = g.op("Gather", [g.op("Shape", [x]), g.ints("i3", [3])], axis=0)
    m = g.ints("m", [multiple])
    p = g.op("Mod", [g.op("Sub", [m, g.op("Mod", [w, m])]), m])
    return g.op("Concat", [g.ints("begins", [0, 0, 0, 1]), g.ints("ends", [0, 0, 0]), p], axis=0)


def test_pad_computed_pads_static():
    """Pads computed from a static shape fold to constants: the channel axis passes."""
    m = sandwich(lambda g, x: g.op("Pad", [x, _computed_pads(g, x, 5)]))
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    check_oracle(m)


def test_pad_computed_pads_dynamic_width():
    """Pads that follow the dynamic width stay computed, but their channel entries are
    zero at every size: the channel axis passes, the width axis does not."""
    m = sandwich(lambda g, x: g.op("Pad", [x, _computed_pads(g, x, 8)]), spatial=(8, "W"))
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    check_oracle(m)


def test_pad_channel_pads_from_constants_alone_fold():
    """The TorchScript export of F.pad(x, (0, 0, 0, 0, 0, 1)): pads built from constants by
    ConstantOfShape, Concat, Reshape, Slice (reversed), Transpose, Reshape and Cast. Load
    folds them, and the padded channel axis passes with its offset."""
    def fn(g, x):
        zeros = g.op("ConstantOfShape", [g.ints("two", [2])],
                     value=onnx.helper.make_tensor("z", onnx.TensorProto.INT64, [1], [0]))
        flat = g.op("Concat", [g.ints("given", [0, 0, 0, 0, 0, 1]), zeros], axis=0)
        pairs = g.op("Reshape", [flat, g.ints("pairs", [-1, 2])])
        rev = g.op("Slice", [pairs, g.ints("s", [-1]), g.ints("e", [-(2 ** 62)]), g.ints("a", [0]),
                             g.ints("st", [-1])])
        pads = g.op("Cast", [g.op("Reshape", [g.op("Transpose", [rev], perm=[1, 0]), g.ints("m1", [-1])])],
                    to=onnx.TensorProto.INT64)
        return g.op("Pad", [x, pads, g.floats("one", [1.0])]), 9

    m = sandwich(fn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable, gr.reason
    check_oracle(m)
