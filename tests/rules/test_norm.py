"""spa/rules/norm.py: BatchNormalization, InstanceNormalization, GroupNormalization,
LayerNormalization."""

import numpy as np
import pytest

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import attr, group_with, input_value, node, producer, shape
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


def _lowered_group_norm(num_groups, runtime_shape, twice=False):
    """GroupNorm as exporters lower it (twice: two norms sharing the ones/zeros constants):

        x [N,8,8,8] -> Reshape [0,G,-1] -> InstanceNorm(ones[G], zeros[G]) -> Reshape to
        Shape(x) (runtime_shape) or [0,8,8,8] -> Mul w[8,1,1] -> Add b[8,1,1]
    """
    def norm(g, x, k):
        if k == 0:
            g.init("ones", np.ones(num_groups, np.float32))
            g.init("zeros", np.zeros(num_groups, np.float32))
        t = g.op("Reshape", [x, g.ints(f"split{k}_shape", [0, num_groups, -1])], name=f"split{k}")
        t = g.op("InstanceNormalization", [t, "ones", "zeros"], name=f"in{k}")
        target = g.op("Shape", [x]) if runtime_shape else g.ints(f"merge{k}_shape", [0, 8, 8, 8])
        t = g.op("Reshape", [t, target], name=f"merge{k}")
        t = g.op("Mul", [t, g.w(f"gn_s{k}", 8, 1, 1, lo=0.5, hi=1.5)])
        return g.op("Add", [t, g.w(f"gn_b{k}", 8, 1, 1, scale=0.5)])

    def fn(g, x):
        x = norm(g, x, 0)
        if twice:
            x = g.conv(g.op("Relu", [x]), 8, 8, name="mid")
            x = norm(g, x, 1)
        return x

    return sandwich(fn)


@pytest.mark.parametrize("runtime_shape", [False, True])
@pytest.mark.parametrize("num_groups,kept_groups", [(4, 3), (8, 6)])
def test_group_norm_lowered_to_instance_norm_prunes_whole_groups(num_groups, kept_groups, runtime_shape):
    m = _lowered_group_norm(num_groups, runtime_shape)
    gr = group_with(spa.analyze(m), "gn_s0[0]")
    assert gr.prunable and gr.channels == num_groups, gr.reason
    r = check_oracle(m, ratio=0.3)
    per = 8 // num_groups
    assert shape(r.model, "gn_s0") == (kept_groups * per, 1, 1)
    removed = np.asarray(dict(((n, a), i) for n, a, i in r.sinks)[("tail_w", 1)])
    assert np.all(np.bincount(removed // per) % per == 0)  # only whole norm groups go
    if not runtime_shape:  # load folds Shape(x) here: the batch follows the input alone
        assert input_value(r.model, "merge0", 1)[1] == kept_groups * per
    assert input_value(r.model, "split0", 1)[1] == kept_groups


def test_lowered_group_norm_with_a_target_read_at_run_time():
    """The batch comes from a second input (a U-Net's timestep), so Shape(x) stays a run-time
    value: the merging Reshape follows x and keeps its Shape target.

        input -> conv0 -> Add(Unsqueeze(t)) = x -> Reshape [0,4,-1] -> InstanceNorm -> Reshape Shape(x) -> tail
    """
    g = Graph(0)
    x = g.op("Add", [g.conv("input", 3, 8, name="conv0"), g.op("Unsqueeze", ["t", g.ints("axes", [1, 2, 3])])])
    t = g.op("Reshape", [x, g.ints("split_shape", [0, 4, -1])], name="split0")
    t = g.op("InstanceNormalization", [t, g.init("ones", np.ones(4, np.float32)),
                                       g.init("zeros", np.zeros(4, np.float32))], name="in0")
    t = g.op("Reshape", [t, g.op("Shape", [x])], name="merge0")
    m = g.model({"input": ["N", 3, 8, 8], "t": ["M"]}, [g.conv(t, 8, 6, name="tail")])
    gr = group_with(spa.analyze(m), "tail_w[1]")
    assert gr.prunable and gr.channels == 4, gr.reason
    r = check_oracle(m, ratio=0.3)
    assert producer(r.model, node(r.model, "merge0").input[1]).op_type == "Shape"
    assert input_value(r.model, "split0", 1)[1] == 3 and shape(r.model, "tail_w")[1] == 6


def test_lowered_group_norms_sharing_ones_and_zeros_stay_apart():
    """Exporters share the ones/zeros of every norm: that must not tie the two norms' groups."""
    m = _lowered_group_norm(4, True, twice=True)
    an = spa.analyze(m)
    first, second = group_with(an, "gn_s0[0]"), group_with(an, "gn_s1[0]")
    assert first.id != second.id and first.prunable and second.prunable
    r = check_oracle(m, ratio=0.3)
    assert {first.id, second.id} <= {c.id for c in r.changes}


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
