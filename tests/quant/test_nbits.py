"""MatMulNBits (com.microsoft) from onnxruntime's MatMulNBitsQuantizer: lifted to a blocked
DequantizeLinear -> MatMul on load and lowered back on export (spa/io/nbits.py). N prunes
per channel, K in whole blocks; the pruned model keeps its MatMulNBits nodes, equals the
masked original, and stays within 4-bit quantization noise of the float model pruned the
same way."""

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import spa
from spa.edit import export
from spa.io import load, nbits
from spa.io.external import INLINE_BELOW
from spa.runtime import run
from spa.testing import zoo
from spa.testing.lookup import group_with
from spa.testing.oracle import assert_oracle, feeds
from spa.testing.quant import float_same_way, float_weights, matmul_mlp as mlp, quantize_nbits, with_g_idx

SCHEMES = {"uint4_zero_point": {}, "int4_symmetric": {"symmetric": True}, "uint8_zero_point": {"bits": 8}}
NOISE = 1.0  # pruned vs the float model pruned the same way, in units of the quantization noise (measured 0.7-0.8)


def rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def nbits_nodes(model):
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_unpack_round_trip(bits):
    v = np.random.default_rng(0).integers(0, 1 << bits, (3, 37)).astype(np.uint8)
    packed = nbits.pack(v, bits, 37 * bits // 8 + 1)
    assert packed.dtype == np.uint8 and packed.shape == (3, 37 * bits // 8 + 1)
    np.testing.assert_array_equal(nbits.unpack(packed, bits, 37), v)
    if bits == 4:  # lowest bits first, as MatMulNBits reads them
        assert packed[0, 0] == v[0, 0] | (v[0, 1] << 4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_lift_and_lower_give_back_the_same_model(scheme):
    q = quantize_nbits(mlp(dims=(80, 48, 16)), **SCHEMES[scheme])  # K = 80: a short last block
    m = load(q)
    assert m.lifted and not nbits_nodes(m.proto) and m.runnable is not m.proto  # opset 17: runs the original
    out = export(m, m.graph)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in q.graph.node]
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for t in out.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(t), inits[t.name], err_msg=t.name)
    for a, b in zip(nbits_nodes(out), nbits_nodes(q)):
        assert attrs(a) == attrs(b) and list(a.input) == list(b.input)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mlp_prunes_n_and_k_and_stays_quantized(scheme):
    f = mlp()
    q = quantize_nbits(f, **SCHEMES[scheme])
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.3
    assert_oracle(q, r)
    assert set(float_weights(r.model)) <= set(float_weights(q)), "a float weight was added"
    nodes = nbits_nodes(r.model)
    assert len(nodes) == 3 and not any(n.op_type == "MatMul" for n in r.model.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in r.model.graph.initializer}
    ks, ns = [], []
    for node in nodes:
        a, b = attrs(node), inits[node.input[1]]
        assert b.shape == (a["N"], -(-a["K"] // 32), 32 * a["bits"] // 8) and inits[node.input[2]].size == b.shape[0] * b.shape[1]
        ks.append(a["K"])
        ns.append(a["N"])
    assert ns[0] < 256 and ns[1] < 256 and ns[:2] == ks[1:] and all(k % 32 == 0 for k in ks[1:])  # hidden: whole blocks
    x = feeds(q, batch=64)
    same_way, pruned, original, float_original = (run(m, x) for m in (float_same_way(f, q, r), r.model, q, f))
    for name, want in same_way.items():
        noise = rms(original[name], float_original[name])
        assert rms(pruned[name], want) < NOISE * noise, (name, rms(pruned[name], want), noise)


def test_k_in_blocks_that_do_not_tile_is_blocked():
    """K = 48 in blocks of 32 (the second one short): the 48 hidden units cannot be cut."""
    q = quantize_nbits(mlp(dims=(64, 48, 16)))
    gr = group_with(spa.analyze(q), "fc1_Q4__spa_nbits_w[0]")
    assert not gr.prunable and "blocks of 32 do not tile axis 0 (48)" in gr.reason


def test_weights_stay_as_quantized_where_compensation_folds_into_the_bias():
    q = quantize_nbits(mlp())
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.updates and all(kind == "bias" for kind, _, _ in r.updates)


def test_llama_block_prunes_and_stays_quantized():
    """The zoo's tiny Llama (GQA, TorchScript export, random weights): every MatMul but
    attention's becomes MatMulNBits; heads, MLP and hidden size prune in whole blocks."""
    q = quantize_nbits(zoo.load("llama", "ts"))
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction >= 0.3
    assert set(float_weights(r.model)) <= set(float_weights(q)), "a float weight was added"
    assert len(nbits_nodes(r.model)) == len(nbits_nodes(q))
    # the oracle holds for heads and MLP (pruning the hidden size through RMSNorm is not zeroing)
    r = spa.prune(q, kinds={"heads": 0.5, "mlp": 0.5, "hidden": 0.0}, seed=0)
    assert {g.kind for g in spa.analyze(q).groups if g.id in {c.id for c in r.changes}} == {"heads", "mlp"}
    assert_oracle(q, r)


def test_a_trivial_g_idx_is_lifted_and_written_again_for_the_new_k():
    """g_idx = i // block_size without zero points reads like no g_idx in onnxruntime: it
    is dropped on load and written again, for the pruned K, on export."""
    q = with_g_idx(quantize_nbits(mlp(), symmetric=True))
    m = load(q)
    assert m.lifted and not nbits_nodes(m.proto)
    out = export(m, m.graph)
    assert [list(n.input) for n in nbits_nodes(out)] == [list(n.input) for n in nbits_nodes(q)]
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.3
    assert_oracle(q, r)
    inits = {t.name: numpy_helper.to_array(t) for t in r.model.graph.initializer}
    ks = []
    for node in nbits_nodes(r.model):
        k = attrs(node)["K"]
        ks.append(k)
        np.testing.assert_array_equal(inits[node.input[4]], np.arange(k, dtype=np.int32) // 32)
    assert ks[1] < 256 and ks[2] < 256


def test_a_node_whose_shapes_do_not_fit_is_not_lifted():
    q = quantize_nbits(mlp(dims=(64, 48, 16)))
    node = nbits_nodes(q)[0]
    next(a for a in node.attribute if a.name == "N").i = 40  # B and scales hold 48 rows
    inits = {t.name: t for t in q.graph.initializer}
    why = nbits.why_not(node, inits, {})
    assert why is not None and "does not hold" in why
    assert "MatMulNBits" in [n.op for n in load(q, must_run=False).graph.nodes]  # left as it is, blocking


@pytest.fixture
def external(tmp_path):
    """(model, path): the MLP quantized, saved with every tensor in q.onnx.data; fc1's and
    fc2's B (128 KB, 64 KB) stay in the file on load, the smaller ones are read in."""
    q = quantize_nbits(mlp(dims=(128, 512, 512, 32)))
    path = str(tmp_path / "q.onnx")
    onnx.save(onnx.ModelProto.FromString(q.SerializeToString()), path, save_as_external_data=True,
              location="q.onnx.data", size_threshold=0)  # onnx.save moves the data of the proto it is given
    return q, path


def test_external_weights_are_lifted_and_pruned(external):
    q, path = external
    on_disk = {t.name: t for t in onnx.load(path, load_external_data=False).graph.initializer}
    assert int(np.prod(on_disk["w1_Q4"].dims)) >= INLINE_BELOW  # read through the map, not into the proto
    m = load(path)
    assert m.external and m.lifted and not nbits_nodes(m.proto)
    r = spa.prune(path, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.3 and r.verdict.checker and r.verdict.runs
    assert_oracle(q, r)
    assert len(nbits_nodes(r.model)) == 3 and not any(n.op_type == "MatMul" for n in r.model.graph.node)
    assert set(float_weights(r.model)) <= set(float_weights(q)), "a float weight was added"
    onnx.checker.check_model(r.model, full_check=True)


def test_external_output_keeps_the_packed_weights_in_its_data_file(external, tmp_path):
    """Written with external data: each large pruned B goes back to the data file, which
    holds nothing else (no lifted integers, a byte a value, left behind)."""
    q, path = external
    out = str(tmp_path / "o.onnx")
    r = spa.prune(path, out, ratio=0.3, seed=0, external_data=True)
    assert r.verdict.checker and r.verdict.outputs_match
    written = onnx.load(out, load_external_data=False)
    far = {t.name: t for t in written.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {n.input[1] for n in nbits_nodes(written)} <= set(far)
    held = sum(int(np.prod(t.dims)) * (1 if t.data_type == onnx.TensorProto.UINT8 else 4) for t in far.values())
    assert held <= os.path.getsize(out + ".data") < held + 16 * len(far)  # at most alignment between tensors
    x = feeds(q, batch=4)
    in_memory = run(spa.prune(path, ratio=0.3, seed=0).model, x)
    for name, got in run(out, x).items():
        np.testing.assert_array_equal(got, in_memory[name])
