"""allow_interface_change: groups that reach graph inputs and outputs (a KV cache) are
blocked by default, with analyze naming the option; with it they are pruned, verified
(inputs fed and outputs compared at the kept elements), described in a JSON sidecar, and
the masked-equivalence oracle holds on the kept elements."""

import json

import numpy as np
from click.testing import CliRunner
import onnx
import pytest

import spa
from spa.cli import main
from spa.edit import adapt_feeds, adapt_outputs
from spa.errors import NothingToPrune
from spa.runtime import run
from spa.testing.graphs import Graph, sandwich
from spa.testing.lookup import group_with
from spa.testing.oracle import assert_oracle, feeds

B, S, P, E, H, D = 2, 3, 5, 16, 4, 4  # batch, new tokens, cached tokens, embedding, heads, head_dim


def kv_block():
    """One attention block with a KV cache:

        x [B,S,E] -> MatMul Wq/Wk/Wv -> Reshape [0,0,H,D] -> Transpose -> q, k, v [B,H,S,D]
        past_k, past_v [B,H,P,D] -> Concat(axis 2) with k, v -> present_k, present_v (outputs)
        softmax(q.k^T / 2) . v -> Transpose -> Reshape [0,0,E] -> MatMul Wo -> y [B,S,E]
    """
    g = Graph(seed=5)

    def heads(name):
        t = g.op("MatMul", ["x", g.w(f"W{name}", E, E)], name=f"proj_{name}")
        t = g.op("Reshape", [t, g.ints(f"split_{name}", [0, 0, H, D])])
        return g.op("Transpose", [t], perm=[0, 2, 1, 3])

    q = heads("q")
    k = g.op("Concat", ["past_k", heads("k")], axis=2, name="cat_k")
    v = g.op("Concat", ["past_v", heads("v")], axis=2, name="cat_v")
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    att = g.op("Softmax", [g.op("Mul", [g.op("MatMul", [q, kt]), g.floats("scale", 0.5)])], axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints("merge", [0, 0, E])])
    y = g.op("MatMul", [o, g.w("Wo", E, E)], name="proj_o")
    model = g.model({"x": [B, S, E], "past_k": [B, H, P, D], "past_v": [B, H, P, D]}, [y, k, v])
    for out, name in zip(model.graph.output, ("y", "present_k", "present_v")):
        _rename(model, out.name, name)
    return model


def _rename(model, old, new):
    for n in model.graph.node:
        n.output[:] = [new if o == old else o for o in n.output]
        n.input[:] = [new if i == old else i for i in n.input]
    for vi in model.graph.output:
        if vi.name == old:
            vi.name = new


def test_blocked_by_default_and_analyze_names_the_option():
    m = kv_block()
    an = spa.analyze(m)
    heads = group_with(an, "Wo[0]")
    assert not heads.prunable and "--allow-interface-change" in heads.reason
    assert any("--allow-interface-change" in n for n in an.notes), an.notes
    with pytest.raises(NothingToPrune, match="--allow-interface-change"):  # x and y are the interface too
        spa.prune(m, ratio=0.5)
    r = spa.prune(m, ratio=0.5, allow_interface_change=["x", "y"])  # the cache reaches an input and an output
    assert any("--allow-interface-change" in n for n in r.notes), r.notes


def test_prune_does_not_name_the_option_for_a_class_axis():
    """Only cache-like groups (through an input to an output) earn the note in prune's result."""
    m = sandwich()
    assert any("--allow-interface-change" in n for n in spa.analyze(m).notes)
    assert not any("--allow-interface-change" in n for n in spa.prune(m, ratio=0.3).notes)


def test_kv_cache_heads_pruned_with_the_option(tmp_path):
    m = kv_block()
    out = tmp_path / "small.onnx"
    r = spa.prune(m, str(out), ratio=0.5, round_to=1, allow_interface_change=["past_*", "present_*"])
    assert r.verdict.outputs_match and r.macs_reduction > 0.3
    changed = {c.name: c for c in r.interface}
    assert set(changed) == {"past_k", "past_v", "present_k", "present_v"}
    assert changed["past_k"].old_shape == (B, H, P, D) and changed["past_k"].new_shape[1] < H
    side = json.loads((tmp_path / "small.interface.json").read_text())
    assert [i["name"] for i in side["inputs"]] == ["past_k", "past_v"]
    assert side["outputs"][0]["new_shape"] == list(changed["present_k"].new_shape)
    declared = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                for vi in list(r.model.graph.input) + list(r.model.graph.output)}
    assert declared["past_v"] == list(changed["past_v"].new_shape) and declared["y"] == [B, S, E]
    assert_oracle(m, r, scaled=True)


def test_every_interface_with_true():
    """True lets the embedding axis of x and y shrink too; the oracle compares y's kept columns."""
    m = kv_block()
    r = spa.prune(m, ratio=0.3, round_to=1, allow_interface_change=True)
    assert {"x", "y", "past_k", "present_v"} <= {c.name for c in r.interface}
    assert_oracle(m, r, scaled=True)


def test_adapt_slices_the_kept_elements():
    m = kv_block()
    r = spa.prune(m, ratio=0.5, round_to=1, allow_interface_change=True, verify=False)
    x = feeds(m)
    fed = adapt_feeds(r.interface, x)
    kept = next(c for c in r.interface if c.name == "past_k").kept
    np.testing.assert_array_equal(fed["past_k"], x["past_k"][:, list(kept[1])][..., list(kept[3])])
    got = run(r.model, fed)
    want = adapt_outputs(r.interface, run(m, x))
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}


def test_cli_flag_writes_the_sidecar(tmp_path):
    src, out = tmp_path / "kv.onnx", tmp_path / "kv_small.onnx"
    onnx.save(kv_block(), src)
    res = CliRunner().invoke(main, ["prune", str(src), str(out), "--ratio", "0.5", "--allow-interface-change", "-q"])
    assert res.exit_code == 0, res.output
    assert "interface: input past_k" in res.output
    assert json.loads((tmp_path / "kv_small.interface.json").read_text())["outputs"]


def test_cli_patterns_limit_what_changes(tmp_path):
    src, out = tmp_path / "kv.onnx", tmp_path / "kv_small.onnx"
    onnx.save(kv_block(), src)
    res = CliRunner().invoke(main, ["prune", str(src), str(out), "--ratio", "0.5", "-q",
                                    "--change-interface", "past_*", "--change-interface", "present_*"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "kv_small.interface.json").read_text())
    assert {i["name"] for i in side["inputs"] + side["outputs"]} == {"past_k", "past_v", "present_k", "present_v"}
