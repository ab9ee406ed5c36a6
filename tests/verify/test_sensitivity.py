"""Measured sensitivity (issue #17): each point of a group's curve is the output error of
the model pruned at that group alone, and a global plan spends its budget where the
measured error per MACs saved is lowest."""

import numpy as np
import onnx
import pytest

import spa
from spa.edit import apply, fold_means, global_plan, keep_map
from spa.graph import couple, oracle_mask, removed_elements
from spa.io import load
from spa.runtime import run
from spa.score import read_calib, score, statistics
from spa.testing import nets
from spa.testing.oracle import assert_oracle, feeds
from spa.verify import Curve, measure_sensitivity
from spa.verify.sensitivity import SAMPLES, Overridable


def _relative_error(want, got):
    return sum(float(np.sum((got[k].astype(np.float64) - v) ** 2)) for k, v in want.items()) / \
        sum(float(np.sum(v.astype(np.float64) ** 2)) for v in want.values())


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2"])
def test_each_point_is_the_error_of_that_prune(name):
    model = nets.ALL[name](0)
    m = load(model)
    c = couple(m, head_dims=False)
    data = read_calib(feeds(model, batch=SAMPLES, seed=3), m.proto)
    stats = statistics(c.cg, "obs", data)
    scores = score(c.cg, c.groups, "obs", stats=stats)
    curves = measure_sensitivity(m.proto, c, scores, stats, data)
    assert set(curves) == set(scores)
    reference = run(model, data)
    shared = Overridable(m.proto, {name for (name, _), a in c.cg.g.nodes(data=True) if a["param"]})
    for gid, curve in list(curves.items())[:3]:
        assert curve.counts[0] == 0 and curve.errors[0] == 0
        assert np.all(np.diff(curve.counts) > 0) and np.all(np.diff(curve.errors) >= 0)
        k = int(curve.counts[2])
        plan = {gid: np.sort(np.argsort(scores[gid], kind="stable")[:k])}
        removed = removed_elements(c.groups, plan)
        edited = c.cg.copy()
        updates = fold_means(edited, stats, removed, keep_map(c.cg, removed))
        assert updates and shared.values(oracle_mask(c, plan), updates) is not None  # a shared session serves it
        pruned = apply(edited, keep_map(c.cg, removed))
        got = _relative_error(reference, run(pruned, data))
        assert got == pytest.approx(curve.errors[2], rel=1e-3, abs=1e-9)


def test_the_plan_removes_where_measured_error_per_macs_is_lowest():
    model = nets.resnet(0)
    m = load(model)
    c = couple(m, head_dims=False)
    scores = score(c.cg, c.groups, "l2")
    first, second = sorted(scores, key=lambda g: -next(gr.macs for gr in c.groups if gr.id == g))[:2]

    def curves(expensive):
        return {gid: Curve(np.array([0, len(sc)]), np.array([0.0, 1.0 if gid == expensive else 1e-6]))
                for gid, sc in scores.items()}
    plan = global_plan(c.cg, c.groups, scores, "auto", target_macs=0.1, curves=curves(second))
    assert first in plan and second not in plan
    plan = global_plan(c.cg, c.groups, scores, "auto", target_macs=0.1, curves=curves(first))
    assert second in plan and first not in plan


def test_prune_reports_the_curves_and_the_oracle_holds():
    model = nets.mobilenetv2(0)
    r = spa.prune(model, target_macs=0.3, criterion="obs", calib=feeds(model, batch=SAMPLES, seed=3),
                  recover=False, sensitivity=True)
    assert r.sensitivity and "sensitivity" in r.timings
    assert all(points[0] == (0, 0.0) and len(points) > 1 for points in r.sensitivity.values())
    assert set(r.sensitivity) == set(r.to_dict()["sensitivity"])
    assert r.macs_reduction == pytest.approx(0.3, abs=0.02)
    assert_oracle(model, r)
    off = spa.prune(model, target_macs=0.3, criterion="obs", calib=feeds(model, batch=SAMPLES, seed=3),
                    recover=False, sensitivity=False)
    assert not off.sensitivity and "sensitivity" not in off.timings


def test_a_model_with_external_data_is_planned_by_scores(tmp_path):
    model = nets.resnet(0)
    calib = feeds(model, batch=SAMPLES, seed=3)
    plain = spa.prune(model, target_macs=0.3, criterion="obs", calib=calib, recover=False, sensitivity=False)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)  # (moves the proto's tensors out too)
    r = spa.prune(str(tmp_path / "m.onnx"), target_macs=0.3, criterion="obs", calib=calib, recover=False)
    assert not r.sensitivity and any("sensitivity skipped" in n for n in r.notes)
    assert r.sinks == plain.sinks
