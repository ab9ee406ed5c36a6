"""spa/rules/attention.py: fused attention blocks its channels with a reason; the QAttention
that onnxruntime's dynamic quantizer makes of it says so precisely.

    x [2, 5, 16] -> MatMul Wi -> Attention (Wqkv [32, 96], 2 heads) -> MatMul Wo -> y [2, 5, 4]
    quantized:      MatMul Wi -> DynamicQuantizeLinear -> QAttention (int8 Wqkv) -> MatMul Wo
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.runtime import run
from spa.testing.lookup import group_with
from spa.testing.quant import quantize


def fused():
    n = helper.make_node
    nodes = [n("MatMul", ["x", "Wi"], ["h"], name="fc_in"),
             n("Attention", ["h", "Wqkv", "bqkv"], ["a"], name="attn", domain="com.microsoft", num_heads=2),
             n("MatMul", ["a", "Wo"], ["y"], name="fc_out")]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), k)
             for k, s in (("Wi", (16, 32)), ("Wqkv", (32, 96)), ("bqkv", (96,)), ("Wo", (32, 4)))]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 4])], inits)
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid("com.microsoft", 1)])


def test_fused_attention_names_itself():
    gr = group_with(spa.analyze(fused()), "Wi[1]")
    assert not gr.prunable and "fused attention op Attention 'attn'" in gr.reason


def test_qattention_names_its_packed_int8_weight():
    q = quantize(fused(), fmt="dynamic", op_types_to_quantize=["Attention"])
    assert [n.op_type for n in q.graph.node] == ["MatMul", "DynamicQuantizeLinear", "QAttention", "MatMul"]
    x = np.random.default_rng(1).standard_normal((2, 5, 16)).astype(np.float32)
    assert run(q, {"x": x})["y"].shape == (2, 5, 4)
    a = spa.analyze(q)
    for member in ("Wi[1]", "Wo[0]"):  # QAttention's input and output channels
        gr = group_with(a, member)
        assert not gr.prunable and "no rule" not in gr.reason
        assert "quantized fused attention QAttention 'attn_quant'" in gr.reason and "int8 QKV weight" in gr.reason
    assert not a.blocked_ops
