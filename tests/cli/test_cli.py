"""The CLI through click's CliRunner: tables, JSON, and one-line errors for bad input."""

import json
import os

import onnx
import pytest
from click.testing import CliRunner

from spa.testing.nets import ALL
from spa.cli import main


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(ALL["resnet"](), path)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_prune_writes_default_output_and_table(model_path):
    before = model_path.read_bytes()
    res = invoke("prune", model_path, "--ratio", "0.3")
    assert res.exit_code == 0, res.output
    out = model_path.with_name("resnet.pruned.onnx")
    assert out.exists() and "MACs" in res.output and "verified" in res.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert model_path.read_bytes() == before


def test_prune_json(model_path, tmp_path):
    res = invoke("prune", model_path, tmp_path / "o.onnx", "--ratio", "0.3", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["macs_reduction"] > 0.3 and data["after"]["macs"] < data["before"]["macs"]


def test_analyze_json_schema(model_path):
    res = invoke("analyze", model_path, "--json")
    assert res.exit_code == 0, res.output
    groups = json.loads(res.stdout)["groups"]
    assert groups
    for g in groups:
        assert {"id", "channels", "members", "macs_share", "prunable", "reason"} <= set(g)
    assert any(not g["prunable"] and g["reason"] for g in groups)


def test_analyze_table_lists_reasons(model_path):
    res = invoke("analyze", model_path)
    assert res.exit_code == 0 and "graph input" in res.output and "prunable" in res.output


def _bad_files(tmp_path, model_path):
    data = model_path.read_bytes()
    (tmp_path / "text.onnx").write_text("this is not a model")
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    return ["text.onnx", "trunc.onnx", "empty.onnx", "missing.onnx"]


@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_bad_input_gives_one_line_error(tmp_path, model_path, command):
    for name in _bad_files(tmp_path, model_path):
        args = [command, tmp_path / name] + (["--ratio", "0.3"] if command == "prune" else [])
        res = invoke(*args)
        assert res.exit_code == 3, (name, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and "Traceback" not in res.output
        assert not os.path.exists(tmp_path / name.replace(".onnx", ".pruned.onnx"))


@pytest.mark.parametrize("args", [["--ratio", "1.5"], ["--ratio", "0"], ["--ratio", "-0.1"], [],
                                  ["--ratio", "0.3", "--target-macs", "0.3"], ["--ratio", "0.3", "--round-to", "0"],
                                  ["--ratio", "0.3", "--input-shape", "nope:1,2"],
                                  ["--target-macs", "0.3", "--max-ratio", "0"]])
def test_bad_arguments_exit_2_and_write_nothing(model_path, args):
    res = invoke("prune", model_path, *args)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not model_path.with_name("resnet.pruned.onnx").exists()


def test_existing_output_needs_force(model_path, tmp_path):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    assert invoke("prune", model_path, out, "--ratio", "0.3").exit_code == 2
    assert out.read_bytes() == b"keep me"
    assert invoke("prune", model_path, out, "--ratio", "0.3", "--force").exit_code == 0
    onnx.checker.check_model(onnx.load(out))


def test_output_never_overwrites_input(model_path):
    before = model_path.read_bytes()
    res = invoke("prune", model_path, model_path, "--ratio", "0.3", "--force")
    assert res.exit_code == 2 and model_path.read_bytes() == before


def test_nothing_prunable_exit_4(tmp_path):
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    res = invoke("prune", path, "--ratio", "0.3")
    assert res.exit_code == 4 and "no prunable" in res.output


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "bad.onnx").write_text("nope")
    res = invoke("analyze", tmp_path / "bad.onnx", "--debug")
    assert res.exit_code == 3 and "Traceback" in res.output


def test_input_shape_sets_macs_and_keeps_dynamic_dims(model_path, tmp_path):
    out = tmp_path / "o.onnx"
    one = json.loads(invoke("prune", model_path, out, "--ratio", "0.3", "--json").stdout)
    res = invoke("prune", model_path, out, "--ratio", "0.3", "--json", "--force", "--input-shape", "input:2,3,16,16")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["before"]["macs"] == 2 * one["before"]["macs"]
    dim0 = onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "N"


def _subcommands():
    return sorted(main.commands)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_subcommand_has_help_with_an_example(flag):
    top = invoke(flag)
    assert top.exit_code == 0 and "Examples:" in top.output
    names = _subcommands()
    assert {"analyze", "prune", "bench", "compare", "gate"} <= set(names)
    for name in names:
        res = invoke(name, flag)
        assert res.exit_code == 0, (name, res.output)
        example = res.output.split("Examples:")[-1]
        assert "Examples:" in res.output and f"spa {name} " in example, (name, res.output)
        assert "-h, --help" in res.output


def test_options_agree_across_subcommands():
    """--json is a flag everywhere, --input-shape means the same everywhere, generated inputs are --samples."""
    for name in _subcommands():
        params = {p.name: p for p in main.commands[name].params}
        assert params["as_json"].is_flag and params["as_json"].opts == ["--json"], name
        assert params["input_shapes"].opts == ["--input-shape"] and params["input_shapes"].multiple, name
        if name in ("compare", "gate"):
            assert "samples" in params and "batch" not in params or name == "gate"


def test_provenance_in_metadata_props_and_analyze(model_path, tmp_path):
    out = tmp_path / "o.onnx"
    res = invoke("prune", model_path, out, "--ratio", "0.3", "--criterion", "l2", "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["spa.prune.version"] and props["spa.prune.source"] == "resnet.onnx"
    assert props["spa.prune.criterion"] == "l2"
    settings = json.loads(props["spa.prune.settings"])
    assert settings["ratio"] == 0.3 and settings["round_to"] == "auto"
    assert json.loads(props["spa.prune.before"]) == {"params": r["before"]["params"], "macs": r["before"]["macs"]}
    assert json.loads(props["spa.prune.after"]) == {"params": r["after"]["params"], "macs": r["after"]["macs"]}
    an = invoke("analyze", out)
    assert an.exit_code == 0 and "pruned by SPA" in an.stdout and "criterion l2" in an.stdout, an.output
    assert json.loads(invoke("analyze", out, "--json").stdout)["provenance"]["criterion"] == "l2"
    assert "pruned by SPA" not in invoke("analyze", model_path).stdout


def test_exclude_that_matches_nothing_is_an_error(model_path):
    for command in (["analyze", model_path], ["prune", model_path, "--ratio", "0.3"]):
        res = invoke(*command, "--exclude", "conv_typo*")
        assert res.exit_code == 2 and "'conv_typo*' matches no node or tensor name" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not model_path.with_name("resnet.pruned.onnx").exists()


def test_analyze_fits_the_terminal_and_names_nodes(tmp_path):
    path = tmp_path / "deep.onnx"
    onnx.save(ALL["resnet"](), path)
    an = json.loads(invoke("analyze", path, "--json").stdout)
    res = CliRunner().invoke(main, ["analyze", str(path)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines[1:]) <= 80, res.stdout  # the first line is the model's path
    assert "conv channels" in res.stdout and "why: 'input' is a graph input" in res.stdout
    layers = {name for g in an["groups"] for name in g["layers"]}
    assert layers and all(not m.split("[")[0] in res.stdout for g in an["groups"] for m in g["members"]
                          if m.split("[")[0] not in layers)  # tensor ids give way to node names
    verbose = CliRunner().invoke(main, ["analyze", str(path), "-v"], env={"COLUMNS": "80"}).stdout
    assert all(name in verbose for name in layers)


def test_weightless_zoo_model_gets_a_hint():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "models", "zoo", "torchvision", "resnet18_ts.onnx")
    res = invoke("analyze", path)
    assert res.exit_code == 3 and "weightless zoo model" in res.output and "zoo_format.py fill" in res.output
    assert len(res.output.strip().splitlines()) == 1
