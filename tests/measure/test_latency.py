"""--target-latency: the latency model's mapping and arithmetic, the plan's pricing, and the
prune's report and checks. Structure only: the measured figures live in tools/ scripts."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import spa
from spa.cli import main
from spa.edit import global_plan, local_plan
from spa.edit.plan import CostModel, MacsModel
from spa.errors import TargetMissed, UsageError
from spa.graph import couple
from spa.io import load
from spa.measure.bench import BenchSettings, DeviceError, check_device
from spa.measure.latency import _node_of, calibrated, latency_model
from spa.measure.explain import issue_line
from spa.measure.target import CORRECTIONS, SLOPE, Attempt, LatencyReport, _choose, _miss_text, _next_target
from spa.testing.nets import ALL

QUICK = BenchSettings(batches=(2,), warmup=1, runs=3, threads=1, memory=False)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("latency") / "mobilenetv2.onnx")
    onnx.save(ALL["mobilenetv2"](), path)
    return path, couple(load(path))


class _Node:
    def __init__(self, name):
        self.name = name


def test_kernels_map_to_nodes_by_name():
    nodes = {n: _Node(n) for n in ("/a/Conv", "/attn/MatMul", "/pooler/Gemm")}
    producer = {"/a/Relu_output_0": _Node("/a/Relu")}
    assert _node_of("/a/Conv", nodes, producer).name == "/a/Conv"
    assert _node_of("/a/Relu_output_0_nchwc", nodes, producer).name == "/a/Relu"  # NCHWc: its output tensor
    assert _node_of("/attn/MatMul/MatMulScaleFusion/", nodes, producer).name == "/attn/MatMul"  # fused prefix
    assert _node_of("fused /pooler/Gemm", nodes, producer).name == "/pooler/Gemm"
    assert _node_of("BiasGelu_token_3", nodes, producer) is None


def test_latency_model_terms_cover_the_profile(net):
    path, c = net
    lat = latency_model(path, c.cg, QUICK)
    spaces = set(c.cg.g.nodes)
    assert lat.terms and all(ms > 0 and set(f) <= spaces for ms, f in lat.terms)
    assert sum(ms for ms, _ in lat.terms) == pytest.approx(lat.kernel_ms)
    assert lat.wall_ms >= lat.kernel_ms - 1e-9 or lat.fixed_ms == 0
    assert lat.mapped > 0.9  # nearly every kernel is found by name
    convs = [n for n, _, _ in c.cg.flows if n.op == "Conv"]
    y = convs[1].outputs[0].name  # a Conv's kernel scales with its output's (and input's) channels
    assert any((y, 1) in f for _, f in lat.terms)
    assert set(lat.blocks) <= spaces


def test_a_probe_fits_the_share_of_time_that_does_not_scale(net):
    path, c = net
    lat = latency_model(path, c.cg, QUICK)
    groups = [g for g in c.groups if g.prunable]
    probe = local_plan(groups, {g.id: np.arange(g.channels, dtype=float) for g in groups}, 0.5, 8)
    total = sum(ms for ms, _ in lat.terms) + lat.fixed_ms

    def predicted(m):  # the latency ratio m predicts for the probe's plan
        return 1 - CostModel(c.cg, groups, m.terms, m.fixed_ms, m.blocks).of_plan(probe)

    ratio = (1 + predicted(lat)) / 2  # the probe measured slower than the model predicted
    fitted = calibrated(lat, c.cg, groups, probe, ratio)
    assert sum(ms for ms, _ in fitted.terms) + fitted.fixed_ms == pytest.approx(total)  # the original's time kept
    assert fitted.fixed_ms > lat.fixed_ms and predicted(fitted) == pytest.approx(ratio)
    shares = [a / b for (a, _), (b, _) in zip(fitted.terms, lat.terms)]
    assert max(shares) == pytest.approx(min(shares))  # one share for all: the order of a plan is unchanged
    as_fast = calibrated(lat, c.cg, groups, probe, predicted(lat) / 2)  # faster than its work: stays proportional
    assert as_fast.terms == lat.terms and as_fast.fixed_ms == lat.fixed_ms


def test_cost_model_counts_whole_blocks(net):
    _, c = net
    gr = max((g for g in c.groups if g.prunable), key=lambda g: g.channels)
    space = next(iter(gr.spaces))
    blocked = CostModel(c.cg, [gr], [(10.0, (space,))], blocks={space: 8})
    plain = CostModel(c.cg, [gr], [(10.0, (space,))])
    n = c.cg.g.nodes[space]["size"]
    assert n % 8 == 0
    assert blocked.remove(gr.id, np.arange(3), commit=False) == 0.0  # inside one block: no time saved
    assert plain.remove(gr.id, np.arange(3), commit=False) > 0.0
    assert blocked.remove(gr.id, np.arange(8), commit=False) == pytest.approx(8 / n)


def test_of_plan_is_the_sum_of_its_steps(net):
    _, c = net
    groups = [g for g in c.groups if g.prunable][:3]
    plan = {g.id: np.arange(g.channels // 2) for g in groups}
    macs = MacsModel(c.cg, groups)
    whole = macs.of_plan(plan)
    for gid, chans in plan.items():
        macs.remove(gid, chans)
    assert whole == pytest.approx(macs.reduction())
    assert macs.of_plan({}) == 0.0


def test_a_cost_plan_removes_where_time_is_saved(net):
    _, c = net
    a, b = [g for g in c.groups if g.prunable and g.channels >= 16][:2]
    scores = {a.id: np.ones(a.channels), b.id: np.ones(b.channels)}  # equally important
    sa, sb = next(iter(a.spaces)), next(iter(b.spaces))
    terms = [(1.0, (sa,)), (9.0, (sb,))]  # but b's channels hold 9x the time
    plan = global_plan(c.cg, c.groups, scores, 1, target_macs=0.18, cost=(terms, 0.0, {}))
    assert b.id in plan and a.id not in plan
    assert CostModel(c.cg, [a, b], terms).of_plan(plan) >= 0.18


def test_corrections_move_toward_the_target():
    first = Attempt(0.5, 0.5, 0.6, 0.5)  # measured slower than predicted: plan for less
    assert _next_target(0.5, [first]) < 0.5
    second = Attempt(0.42, 0.42, 0.48, 0.4)
    nxt = _next_target(0.5, [first, second])  # between the attempts on either side of the target
    assert 0.42 < nxt < 0.5 and nxt == pytest.approx(0.42 + 0.08 * 0.02 / 0.12)
    # two timings that differ by noise alone: the step stays within SLOPE of the model's
    a, b = Attempt(0.7, 0.688, 0.7032, 0.5), Attempt(0.685, 0.667, 0.7028, 0.49)
    nxt = _next_target(0.7, [a, b])
    assert 0.667 - 0.0028 * SLOPE <= nxt < 0.667  # a secant through them would plan for 0.52
    assert _choose(0.5, [first, second, Attempt(0.45, 0.45, 0.505, 0.45)]) == 2  # within NOISE: least pruned
    assert _choose(0.5, [first, second, Attempt(0.45, 0.45, 0.495, 0.45)]) == 2
    assert _choose(0.5, [first, Attempt(0.45, 0.45, 0.512, 0.45)]) == 1  # else within 3% over it
    assert _choose(0.5, [first, Attempt(0.45, 0.45, 0.58, 0.45)]) == 1  # none in bounds: the fastest


def test_prune_to_a_latency(net, tmp_path):
    path, _ = net
    out = str(tmp_path / "fast.onnx")
    r = spa.prune(path, out, target_latency=0.7, batch=2, threads=1, criterion="l2")
    lat = r.latency
    assert r.verdict.checker and r.verdict.outputs_match and r.macs_reduction > 0
    assert 1 <= len(lat.attempts) <= CORRECTIONS + 1 and 0 <= lat.chosen < len(lat.attempts)
    first = lat.attempts[0]
    assert first.planned == 0.7 and 0 < first.predicted < 1  # (how close depends on the profiled times)
    assert lat.measured == pytest.approx(lat.pruned_ms / lat.original_ms, rel=0.2)  # paired runs vs p50s
    assert lat.attempts[lat.chosen].macs == pytest.approx(1 - r.macs_reduction, abs=1e-6)
    assert "measured" in lat.summary() and "predicted" in lat.summary()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["latency"]["target"] == 0.7 and len(d["latency"]["attempts"]) == len(lat.attempts)
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert '"target_latency": 0.7' in "".join(meta.values())


def test_target_latency_refuses_other_goals(net):
    path, _ = net
    with pytest.raises(UsageError, match="--target-latency cannot be combined"):
        spa.prune(path, None, target_latency=0.5, ratio=0.3)
    with pytest.raises(UsageError, match="between 0 and 1"):
        spa.prune(path, None, target_latency=1.5)
    with pytest.raises(UsageError, match="--batch"):
        spa.prune(path, None, target_latency=0.5, batch=0)


def test_cli_target_latency(net, tmp_path):
    path, _ = net
    out = str(tmp_path / "cli.onnx")
    r = CliRunner().invoke(main, ["prune", path, out, "--target-latency", "0.8", "--batch", "2", "--threads", "1",
                                  "--criterion", "l2", "-q"])
    assert r.exit_code == 0, r.output
    assert "latency: x" in r.output and "target x0.8" in r.output


def test_an_unreachable_target_writes_nothing(net, tmp_path):
    path, _ = net
    out = tmp_path / "missed.onnx"
    r = CliRunner().invoke(main, ["prune", path, str(out), "--target-latency", "0.05", "--max-ratio", "0.3",
                                  "--batch", "2", "--threads", "1", "--criterion", "l2", "-q"])
    assert r.exit_code == TargetMissed.exit_code, r.output
    line = r.output.strip()
    assert "\n" not in line and "out of reach" in line and "nothing was written" in line and "--max-ratio 0.3" in line
    assert not out.exists()


def test_issue_line_names_a_launch_bound_run():
    assert "launch-bound" in issue_line("before", 1.9, 2.0)
    assert "launch-bound" not in issue_line("before", 0.5, 9.6)
    text = _miss_text(LatencyReport(0.5, "cuda", 8, 1, 2.19, 1.89, (Attempt(0.05, 0.1, 0.861, 0.056),), 0, 1.0,
                                    1.9, 2.0), 0.9)
    assert "launch-bound" in text and "x0.87 or more" in text


def test_target_latency_on_a_missing_gpu_fails_before_any_work(net, tmp_path):
    path, _ = net
    try:
        check_device(BenchSettings(device="cuda"))
    except DeviceError:
        pass
    else:
        pytest.skip("CUDA works here")
    out = tmp_path / "cuda.onnx"
    r = CliRunner().invoke(main, ["prune", path, str(out), "--target-latency", "0.5", "--device", "cuda"])
    assert r.exit_code == 2 and "--device cuda" in r.output and "spa: score" not in r.output
    assert not out.exists()
    r = CliRunner().invoke(main, ["bench", "--explain", path, path, "--device", "cuda"])
    assert r.exit_code == 2 and "--device cuda" in r.output
