"""Gaps outside spa/rules/ that the per-rule models run into (load, export, verify)."""

import spa
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with
from spa.testing.oracle import check_oracle


def test_output_declared_less_specific_than_inferred():
    m = sandwich(batch=2)
    d0 = m.graph.output[0].type.tensor_type.shape.dim[0]
    d0.Clear()
    d0.dim_param = "B"
    check_oracle(m)


def test_input_shapes_reach_shape_inference():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) with a symbolic batch made concrete."""
    g = Graph()
    x = g.conv("input", 3, 8, name="conv0", strides=[2, 2])
    n = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [x]), g.ints("zero", 0)], axis=0), g.ints("ax", [0])])
    x = g.op("Reshape", [x, g.op("Concat", [n, g.ints("rest", [-1])], axis=0)])
    m = g.model({"input": ["N", 3, 8, 8]}, [g.gemm(g.op("Relu", [x]), 128, 5, name="fc")])
    assert group_with(spa.analyze(m), "conv0_w[0]").prunable  # -1 resolved with concrete inputs
    a = spa.analyze(m, input_shapes={"input": (2, 3, 8, 8)})
    assert group_with(a, "conv0_w[0]").prunable
    r = spa.prune(m, ratio=0.3, round_to=1, input_shapes={"input": (2, 3, 8, 8)})
    assert [(c.before, c.after) for c in r.changes] == [(8, 6)]
    assert r.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # still dynamic
