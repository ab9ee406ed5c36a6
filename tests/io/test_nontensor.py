"""Sequence, optional and sparse values (the crash classes of onnx's own test models, #25):
loading never assumes a tensor, the command refuses in one line or prunes, and the
tensors around a non-tensor value still prune."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.cli import main
from spa.score.layout import const_stats

OPSET = 17


def model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def weight(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def sequence_only():
    """onnx's test_sequence_model1: x, y, z -> SequenceEmpty/Insert x3 -> SequenceAt -> out.
    Loading ran it in onnxruntime for the shapes of the sequences and read `.shape` of a list."""
    pos = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("pos", 1), ("pos_at", -2))]
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=TensorProto.FLOAT),
             helper.make_node("SequenceInsert", ["s0", "x"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "y"], ["s2"]),
             helper.make_node("SequenceInsert", ["s2", "z", "pos"], ["s3"]),
             helper.make_node("SequenceAt", ["s3", "pos_at"], ["out"])]
    return model(nodes, [f32("x", [2, 3, 4]), f32("y", [1, 3, 4]), f32("z", [3, 3, 4])], [f32("out", [3, 3, 4])], pos)


def sequence_input():
    """seq (a sequence input) -> ConcatFromSequence -> Conv -> Relu -> Conv -> y"""
    nodes = [helper.make_node("ConcatFromSequence", ["seq"], ["x"], axis=1),
             helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["y"], pads=[1, 1, 1, 1])]
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [1, 3, 8, 8])
    return model(nodes, [seq], [f32("y", [1, 4, 8, 8])], [weight("w0", 8, 6, 3, 3), weight("w1", 4, 8, 3, 3, seed=1)])


def sequence_output():
    """x -> Conv -> Relu -> Conv -> h -> SequenceConstruct(h, h) -> seq (a sequence output)"""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("SequenceConstruct", ["h", "h"], ["seq"])]
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [1, 4, 8, 8])
    return model(nodes, [f32("x", [1, 3, 8, 8])], [seq], [weight("w0", 8, 3, 3, 3), weight("w1", 4, 8, 3, 3, seed=1)])


def sparse_constant():
    """Constant(sparse_value) as the first conv's weight: x -> Conv(ws) -> Relu -> Conv -> y"""
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(8 * 3 * 3 * 3).astype(np.float32)
    idx = np.flatnonzero(dense > 0).astype(np.int64)
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(dense[idx], "ws"),
                                       numpy_helper.from_array(idx, "ws_idx"), [8, 3, 3, 3])
    nodes = [helper.make_node("Constant", [], ["ws"], sparse_value=sparse),
             helper.make_node("Conv", ["x", "ws"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["y"], pads=[1, 1, 1, 1])]
    return model(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])], [weight("w1", 4, 8, 3, 3)])


def cli(args):
    res = CliRunner().invoke(main, args)
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    return res


def _one_line_error(res):
    lines = [ln for ln in res.output.splitlines() if ln.startswith("spa: error")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("build,code,words", [(sequence_only, 4, "no prunable channel group"),
                                              (sequence_input, 3, "input 'seq' is a sequence value"),
                                              (sparse_constant, 4, "no prunable channel group")],
                         ids=["sequence_only", "sequence_input", "sparse_constant"])
def test_non_tensor_models_are_refused_in_one_line(tmp_path, build, code, words):
    path = tmp_path / "m.onnx"
    onnx.save(build(), path)
    assert cli(["analyze", str(path)]).exit_code == 0
    res = cli(["prune", str(path), str(tmp_path / "out.onnx"), "--ratio", "0.3"])
    assert res.exit_code == code and words in _one_line_error(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_sequence_input_blocks_only_what_it_touches():
    an = spa.analyze(sequence_input())
    inner = [g for g in an.groups if "w0[0]" in g.members]
    assert inner and inner[0].prunable  # the channels between the two convs


def test_a_sequence_output_keeps_its_type_and_the_stem_prunes(tmp_path):
    m = sequence_output()
    an = spa.analyze(m)
    (last,) = [g for g in an.groups if "w1[0]" in g.members]
    assert not last.prunable and "SequenceConstruct" in last.reason
    result = spa.prune(m, tmp_path / "out.onnx", ratio=0.5)
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    assert out.graph.output[0].type.WhichOneof("value") == "sequence_type"
    assert {t.name: tuple(t.dims) for t in out.graph.initializer}["w0"] == (4, 3, 3, 3)
    x = {"x": np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    (seq,) = spa.runtime.session(tmp_path / "out.onnx").run(None, x)
    assert len(seq) == 2 and seq[0].shape == (1, 4, 8, 8)
    assert result.changes


def test_constants_with_inf_have_no_moments():
    """An attention mask's -inf: no mean or variance, and no RuntimeWarning on stderr."""
    mask = np.triu(np.full((4, 4), -np.inf, np.float32), 1)
    with np.errstate(all="raise"):
        assert const_stats(mask, 1, 2, 4) is None
    assert np.allclose(const_stats(np.eye(4, dtype=np.float32), 1, 2, 4)[0], 0.25)
