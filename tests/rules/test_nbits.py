"""spa/rules/nbits.py: a MatMulNBits node that load could not lift (spa/io/nbits.py)
blocks the channels it touches, and analyze says why, not just "no rule"."""

import onnx
import pytest
from onnx import helper

import spa
from spa.io import load
from spa.runtime import run
from spa.testing.lookup import group_with
from spa.testing.oracle import feeds
from spa.testing.quant import matmul_mlp, quantize_nbits, with_float_zero_points, with_g_idx

# x -> fc0 (64 -> 96) -> Relu -> fc1 (96 -> 32): the 96 hidden units are the one group
# that could prune; each variant leaves both MatMulNBits nodes as they are.
VARIANTS = {
    "2-bit": (lambda f: quantize_nbits(f, bits=2), "2-bit weights have no ONNX integer type"),
    "float zero points": (lambda f: with_float_zero_points(quantize_nbits(f)), "float zero points are not supported"),
    "act-order g_idx": (lambda f: with_g_idx(quantize_nbits(f, symmetric=True), shuffled=True),
                        "its g_idx (act-order) is not i // block_size"),
    "g_idx with zero points": (lambda f: with_g_idx(quantize_nbits(f)),
                               "g_idx with uint8 zero points (onnxruntime's CPU kernel then reads every zero point as 8"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_node_that_is_not_lifted_names_its_reason(variant):
    make, why = VARIANTS[variant]
    q = make(matmul_mlp(dims=(64, 96, 32)))
    run(q, feeds(q))  # onnxruntime runs each variant
    assert [n.op for n in load(q).graph.nodes].count("MatMulNBits") == 2
    gr = group_with(spa.analyze(q), "b0[0]")
    assert not gr.prunable and "no rule" not in gr.reason
    assert f"MatMulNBits 'fc0_Q{2 if variant == '2-bit' else 4}': {why}" in gr.reason


def test_a_prepacked_b_names_its_reason():
    q = quantize_nbits(matmul_mlp(dims=(64, 96, 32)))
    node = next(n for n in q.graph.node if n.name == "fc1_Q4")
    node.attribute.append(helper.make_attribute("weight_prepacked", 1))
    gr = group_with(spa.analyze(q), "b0[0]")
    assert not gr.prunable and "MatMulNBits 'fc1_Q4': its B is prepacked for one execution provider" in gr.reason


def test_blocked_nodes_count_their_macs():
    q = quantize_nbits(matmul_mlp(dims=(64, 96, 32)), bits=2)
    assert spa.analyze(q).stats.macs == 64 * 96 + 96 * 32  # batch 1
