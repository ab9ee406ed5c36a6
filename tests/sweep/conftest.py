"""Shared sweep fixtures: two small test nets in a folder, and one local sweep over them
(2 models x 2 ratios x 2 criteria) that the other tests compare against."""

import json
import os

import onnx
import pytest
from click.testing import CliRunner

from spa.cli import main
from spa.testing.nets import ALL

FAST = ["--runs", "3", "--warmup", "1"]  # latency is not what these tests check
GRID = ["--ratios", "0.2,0.5", "--criteria", "obspa,l2"]


def invoke(*args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def records(out) -> list:
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    for name in ("resnet", "mobilenetv2"):
        onnx.save(ALL[name](), d / f"{name}.onnx")
    return d


@pytest.fixture(scope="session")
def local_sweep(nets, tmp_path_factory):
    """(the sweep folder, its --json output) of `spa sweep NETS/ --ratios 0.2,0.5 --criteria obspa,l2`."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    res = invoke("sweep", nets, *GRID, *FAST, "--out", out, "--json", "-q")
    return out, json.loads(res.stdout)
