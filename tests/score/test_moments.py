"""Data-free statistics (spa.moments, spa.layout_stats, spa.correlation) against the
same statistics measured in onnxruntime on inputs that meet their assumptions."""

import numpy as np
import onnx
from onnx import TensorProto, helper as h, numpy_helper as nh

from spa.graph import build
from spa.io import load
from spa.score.moments import Moments


def _model(nodes, inputs, outputs, init, opset=17):
    arrays = [nh.from_array(np.asarray(v, np.int64 if np.asarray(v).dtype.kind in "iu" else np.float32), k)
              for k, v in init.items()]
    graph = h.make_graph(nodes, "m", inputs, outputs, arrays)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _measure(model, names, feeds):
    """Run the model with extra outputs; {name: value}."""
    import onnxruntime as ort
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, feeds)))


def test_statistics_follow_tokens_class_token_and_position_embedding():
    # input [N,4,2,2] -> Conv 1x1 -> BN (its running statistics measured) -> Reshape [N,4,4] ->
    # Transpose [N,4 tokens,4 channels] -> Concat(class token, tokens) -> Add position embedding.
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4, 1, 1))
    x = rng.standard_normal((4096, 4, 2, 2)).astype(np.float32)
    a = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4)
    cls, pos = rng.normal(0, 1, (1, 1, 4)), rng.normal(0, 1, (1, 5, 4))
    pos[0, 0] = pos[0, 1:].mean(0)  # position independent of content: the class token's position is average
    init = dict(w=w, g=gamma, b=beta, m=a.mean((0, 2, 3)), v=a.var((0, 2, 3)), shape=np.array([0, 4, -1]),
                cls=cls, pos=pos, ex=np.array([4096, 1, 4]))
    nodes = [h.make_node("Conv", ["input", "w"], ["a"]),
             h.make_node("BatchNormalization", ["a", "g", "b", "m", "v"], ["bn"]),
             h.make_node("Reshape", ["bn", "shape"], ["r"]),
             h.make_node("Transpose", ["r"], ["tok"], perm=[0, 2, 1]),
             h.make_node("Expand", ["cls", "ex"], ["c"]),
             h.make_node("Concat", ["c", "tok"], ["cat"], axis=1),
             h.make_node("Add", ["cat", "pos"], ["output"])]
    model = _model(nodes, [h.make_tensor_value_info("input", TensorProto.FLOAT, [4096, 4, 2, 2])],
                   [h.make_tensor_value_info("output", TensorProto.FLOAT, [4096, 5, 4])], init)
    cg = build(load(model))
    stats = Moments(cg)
    y = _measure(model, ["output"], {"input": x})["output"].reshape(-1, 4)
    axis, mean, var = stats.map["output"]
    assert axis == 2
    np.testing.assert_allclose(mean, y.mean(0), atol=0.05)
    np.testing.assert_allclose(var, y.var(0), rtol=0.05)


def test_gelu_written_with_erf_is_pushed_as_one_function():
    # x * 0.5 * (1 + erf(x / sqrt 2)): the two factors are not independent.
    init = dict(s=np.array(np.sqrt(2.0)), one=np.array(1.0), half=np.array(0.5),
                w=np.diag([0.5, 1.0, 2.0]), bias=np.array([-1.0, 0.0, 1.0]))
    nodes = [h.make_node("MatMul", ["input", "w"], ["mm"]),
             h.make_node("Add", ["bias", "mm"], ["x"]),
             h.make_node("Div", ["x", "s"], ["d"]),
             h.make_node("Erf", ["d"], ["e"]),
             h.make_node("Add", ["e", "one"], ["e1"]),
             h.make_node("Mul", ["x", "e1"], ["p"]),
             h.make_node("Mul", ["p", "half"], ["output"])]
    model = _model(nodes, [h.make_tensor_value_info("input", TensorProto.FLOAT, [200000, 3])],
                   [h.make_tensor_value_info("output", TensorProto.FLOAT, [200000, 3])], init)
    stats = Moments(build(load(model)))
    x = np.random.default_rng(1).standard_normal((200000, 3)).astype(np.float32)
    y = _measure(model, ["output"], {"input": x})["output"]
    _, mean, var = stats.map["output"]
    np.testing.assert_allclose(mean, y.mean(0), atol=0.01)
    np.testing.assert_allclose(var, y.var(0), rtol=0.03)


def test_correlations_follow_the_weights_through_an_activation_and_a_scale():
    # input [N,6] ~ N(0, I) -> BatchNorm (statistics N(0, 1): anchors the input's) -> MatMul W
    # (6->8) -> Relu -> Mul 2 -> output: the correlation of the output channels, propagated
    # from W, against the measured one.
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 8))
    w[:, 4:] = w[:, :4] + 0.3 * rng.standard_normal((6, 4))  # pairs of correlated channels
    nodes = [h.make_node("BatchNormalization", ["input", "g", "b", "m", "v"], ["x"], epsilon=0.0),
             h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
             h.make_node("Mul", ["r", "two"], ["output"])]
    model = _model(nodes, [h.make_tensor_value_info("input", TensorProto.FLOAT, [100000, 6])],
                   [h.make_tensor_value_info("output", TensorProto.FLOAT, [100000, 8])], dict(w=w, two=np.array(2.0), g=np.ones(6), b=np.zeros(6), m=np.zeros(6), v=np.ones(6)))
    cg = build(load(model))
    stats = Moments(cg)
    est = stats.cov(cg.ctx.tensors["output"], -1, 8)
    y = _measure(model, ["output"], {"input": rng.standard_normal((100000, 6)).astype(np.float32)})["output"]
    meas = np.cov(y.T)
    iu = np.triu_indices(8, 1)
    d_est, d_meas = np.sqrt(np.diag(est)), np.sqrt(np.diag(meas))
    r_est, r_meas = (est / np.outer(d_est, d_est))[iu], (meas / np.outer(d_meas, d_meas))[iu]
    np.testing.assert_allclose(np.diag(est), np.diag(meas), rtol=0.05)
    assert np.corrcoef(r_est, r_meas)[0, 1] > 0.95
    assert np.abs(r_est - r_meas).max() < 0.25
