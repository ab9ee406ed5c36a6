"""Models SPA does not prune: control flow (If, Loop, Scan), sequences and optionals. They
are analysed and reported, never crashed on; the channels they touch are blocked with a
reason, and the rest of the model still prunes. Quantised models (QDQ, QOperator,
dynamic) were here too until issue #19: they prune now, from the command line as well."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.testing.graphs import Graph
from spa.testing.oracle import assert_oracle
from spa.cli import main

OPSET = 17


def model(nodes, inits, inputs, outputs, name="m"):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def qdq():
    """x -> Q/DQ -> Conv(DQ(int8 w), float bias) -> Relu -> Q/DQ -> Conv(DQ(int8 w)) -> y"""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
    x = "xd"
    for i, (cin, cout) in enumerate(((3, 8), (8, 8))):
        inits += [numpy_helper.from_array(rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8), f"w{i}q"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}q", "s", "z"], [f"w{i}"]),
                  helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1])]
        x = f"c{i}"
        if i == 0:
            nodes += [helper.make_node("Relu", [x], ["r"]), helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
                      helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"])]
            x = "rd"
    return model(nodes, inits, [f32("x", [1, 3, 8, 8])], [f32(x, [1, 8, 8, 8])])


def qoperator():
    """x -> QuantizeLinear -> QLinearConv -> QLinearConv -> DequantizeLinear -> y"""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z"),
             numpy_helper.from_array(np.float32(0.01), "ws"), numpy_helper.from_array(np.int8(0), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q0"])]
    for i, (cin, cout) in enumerate(((3, 8), (8, 8))):
        inits += [numpy_helper.from_array(rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8), f"w{i}"),
                  numpy_helper.from_array(rng.integers(-50, 50, cout).astype(np.int32), f"b{i}")]
        nodes.append(helper.make_node("QLinearConv", [f"q{i}", "s", "z", f"w{i}", "ws", "wz", "s", "z", f"b{i}"],
                                      [f"q{i + 1}"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"]))
    return model(nodes, inits, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 8, 8, 8])])


def dynamic():
    """x -> DynamicQuantizeLinear -> MatMulInteger(uint8 w) -> Cast -> Mul(scales) -> y:
    the pattern of onnxruntime's dynamic quantisation (as in ddddocr's common_old.onnx)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(0, 255, (16, 8)).astype(np.uint8), "w"),
             numpy_helper.from_array(np.uint8(128), "wz"),
             numpy_helper.from_array(np.float32(0.01), "ws")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    return model(nodes, inits, [f32("x", [4, 16])], [f32("y", [4, 8])])


def float_then(tail):
    """A prunable float Conv-BN-Relu-Conv stem, then `tail(graph, x)` produces the output."""
    b = Graph(cin=3, spatial=(8, 8))
    x = b.cbr("input", 16)
    x = b.conv_to(x, 8)
    out = tail(b, x)
    return b.image_model([out], "mixed")


def branch(name, outer):
    out = f"{name}_out"
    return helper.make_graph([helper.make_node(name, [outer], [out])], f"{name}_branch", [],
                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def if_tail(b, x):
    """If on a constant condition; both branches read the outer tensor x."""
    cond = b.const("cond", np.array(True))
    return b.layer("If", [cond], b.ch[x], then_branch=branch("Relu", x), else_branch=branch("Sigmoid", x))


def loop_tail(b, x):
    """Loop twice; the body adds the outer tensor x to its loop-carried state."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", x], ["s_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)])
    trips, cond = b.const("trips", np.array(2, np.int64)), b.const("cond", np.array(True))
    start = b.relu(x)
    return b.layer("Loop", [trips, cond, start], b.ch[x], body=body)


def scan_tail(b, x):
    """Scan over the batch axis of x; the body applies Relu to each slice."""
    body = helper.make_graph([helper.make_node("Relu", ["sx"], ["sy"])], "body",
                             [helper.make_tensor_value_info("sx", TensorProto.FLOAT, None)],
                             [helper.make_tensor_value_info("sy", TensorProto.FLOAT, None)])
    return b.layer("Scan", [x], body=body, num_scan_inputs=1)


def sequence_tail(b, x):
    """x enters a sequence and comes back out: SequenceConstruct -> SequenceAt(0)."""
    seq = b.layer("SequenceConstruct", [x])
    return b.layer("SequenceAt", [seq, b.const("pos", np.array(0, np.int64))], b.ch[x])


def optional_tail(b, x):
    """x wrapped in an optional and unwrapped: Optional -> OptionalGetElement."""
    return b.layer("OptionalGetElement", [b.layer("Optional", [x])], b.ch[x])


@pytest.mark.parametrize("build", [qdq, qoperator], ids=["qdq", "qoperator"])
def test_quantised_models_prune_from_the_command_line(tmp_path, build):
    path = tmp_path / "q.onnx"
    onnx.save(build(), path)
    res = CliRunner().invoke(main, ["analyze", str(path)])
    assert res.exit_code == 0 and "ops without a rule" not in res.output, res.output
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3"])
    assert res.exit_code == 0, res.output
    pruned = onnx.load(tmp_path / "q.pruned.onnx")
    assert sorted(n.op_type for n in pruned.graph.node) == sorted(n.op_type for n in build().graph.node)


def test_dynamic_quantisation_is_analysed_and_its_output_group_kept(tmp_path):
    """The dynamic MatMulInteger model's groups end at its graph input and output."""
    path = tmp_path / "q.onnx"
    onnx.save(dynamic(), path)
    res = CliRunner().invoke(main, ["analyze", str(path)])
    assert res.exit_code == 0 and "ops without a rule" not in res.output, res.output
    res = CliRunner().invoke(main, ["prune", str(path), "--ratio", "0.3"])
    assert res.exit_code == 4 and "no prunable channel group" in res.output and "graph input" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "q.pruned.onnx").exists()


def test_qdq_weights_are_prunable():
    an = spa.analyze(qdq())
    assert [g.members for g in an.prunable] == [("w0q[0]", "w0[0]", "b0[0]", "w1q[1]", "w1[1]")]


def _conv_weights(m):
    return {t.name: tuple(t.dims) for t in m.graph.initializer if t.name.startswith("conv_w")}


@pytest.mark.parametrize("tail,op", [(if_tail, "If"), (loop_tail, "Loop"),
                                     (scan_tail, "Scan"), (sequence_tail, "SequenceConstruct"),
                                     (optional_tail, "Optional")],
                         ids=["if", "loop", "scan", "sequence", "optional"])
def test_channels_a_blocked_op_touches_stay_and_the_rest_prunes(tail, op):
    m = float_then(tail)
    an = spa.analyze(m)
    touched = [g for g in an.groups if "conv_w_1[0]" in g.members]
    assert touched and not touched[0].prunable and f"op {op}" in touched[0].reason
    assert an.prunable, "the float stem should stay prunable"
    result = spa.prune(m, ratio=0.5, criterion="random", seed=3)
    before, after = _conv_weights(m), _conv_weights(result.model)
    assert after["conv_w_1"][0] == before["conv_w_1"][0]  # the channels the op reads are kept
    assert after["conv_w_0"][0] < before["conv_w_0"][0]  # the stem lost channels
    assert_oracle(m, result)


def test_branches_reading_outer_tensors_block_their_channels():
    """Both branches convolve a main-graph activation with a main-graph weight: the
    activation's channels are blocked (by If), so nothing in this model is prunable."""
    b = Graph(cin=3, spatial=(8, 8))
    x = b.cbr("input", 16)
    w = b.const("outer_w", b.randn(8, 16, 1, 1))
    then = helper.make_graph([helper.make_node("Conv", [x, w], ["t_out"])], "then", [],
                             [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Conv", [x, w], ["e_out"], strides=[1, 1])], "else", [],
                              [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    y = b.layer("If", [b.const("cond", np.array(False))], 8, then_branch=then, else_branch=other)
    m = b.image_model([b.head(y)], "outer_weight")
    stem = [g for g in spa.analyze(m).groups if "conv_w_0[0]" in g.members]
    assert stem and not stem[0].prunable and "no rule for op If" in stem[0].reason
    with pytest.raises(spa.errors.NothingToPrune):
        spa.prune(m, ratio=0.3)
