"""spa/io/fold.py: shape arithmetic that does not follow a dynamic dim is folded at load;
dynamic dims and shapes that may depend on data stay computed at run time."""

import numpy as np
from onnx import TensorProto

import spa
from spa.io import load
from spa.runtime import run
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, input_value, runtime_input
from spa.testing.oracle import check_oracle, feeds


def _ops(model):
    return [n.op for n in load(model).graph.nodes]


def test_attention_scale_from_a_shape_becomes_a_constant():
    """x * (1 / sqrt(Shape(x)[1])): the legacy exporter's attention scale, folded to 1/sqrt(8)."""
    def fn(g, x):
        d = g.op("Cast", [g.op("Gather", [g.op("Shape", [x]), g.ints("i", 1)], axis=0)], to=TensorProto.FLOAT)
        s = g.op("Div", [g.floats("one", 1.0), g.op("Sqrt", [d])])
        return g.op("Mul", [x, s], name="scale")

    m = sandwich(fn)
    assert "Shape" not in _ops(m)
    r = check_oracle(m)
    np.testing.assert_allclose(runtime_input(r.model, "scale", 1), 1 / np.sqrt(8), rtol=1e-6)


def test_shape_of_a_data_dependent_tensor_is_not_folded():
    """Reshape(x, Shape(NonZero(...))-derived target): NonZero's output size depends on data."""
    def fn(g, x):
        nz = g.op("NonZero", [g.op("Greater", [x, g.floats("z", 0.0)])])  # [4, K]
        k = g.op("Gather", [g.op("Shape", [nz]), g.ints("one", [1])], axis=0)
        mask = g.op("Cast", [g.op("Greater", [k, g.ints("zero", [0])])], to=TensorProto.FLOAT)
        return g.op("Mul", [x, mask], name="gate")

    m = sandwich(fn)
    assert "NonZero" in _ops(m) and "Shape" in _ops(m)
    check_oracle(m)


def test_dynamic_batch_stays_dynamic_after_folding():
    """Reshape(x, Concat(Shape(x)[0], [8, 64])) becomes [-1, 8, 64], rewritten to [-1, 6, 64]:
    the pruned model still runs at any batch."""
    def fn(g, x):
        n = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [x]), g.ints("i", 0)], axis=0), g.ints("a", [0])])
        y = g.op("Reshape", [x, g.op("Concat", [n, g.ints("rest", [8, 64])], axis=0)], name="rs")
        return g.op("Reshape", [y, g.ints("back", [-1, 8, 8, 8])], name="rs2")

    m = sandwich(fn)
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable
    r = check_oracle(m)
    np.testing.assert_array_equal(input_value(r.model, "rs", 1), [-1, 6, 64])
    for batch in (1, 3):
        assert run(r.model, feeds(m, batch))["fc"].shape == (batch, 5)


def test_folding_beside_a_tensor_of_unknown_shape():
    """x[N,5] -> Shape -> s;  x -> custom Foo -> u;  Reshape(u, s) -> r -> Relu -> y.
    onnxruntime cannot run Foo, so r keeps no shape; folding Shape(x) must not read one
    (onnx's *_expanded loss tests crashed here: TypeError)."""
    from onnx import helper
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Foo", ["x"], ["u"], domain="custom"),
             helper.make_node("Reshape", ["u", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)],
                          ir_version=8)
    loaded = load(m)
    assert "r" not in loaded.shapes and "Shape" not in [n.op for n in loaded.graph.nodes]
    assert not spa.analyze(m).groups
