"""Verification measures what it promises: fidelity figures computed from both models'
outputs on the same inputs (generated, or the calibration data), carried by the Verdict,
PruneResult.to_dict() and the prune summary."""

import numpy as np
import pytest

import spa
from spa.cli.text import prune_text
from spa.runtime import random_inputs, run
from spa.testing.nets import ALL
from spa.verify import SAMPLES, fidelity


@pytest.fixture(scope="module")
def pruned():
    return ALL["resnet"](), spa.prune(ALL["resnet"](), ratio=0.3, criterion="l2")


def test_verdict_carries_figures_computed_from_both_models(pruned):
    original, r = pruned
    v = r.verdict
    assert v.samples == SAMPLES and v.inputs.startswith("generated")
    (f,) = v.fidelity
    # recompute on the same seeded inputs: the generated batch at the verification input's other dims
    feeds = random_inputs(original, {"input": (SAMPLES, 3, 16, 16)}, 0)
    want, got = run(original.SerializeToString(), feeds), run(r.model.SerializeToString(), feeds)
    (name,) = want
    ref = fidelity(name, want[name], got[name])
    assert f.name == name and f.cosine == pytest.approx(ref.cosine) and f.max_abs == pytest.approx(ref.max_abs)
    assert 0 < f.max_abs and -1 <= f.cosine < 1 and f.top1 is not None  # pruning moved the outputs
    assert v.cosine == f.cosine and v.top1 == f.top1


def test_json_and_summary_show_figures(pruned):
    _, r = pruned
    d = r.to_dict()
    assert d["verdict"]["cosine"] == r.verdict.cosine and d["verdict"]["fidelity"][0]["max_abs"] > 0
    text = prune_text(r)
    assert "unchanged" not in text and f"{r.verdict.cosine:.4f}" in text and "top-1 agreement" in text
    assert "took" in text and "→" in text


def test_calibration_data_is_measured_on():
    model = ALL["resnet"]()
    calib = {"input": np.random.default_rng(1).standard_normal((80, 3, 16, 16)).astype(np.float32)}
    r = spa.prune(model, ratio=0.3, criterion="hessian", calib=calib, recover=False)
    assert r.verdict.samples == 64 and "first 64 of 80" in r.verdict.inputs
    feeds = {"input": calib["input"][:64]}
    want, got = run(model.SerializeToString(), feeds), run(r.model.SerializeToString(), feeds)
    name = next(iter(want))
    assert r.verdict.fidelity[0].cosine == pytest.approx(fidelity(name, want[name], got[name]).cosine)


def test_given_inputs_are_measured_on_cast_and_filtered():
    model = ALL["resnet"]()
    x = np.random.default_rng(2).standard_normal((12, 3, 16, 16))  # float64: cast to the model's float32
    r = spa.prune(model, ratio=0.3, criterion="l2", inputs={"input": x, "labels": np.arange(12)})
    assert r.verdict.samples == 12 and r.verdict.inputs == "given inputs"
    feeds = {"input": x.astype(np.float32)}
    want, got = run(model.SerializeToString(), feeds), run(r.model.SerializeToString(), feeds)
    name = next(iter(want))
    assert r.verdict.fidelity[0].max_abs == pytest.approx(fidelity(name, want[name], got[name]).max_abs)
    with pytest.raises(spa.UsageError, match="no array for input"):
        spa.prune(model, ratio=0.3, criterion="l2", inputs={"other": x})


def test_a_near_zero_original_output_is_noted():
    want = np.full((2, 1, 8, 8), 4e-7, np.float32)  # a detector's map on noise: nothing found
    r = fidelity("map", want, np.zeros_like(want))
    assert r.cosine == 0.0 and "near zero" in r.note and "4.0e-07" in r.note
    assert fidelity("y", np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)).note == ""
