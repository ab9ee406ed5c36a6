"""The onnx wheel's own test models (#25): `spa analyze` and `spa prune --ratio 0.3` on each
prune validly or refuse in one line; never an internal error, a traceback or a leftover.

`simple`, `pytorch-converted` and `pytorch-operator` (140 models) are analysed and pruned;
the 9 `light` models (`real` points at the same files) are analysed only: pruning them
takes 10 to 90 s each, tools/conformance.py covers that (reports/conformance.md).
"""

import json
import os

import pytest
from click.testing import CliRunner

from spa.cli import main
from spa.testing.conformance import check_output, find_models, flags, listing, wheel_data

SMALL = [(c, *m) for c in ("simple", "pytorch-converted", "pytorch-operator")
         for m in find_models(os.path.join(wheel_data(), c))]
LIGHT = find_models(os.path.join(wheel_data(), "light"))


def _cli(args):
    res = CliRunner().invoke(main, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # an exception the CLI did not turn into an exit code
    return res


def test_the_wheel_corpus_is_there():
    assert len(SMALL) >= 130 and len(LIGHT) == 9


@pytest.mark.parametrize("corpus,name,path,data", SMALL, ids=[f"{c}/{n}" for c, n, _, _ in SMALL])
def test_small_models_prune_or_refuse_in_one_line(tmp_path, corpus, name, path, data):
    before = listing(os.path.dirname(path))
    a = _cli(["analyze", path, "--json"])
    assert not flags("analyze", a.exit_code, a.stdout, a.stderr), a.output
    out = tmp_path / "out.onnx"
    p = _cli(["prune", path, str(out), "--ratio", "0.3", "--json"])
    assert not flags("prune", p.exit_code, p.stdout, p.stderr), p.output
    if p.exit_code == 0:
        nothing = not json.loads(p.stdout)["changes"]
        assert not check_output(path, str(out), data, nothing)
    else:
        assert not os.listdir(tmp_path), f"left behind after exit {p.exit_code}"
    assert listing(os.path.dirname(path)) == before


@pytest.mark.parametrize("name,path,data", LIGHT, ids=[n for n, _, _ in LIGHT])
def test_light_models_are_analysed(name, path, data):
    a = _cli(["analyze", path, "--json"])
    assert a.exit_code == 0 and not flags("analyze", a.exit_code, a.stdout, a.stderr), a.output
    assert json.loads(a.stdout)["groups"]
