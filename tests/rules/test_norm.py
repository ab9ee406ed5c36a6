"""spa/rules/norm.py: BatchNormalization, InstanceNormalization, GroupNormalization,
LayerNormalization."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import sandwich
from spa.testing.lookup import attr, group_with, shape
from spa.testing.oracle import check_oracle


def _bn(g, x):
    ins = [g.w("bn_s", 8, lo=0.5, hi=1.5), g.w("bn_b", 8, scale=0.1), g.w("bn_m", 8, scale=0.1),
           g.w("bn_v", 8, lo=0.5, hi=1.5)]
    return g.op("BatchNormalization", [x, *ins], name="bn", epsilon=1e-5)


def test_batch_normalization():
    m = sandwich(_bn)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and {"bn_s[0]", "bn_b[0]", "bn_m[0]", "bn_v[0]", "tail_w[1]"} <= set(gr.members)
    r = check_oracle(m)
    for p in ("bn_s", "bn_b", "bn_m", "bn_v"):
        assert shape(r.model, p) == (6,)


def test_batch_normalization_1d():
    r = check_oracle(sandwich(_bn, spatial=(16,)))
    assert shape(r.model, "bn_v") == (6,)


def test_instance_normalization():
    def fn(g, x):
        return g.op("InstanceNormalization", [x, g.w("in_s", 8, lo=0.5, hi=1.5), g.w("in_b", 8, scale=0.1)])

    m = sandwich(fn)
    assert {"in_s[0]", "in_b[0]"} <= set(group_with(spa.analyze(m), "conv0_w[0]").members)
    r = check_oracle(m)
    assert shape(r.model, "in_s") == shape(r.model, "in_b") == (6,)


def _group_norm(num_groups, per_group_params=False, opset=21):
    def fn(g, x):
        n = num_groups if per_group_params else 8
        return g.op("GroupNormalization", [x, g.w("gn_s", n, lo=0.5, hi=1.5), g.w("gn_b", n, scale=0.5)],
                    name="gn", num_groups=num_groups)

    return sandwich(fn, opset=opset)




@pytest.mark.parametrize("num_groups,ratio,kept_groups", [(4, 0.3, 3), (2, 0.5, 1), (8, 0.3, 6)])
def test_group_normalization_prunes_whole_groups(num_groups, ratio, kept_groups):
    # opset 21 (IR 10): scale and bias are per channel. Opset 18's version (per-group scale)
    # is rejected by onnx.checker as deprecated, so SPA cannot load it at all.
    m = _group_norm(num_groups)
    gr = group_with(spa.analyze(m), "gn_s[0]")
    assert gr.prunable and gr.channels == num_groups, gr.reason
    r = check_oracle(m, ratio=ratio)
    per = 8 // num_groups
    assert attr(r.model, "gn", "num_groups") == kept_groups
    assert shape(r.model, "gn_s") == shape(r.model, "gn_b") == (kept_groups * per,)
    removed = np.asarray(dict(((n, a), i) for n, a, i in r.sinks)[("tail_w", 1)])
    assert len(removed) == 8 - kept_groups * per
    assert np.all(np.bincount(removed // per) % per == 0)  # only whole norm groups go


def test_group_normalization_runs_in_onnxruntime():
    """The opset-21 test model itself is valid: onnxruntime runs it."""
    from spa.runtime import run
    from spa.testing.oracle import feeds
    m = _group_norm(4)
    out = run(m, feeds(m))["fc"]
    assert out.shape == (2, 5) and np.all(np.isfinite(out))


def _layer_norm(axis):
    def fn(g, x):
        n = {1: (8, 8, 8), -1: (8,)}[axis]
        return g.op("LayerNormalization", [x, g.w("ln_s", *n, lo=0.5, hi=1.5), g.w("ln_b", *n, scale=0.1)],
                    name="ln", axis=axis)

    return sandwich(fn)


def test_layer_normalization_over_channels_is_approximate():
    m = _layer_norm(1)
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert gr.prunable and gr.kind == "hidden"
    r = spa.prune(m, ratio=0.3, round_to=1)
    assert not r.exact
    assert shape(r.model, "conv0_w")[0] == 6 and shape(r.model, "ln_s")[0] == 6


def test_layer_normalization_over_last_axis_passes_channels():
    m = _layer_norm(-1)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    assert shape(r.model, "conv0_w")[0] == 6
    assert shape(r.model, "ln_s") == (8,)  # normalised over W: untouched


def _lrn_model(w1, w2):
    from onnx import TensorProto, helper, numpy_helper
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["a"], name="c1"), n("LRN", ["a"], ["l"], name="lrn", size=3),
             n("Conv", ["l", "w2"], ["y"], name="c2")]
    g = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 5, 5])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_lrn_prunes_approximately_like_the_model_without_those_channels():
    """LRN mixes neighbouring channels, so zeroing is no oracle: the pruned model must equal
    the same model built with the removed channels deleted."""
    from spa.runtime import run
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((5, 8, 1, 1)).astype(np.float32)
    m = _lrn_model(w1, w2)
    gr = group_with(spa.analyze(m), "w1[0]")
    assert gr.prunable and gr.kind == "hidden"
    r = spa.prune(m, ratio=0.5, round_to=1, criterion="l2")
    removed = next(i for n, a, i in r.sinks if n == "w2" and a == 1)
    keep = np.setdiff1d(np.arange(8), removed)
    x = {"x": rng.standard_normal((2, 4, 5, 5)).astype(np.float32)}
    np.testing.assert_allclose(run(r.model, x)["y"], run(_lrn_model(w1[keep], w2[:, keep]), x)["y"],
                               rtol=1e-5, atol=1e-5)
