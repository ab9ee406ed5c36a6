"""Transformers from the zoo (models/zoo/transformers): BERT, all-MiniLM-L6-v2, ViT, GPT-2,
Llama with grouped-query attention and a Whisper encoder, each exported by both torch
exporters (TorchScript `ts`, opset 17; torch.export `dynamo`, opset 18).

Needs no torch or transformers: the committed files are weightless and get seeded random
weights (spa.testing.zoo). Every model is pruned at input shape batch 1, sequence 7, then run
at batch 2 with sequence 7 and 64.

`python tests/test_transformers.py` prints a summary table (groups, MACs reduction, oracle).
"""

import functools
import os

import numpy as np
import onnx
import pytest

import spa
from spa.io import load as spa_load
from spa.rules.base import Ctx
from spa.runtime import run
from spa.testing import zoo

EXPORTS = list(zoo.exports())
IDS = [f"{name}-{exporter}" for name, exporter, _, _ in EXPORTS]
OK = [e for e in EXPORTS if "error" not in e[3]]
PRUNE_SEQ = 7
RUN_SEQS = (7, 64)
KINDS = {"heads": 0.5, "head_dim": 0.3, "mlp": 0.5, "hidden": 0.0}  # the oracle holds for all but hidden


class Case:
    """One export, with everything the tests compute from it made once, on first use."""

    def __init__(self, name, exporter, info, ex):
        self.name, self.exporter, self.info, self.ex = name, exporter, info, ex
        self.shapes = zoo.shapes(info, 1, PRUNE_SEQ)
        self.seqs = RUN_SEQS if zoo.has_sequence(info) else (None,)  # None: no sequence axis
        self._outputs = {}

    @functools.cached_property
    def model(self):
        return zoo.load(self.name, self.exporter)

    @functools.cached_property
    def analysis(self):
        return spa.analyze(self.model, input_shapes=self.shapes)

    @functools.cached_property
    def pruned(self):
        """spa.prune at ratio 0.3."""
        return spa.prune(self.model, ratio=0.3, input_shapes=self.shapes, criterion="l2")

    @functools.cached_property
    def pruned_kinds(self):
        """spa.prune with KINDS: heads, head_dim and mlp groups only, so the oracle applies."""
        return spa.prune(self.model, kinds=KINDS, input_shapes=self.shapes, criterion="l2")

    @functools.cached_property
    def masked(self):
        return spa.masked(self.model, self.pruned_kinds.sinks)

    def feeds(self, seq):
        return zoo.feeds(self.info, 2, seq or PRUNE_SEQ, seed=3)

    def outputs(self, seq, masked=False):
        """Outputs of the original model, or of its copy masked by the KINDS plan, at batch 2."""
        key = (seq, masked)
        if key not in self._outputs:
            self._outputs[key] = run(self.masked if masked else self.model, self.feeds(seq))
        return self._outputs[key]


_CASES = {}


def get_case(name, exporter):
    if (name, exporter) not in _CASES:
        info = zoo.manifest()["models"][name]
        _CASES[(name, exporter)] = Case(name, exporter, info, info["exports"][exporter])
    return _CASES[(name, exporter)]


@pytest.fixture(scope="module", params=[e[:2] for e in EXPORTS], ids=IDS)
def case(request):
    """Module scope: pytest runs every test of one export before the next, and the models of
    an export (MiniLM's are 90 MB each) are dropped when its tests are done."""
    c = get_case(*request.param)
    if "error" in c.ex:
        pytest.skip(f"torch could not export it: {c.ex['error'].splitlines()[0][:200]}")
    yield c
    _CASES.pop(request.param, None)


# ------------------------------------------------------------------ the zoo itself


def test_zoo_file_is_weightless_and_fills_to_a_valid_model(case):
    path = os.path.join(zoo.TRANSFORMERS, case.ex["file"])
    assert zoo.placeholders(onnx.load(path)), "no placeholder: the file was not stripped"
    assert os.path.getsize(path) < 1_000_000
    onnx.checker.check_model(case.model, full_check=True)
    assert [i.name for i in case.model.graph.input] == [i["name"] for i in case.info["inputs"]]
    for seq in case.seqs:
        outs = case.outputs(seq)
        assert list(outs) == [o["name"] for o in case.info["outputs"]]
        for spec, value in zip(case.info["outputs"], outs.values()):
            want = tuple(2 if d == "batch" else seq if d == "sequence" else d for d in spec["shape"])
            assert value.shape == want
            assert np.all(np.isfinite(value))


def test_fill_is_seeded_and_sane():
    name, exporter = min(OK, key=lambda e: e[3]["bytes"])[:2]
    a, b = zoo.load(name, exporter, seed=0), zoo.load(name, exporter, seed=0)
    c = zoo.load(name, exporter, seed=1)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()
    for t in a.graph.initializer:
        v = onnx.numpy_helper.to_array(t)
        if v.dtype == np.float32 and v.ndim == 1 and v.size > 64:
            assert 0.5 <= v.min() and v.max() <= 1.5


# ------------------------------------------------------------------ analysis


def test_analyze_finds_one_head_group_per_layer(case):
    """Channels of a head group: the heads, or with grouped-query attention the KV groups."""
    cfg = case.info["config"]
    expected = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    heads = [g for g in case.analysis.groups if g.kind == "heads"]
    assert [g.channels for g in heads] == [expected] * cfg["num_hidden_layers"], \
        [(g.id, g.channels, g.members[:4]) for g in heads]


def test_analyze_finds_head_dim_slices(case):
    # Q.K^T and probs.V each contract a head_dim that every head of the block shares
    dims = [g for g in case.analysis.groups if g.kind == "head_dim"]
    assert dims and all(g.prunable for g in dims)


def test_head_and_mlp_groups_are_prunable(case):
    cfg = case.info["config"]
    groups = case.analysis.groups
    heads = [g for g in groups if g.kind == "heads"]
    mlp = [g for g in groups if g.kind == "mlp" and g.channels == cfg["intermediate_size"]]
    assert len(mlp) == cfg["num_hidden_layers"], [(g.id, g.kind, g.channels, g.prunable, g.reason) for g in groups]
    blocked = [(g.id, g.kind, g.channels, g.reason) for g in heads + mlp if not g.prunable]
    assert heads and not blocked


def test_analyze_finds_the_hidden_size(case):
    """One hidden group, prunable unless the model's output carries the hidden features
    (all-MiniLM-L6-v2's sentence embedding)."""
    size = case.info["config"]["hidden_size"]
    hidden = [g for g in case.analysis.groups if g.kind == "hidden"]
    assert [g.channels for g in hidden] == [size], [(g.id, g.channels, g.prunable, g.reason[:200]) for g in hidden]
    output_is_hidden = any(o["shape"][-1] == size for o in case.info["outputs"])
    assert hidden[0].prunable != output_is_hidden, hidden[0].reason


# ------------------------------------------------------------------ pruning


def test_ratio_03_prunes_and_runs_at_other_lengths(case, record_property):
    result = case.pruned
    record_property("macs_reduction", round(result.macs_reduction, 4))
    print(f"{case.name}-{case.exporter}: MACs -{result.macs_reduction:.1%}, params -{result.params_reduction:.1%}, "
          f"exact={result.exact}")
    assert result.macs_reduction >= 0.35
    for seq in case.seqs:
        got = run(result.model, case.feeds(seq))
        want = case.outputs(seq)
        assert list(got) == list(want)
        for k in want:
            assert got[k].shape == want[k].shape, (k, seq)
            assert got[k].dtype == want[k].dtype
            assert np.all(np.isfinite(got[k])), (k, seq)


def test_heads_head_dim_and_mlp_match_the_masked_original(case):
    result = case.pruned_kinds
    assert result.exact
    assert result.changes, "nothing was pruned"
    cut = {g.kind for g in case.analysis.groups if g.id in {c.id for c in result.changes}}
    assert {"head_dim", "mlp"} <= cut, cut
    for seq in case.seqs:
        got = run(result.model, case.feeds(seq))
        masked, original = case.outputs(seq, masked=True), case.outputs(seq)
        changed = False
        for k, want in masked.items():
            assert np.all(np.isfinite(want))
            scale = float(np.max(np.abs(want))) or 1.0
            np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{k} at sequence {seq}")
            changed |= not np.allclose(original[k], want, rtol=1e-4, atol=1e-5 * scale)
        assert changed, f"masking changed no output at sequence {seq}: the oracle would pass vacuously"


def test_a_zero_kind_ratio_leaves_that_kind_alone(case):
    hidden = {g.id for g in case.analysis.groups if g.kind == "hidden"}
    assert hidden and not hidden & {c.id for c in case.pruned_kinds.changes}


# ------------------------------------------------------------------ grouped-query attention


def _attention_projections(m, shapes):
    """Per attention block: [(weight name, out dim, heads, head_dim)] for each Reshape that splits a
    projection's output into [.., heads, head_dim], in graph order."""
    loaded = spa_load(m, shapes)
    ctx = Ctx(loaded)
    found = []
    for node in loaded.graph.nodes:
        if node.op != "Reshape":
            continue
        x, y = node.inputs[0], node.outputs[0]
        ys = ctx.shape(y)
        if ys is None or len(ys) != 4 or ys[1] == PRUNE_SEQ and ys[2] == PRUNE_SEQ:
            continue
        src = x.inputs[0] if x.inputs else None
        if src is not None and src.op == "Add":  # bias
            src = next((t.inputs[0] for t in src.inputs if t.inputs and t.inputs[0].op == "MatMul"), None)
        if src is None or src.op != "MatMul":
            continue
        w = src.inputs[1]
        value = ctx.const(w)
        if value is None or value.ndim != 2:
            continue
        found.append((w.name, value.shape[1], ys[2], ys[3]))
    return found


@pytest.mark.parametrize("exporter", [e for n, e, _, ex in EXPORTS if n == "llama"])
@pytest.mark.parametrize("mode", ["ratio", "kinds"])
def test_llama_keeps_grouped_query_attention(exporter, mode):
    c = get_case("llama", exporter)
    if "error" in c.ex:
        pytest.skip(f"torch could not export it: {c.ex['error'].splitlines()[0][:200]}")
    cfg = c.info["config"]
    q_heads, kv_heads, head_dim = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    before = _attention_projections(c.model, c.shapes)
    assert [p[2:] for p in before] == [(q_heads, head_dim), (kv_heads, head_dim), (kv_heads, head_dim)] * \
        cfg["num_hidden_layers"], before
    result = c.pruned if mode == "ratio" else c.pruned_kinds
    after = _attention_projections(result.model, c.shapes)
    assert len(after) == len(before)
    if mode == "kinds":  # half of the 2 KV groups, with their query heads; 0.3 of 2 rounds to none
        assert any(a[1] < b[1] for a, b in zip(after, before)), "no attention projection was pruned"
    for layer in range(cfg["num_hidden_layers"]):
        (_, q_out, q, qd), (_, k_out, k, kd), (_, v_out, v, vd) = after[3 * layer: 3 * layer + 3]
        assert qd == kd <= head_dim and vd <= head_dim, after  # Q and K share head_dim slices; V has its own
        assert (q_out, k_out, v_out) == (q * qd, k * kd, v * vd), after
        assert k == v and k >= 1 and q % k == 0 and q // k == q_heads // kv_heads, after


# ------------------------------------------------------------------ summary


def summary():
    """One line per export: groups (prunable/found per kind), pruning at 0.3, the oracle."""
    import time

    rows = []
    for name, exporter, info, ex in EXPORTS:
        label = f"{name}-{exporter}"
        if "error" in ex:
            rows.append(f"{label:16s} export failed: {ex['error'].splitlines()[0][:120]}")
            continue
        t = time.perf_counter()
        c = get_case(name, exporter)
        groups = c.analysis.groups
        counts = " ".join(f"{k}={sum(g.prunable for g in groups if g.kind == k)}/{sum(g.kind == k for g in groups)}"
                          for k in ("heads", "head_dim", "mlp", "hidden"))
        try:
            status = f"0.3: MACs -{c.pruned.macs_reduction:5.1%} params -{c.pruned.params_reduction:5.1%}"
        except spa.SpaError as exc:
            status = f"0.3: {type(exc).__name__}: {str(exc)[:100]}"
        try:
            test_heads_head_dim_and_mlp_match_the_masked_original(c)
            oracle = f"oracle ok ({len(c.pruned_kinds.changes)} groups cut)"
        except Exception as exc:  # report, do not stop
            oracle = f"oracle FAIL {type(exc).__name__}: {str(exc).strip().splitlines()[0][:100]}"
        rows.append(f"{label:16s} {counts:32s} {status}  {oracle}  ({time.perf_counter() - t:.1f}s)")
        _CASES.pop((name, exporter), None)
    return rows


if __name__ == "__main__":
    for row in summary():
        print(row, flush=True)
