"""Hostile and broken input: each case gets its exit code and a one-line error naming
the file, with no traceback and no hang; nothing is written and the input is untouched."""

import hashlib
import os
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import spa.runtime
from spa.testing import message_lines
from spa.testing.nets import ALL
from spa.cli import main


def snapshot(folder):
    """{relative path: sha256} of every file under folder (links as their target text)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            key = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[key] = "link:" + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as fh:
                    out[key] = hashlib.sha256(fh.read()).hexdigest()
    return out


def refused(path, code, *words, command="prune"):
    """Run `spa <command> path`; check the one-line error, then that nothing changed."""
    folder = os.path.dirname(path)
    before = snapshot(folder)
    args = [command, path] + (["--ratio", "0.3"] if command == "prune" else [])
    t = time.perf_counter()
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert time.perf_counter() - t < 30, "took too long"
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = message_lines(res.output)  # the error, after the lines of the stages that finished
    assert len(lines) == 1, res.output
    assert os.path.basename(path) in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert snapshot(folder) == before, "files changed or were left behind"
    return lines[0]


def save(model, folder, name="m.onnx"):
    path = os.path.join(folder, name)
    onnx.save(model, path)
    return path


def resnet():
    return ALL["resnet"]()


# -- not a model ------------------------------------------------------------------
def test_random_bytes(tmp_path):
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    refused(str(path), 3)


@pytest.mark.parametrize("keep", [0.01, 0.3, 0.6, 0.99])
def test_truncated_protobuf(tmp_path, keep):
    data = resnet().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    refused(str(path), 3)


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)
    refused(str(path), 3, "not a regular file")


# -- invalid graphs -------------------------------------------------------------------
def test_unknown_opset_version(tmp_path):
    m = resnet()
    m.opset_import[0].version = 999
    refused(save(m, tmp_path), 3, "opset 999")


def test_unknown_domain_is_analysed_but_cannot_be_pruned(tmp_path):
    m = resnet()
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    path = save(m, tmp_path)
    res = CliRunner().invoke(main, ["analyze", path])
    assert res.exit_code == 0 and "ops without a rule (they block their channels): Conv x1" in res.output
    refused(path, 3, "onnxruntime cannot run the original model")


def test_cycle(tmp_path):
    m = resnet()
    m.graph.node[0].input[0] = m.graph.node[5].output[0]
    refused(save(m, tmp_path), 3, "invalid ONNX model")


def test_duplicate_names(tmp_path):
    m = resnet()
    m.graph.node[2].output[0] = m.graph.node[1].output[0]
    refused(save(m, tmp_path), 3, "invalid ONNX model")


def test_duplicate_initializer(tmp_path):
    m = resnet()
    m.graph.initializer.append(m.graph.initializer[0])
    refused(save(m, tmp_path), 3, "invalid ONNX model")


def test_dangling_input(tmp_path):
    m = resnet()
    m.graph.node[2].input[0] = "nowhere"
    refused(save(m, tmp_path), 3, "invalid ONNX model")


def test_empty_graph(tmp_path):
    m = resnet()
    del m.graph.node[:]
    refused(save(m, tmp_path), 3, "no nodes")


def test_unknown_data_type(tmp_path):
    m = resnet()
    m.graph.initializer[0].data_type = 55
    refused(save(m, tmp_path), 3, "unknown data type")


def test_name_not_utf8(tmp_path):
    data = resnet().SerializeToString().replace(b"relu_0", b"rel\xff_0")
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    refused(str(path), 3, "UTF-8")


# -- huge declared shapes -----------------------------------------------------------------
def test_huge_input_shape(tmp_path):
    m = resnet()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 10 ** 9
    refused(save(m, tmp_path), 3, "refuses run-time tensors")


def test_huge_initializer_dims_with_little_data(tmp_path):
    m = resnet()
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([10 ** 5, 10 ** 5, 10 ** 5])
    refused(save(m, tmp_path), 3, "conv_w_0")


@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_huge_constant_of_shape(tmp_path, command):
    g = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 4])],
        initializer=[numpy_helper.from_array(np.array([10 ** 5, 10 ** 5, 4], np.int64), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    refused(save(m, tmp_path), 3, "refuses run-time tensors", command=command)


def test_loop_that_never_ends_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(spa.runtime, "RUN_TIMEOUT", 2.0)
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "one"], ["s_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(np.array(10 ** 15, np.int64), "M"),
                     numpy_helper.from_array(np.array(True), "cond")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    refused(save(m, tmp_path), 3, "took over 2 s")


# -- external data ---------------------------------------------------------------------------
def external_model(folder, location="m.data"):
    """resnet with every weight in one external file; returns the model path."""
    path = os.path.join(folder, "m.onnx")
    onnx.save(resnet(), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return path


def set_location(path, location, keep_file=True):
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, path)


def test_missing_external_file(tmp_path):
    path = external_model(str(tmp_path))
    os.unlink(tmp_path / "m.data")
    refused(path, 3, "missing file")


def test_truncated_external_file(tmp_path):
    path = external_model(str(tmp_path))
    data = (tmp_path / "m.data").read_bytes()
    (tmp_path / "m.data").write_bytes(data[: len(data) // 2])
    refused(path, 3, "truncated")


def test_external_length_disagrees_with_dims(tmp_path):
    path = external_model(str(tmp_path))
    m = onnx.load(path, load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "length":
            e.value = "4"
    onnx.save(m, path)
    refused(path, 3, "declares")


@pytest.fixture
def outside(tmp_path):
    """A model folder, and a valid copy of its data file outside that folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = external_model(str(folder))
    (tmp_path / "secret").mkdir()
    os.replace(folder / "m.data", tmp_path / "secret" / "m.data")
    return folder, path, tmp_path / "secret"


def test_location_with_dotdot_is_refused(outside):
    folder, path, secret = outside
    set_location(path, "../secret/m.data")
    refused(path, 3, "outside the model's folder")


def test_absolute_location_is_refused(outside):
    folder, path, secret = outside
    set_location(path, str(secret / "m.data"))
    refused(path, 3, "absolute paths are refused")


def test_symlink_to_outside_file_is_refused(outside):
    folder, path, secret = outside
    os.symlink(secret / "m.data", folder / "m.data")
    refused(path, 3, "outside the model's folder")


def test_symlinked_folder_to_outside_is_refused(outside):
    folder, path, secret = outside
    os.symlink(secret, folder / "sub")
    set_location(path, "sub/m.data")
    refused(path, 3, "outside the model's folder")


def test_symlink_inside_the_folder_is_refused(tmp_path):
    path = external_model(str(tmp_path), "real.data")
    os.symlink(tmp_path / "real.data", tmp_path / "link.data")
    set_location(path, "link.data")
    refused(path, 3, "symbolic link")


def test_external_data_in_a_modelproto_is_refused():
    m = resnet()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="m.data")
    with pytest.raises(spa.errors.ModelError, match="pass the model's path"):
        spa.prune(m, ratio=0.3)
