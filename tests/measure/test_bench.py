"""spa.bench: timings, ratios, settings errors, the CLI, and the NCHWc channel check.

No test asserts a speed: timings are only checked to exist and be consistent.
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import spa
from spa.testing.graphs import Graph
from tests.io.test_sizes import strided
from spa.testing.nets import ALL
from spa.measure.bench import (BenchSettings, DeviceError, bench, bench_text, block_warnings, cpu_block_size, cpu_info,
                       input_specs, make_session, paired_ratio)
from spa.cli import main
from spa.errors import ModelError, UsageError

QUICK = BenchSettings(batches=(1, 2), warmup=1, runs=3, threads=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    orig = str(d / "resnet.onnx")
    onnx.save(ALL["resnet"](), orig)
    pruned = str(d / "resnet.pruned.onnx")
    spa.prune(orig, pruned, ratio=0.5)
    return orig, pruned


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bench_two_models_ratios(pair):
    r = bench(pair, QUICK)
    assert r.models == pair and len(r.timings) == 4
    for t in r.timings:
        assert t.runs == 3 and 0 < t.min_ms <= t.p50_ms <= t.p90_ms <= t.p99_ms
        assert t.throughput > 0 and t.input_shapes["input"][0] == t.batch
        assert t.memory_bytes is None or t.memory_bytes >= 0
    ratios = r.ratios()
    assert [(x["model"], x["batch"]) for x in ratios] == [(pair[1], 1), (pair[1], 2)]
    for x in ratios:
        t, b = r.timing(1, x["batch"]), r.timing(0, x["batch"])
        assert x["p50"] == pytest.approx(t.p50_ms / b.p50_ms)
        assert x["paired"] == t.paired and t.paired > 0 and b.paired is None
    d = json.loads(json.dumps(r.to_dict()))
    assert d["settings"]["batches"] == [1, 2] and d["settings"]["threads"] == 1
    assert {"onnxruntime", "providers", "cpu", "cpu_flags", "nchwc_block"} <= set(d["environment"])
    assert d["environment"]["providers"] == ["CPUExecutionProvider"]
    assert "p50 ratio" in bench_text(r)


def test_paired_ratio_pairs_runs_made_together():
    base, other = [10.0, 20.0, 10.0], [5.0, 10.0, 30.0]  # a slow round halves nothing
    assert paired_ratio(base, other) == 0.5
    assert paired_ratio(base, other[:2]) is None  # unequal counts: no pairs


def test_bench_seconds_and_modelproto(pair):
    proto = onnx.load(pair[0])
    r = bench([proto], BenchSettings(warmup=0, seconds=0.05, memory=False))
    assert r.models == ("<model 1>",) and r.timings[0].runs >= 1 and r.timings[0].memory_bytes is None


def test_memory_is_measured_on_linux(pair):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc")
    r = bench(pair[:1], BenchSettings(warmup=1, runs=1))
    assert isinstance(r.timings[0].memory_bytes, int)


@pytest.mark.parametrize("settings", [
    BenchSettings(device="tpu"), BenchSettings(opt_level="max"), BenchSettings(batches=(0,)),
    BenchSettings(runs=0), BenchSettings(seconds=-1.0), BenchSettings(threads=-2)])
def test_bad_settings(pair, settings):
    with pytest.raises(UsageError):
        bench(pair[:1], settings)


def test_fixed_batch_and_missing_model(tmp_path, pair):
    m = ALL["conv_bn_relu"]()
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    sess = make_session(m, BenchSettings())
    assert input_specs(sess, 1)["input"][0] == (1, 3, 16, 16)
    with pytest.raises(UsageError, match="fixed batch"):
        input_specs(sess, 2)
    with pytest.raises(UsageError, match="unknown input"):
        input_specs(sess, 1, {"image": (1, 3, 8, 8)})
    assert input_specs(sess, 1, {"input": (5, 3, 8, 8)})["input"][0] == (1, 3, 8, 8)
    with pytest.raises(ModelError):
        bench([str(tmp_path / "nope.onnx")], QUICK)
    with pytest.raises(UsageError, match="twice"):
        bench([pair[0], pair[0]], QUICK)


def test_cuda_unavailable_is_one_clear_error(pair):
    try:
        make_session(pair[0], BenchSettings(device="cuda"))
    except DeviceError as exc:
        assert "--device cuda" in str(exc) and exc.exit_code == 2
    else:
        pytest.skip("CUDA works here")


# -- NCHWc ------------------------------------------------------------------------------------
def _convs(channels, group_last=1):
    """input(3) -> conv(c0) -> conv(c1) -> ... ; the last conv may be grouped."""
    b = Graph(cin=3)
    x = "input"
    for i, c in enumerate(channels):
        x = b.relu(b.conv_to(x, c, group=group_last if i == len(channels) - 1 else 1))
    return b.image_model([b.head(x)], "convs")


def _seen(warns):
    return [(w.channels, w.side, w.skipped) for w in warns]


def test_block_warnings_rules():
    assert block_warnings(_convs([16, 16]), block=8) == []
    warns = block_warnings(_convs([16, 12, 16]), block=8)
    assert _seen(warns) == [(12, "out", False), (12, "in", False)]  # padded to 16
    assert warns[0].block == 8 and "multiple of 8" in warns[0].message() and "pad it to 16" in warns[0].message()
    assert _seen(block_warnings(_convs([16, 13, 16]), block=8)) == [(13, "out", False), (13, "in", True)]
    assert "skip" in block_warnings(_convs([16, 13, 16]), block=8)[1].message()
    assert block_warnings(_convs([16, 12, 16]), block=4) == []
    assert _seen(block_warnings(_convs([16, 24, 16]), block=16)) == [(24, "out", False), (24, "in", False)]
    # the stem reads 3 < block channels as NCHW: fine; a depthwise conv needs only its channels aligned
    assert block_warnings(_convs([16, 16], group_last=16), block=8) == []
    assert _seen(block_warnings(_convs([12, 12], group_last=12), block=8)) == [(12, "out", False), (12, "out", False)]
    assert _seen(block_warnings(_convs([14, 14], group_last=14), block=8))[1] == (14, "out", True)
    # grouped (not depthwise): channels per group
    assert _seen(block_warnings(_convs([16, 16], group_last=4), block=8)) == [(4, "in", True), (4, "out", True)]
    assert block_warnings(_convs([16, 32], group_last=2), block=8) == []


@pytest.mark.parametrize("channels, group", [
    ([16, 13, 32, 16], 1), ([16, 12, 32, 16], 1), ([16, 10, 16], 1), ([16, 20], 1), ([12, 12], 12),
    ([13, 13], 13), ([16, 16], 4), ([32, 64], 4), ([16, 32], 8)])
def test_block_warnings_match_onnxruntime(tmp_path, channels, group):
    """Convs flagged as skipped are exactly those onnxruntime leaves out of NCHWc on this CPU."""
    block = cpu_block_size()
    if not block:
        pytest.skip("this CPU has no NCHWc kernels")
    m = _convs(channels, group)
    skipped = {w.node for w in block_warnings(m) if w.skipped}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    opt = onnx.load(tmp_path / "opt.onnx")
    blocked = sum(n.op_type == "Conv" and n.domain == "com.microsoft.nchwc" for n in opt.graph.node)
    assert blocked == len(channels) - len(skipped)


def test_cpu_info_and_block_size(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                 "processor\t: 1\nmodel name\t: Test CPU\nflags\t\t: fpu\n")
    name, flags = cpu_info(str(f))
    assert name == "Test CPU" and "avx2" in flags
    assert cpu_block_size(flags) == 8
    assert cpu_block_size({"avx2", "fma", "avx512f"}) == 16
    assert cpu_block_size({"sse4_2"}) is None and cpu_block_size(set()) is None
    assert cpu_info(str(tmp_path / "missing"))[1] == frozenset()


# -- CLI --------------------------------------------------------------------------------------
def test_cli_bench_table_and_json(pair):
    res = invoke("bench", *pair, "--runs", "2", "--warmup", "1", "--batch", "1,2", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert "p50 ratio" in res.output and "resnet.pruned.onnx" in res.output
    res = invoke("bench", pair[0], "--runs", "2", "--warmup", "0", "--json", "--no-memory", "--opt-level", "basic")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["settings"]["opt_level"] == "basic" and d["timings"][0]["memory_bytes"] is None
    assert d["ratios"] == [] and d["environment"]["onnxruntime"] == ort.__version__


@pytest.mark.parametrize("args, code", [
    (["--runs", "2", "--seconds", "1"], 2), (["--batch", "0"], 2), (["--batch", "x"], 2),
    (["--threads", "-1"], 2), (["--input-shape", "input"], 2)])
def test_cli_bench_usage_errors(pair, args, code):
    res = invoke("bench", pair[0], *args)
    assert res.exit_code == code and res.stderr.startswith("spa: error:") and len(res.stderr.splitlines()) == 1


def test_cli_bench_missing_file(tmp_path):
    res = invoke("bench", tmp_path / "missing.onnx")
    assert res.exit_code == 3 and "no such file" in res.stderr


def test_cli_analyze_warns_about_blocks(tmp_path):
    block = cpu_block_size()
    if not block:
        pytest.skip("this CPU has no NCHWc kernels")
    path = tmp_path / "m.onnx"
    onnx.save(_convs([16, block + 4, 16]), path)
    res = invoke("analyze", path, "--json")
    assert res.exit_code == 0
    json.loads(res.stdout)  # warnings stay off stdout
    assert "NCHWc" in res.stderr and f"multiple of {block}" in res.stderr
    good = tmp_path / "g.onnx"
    onnx.save(_convs([16, 2 * block, 16]), good)
    assert "NCHWc" not in invoke("analyze", good).stderr


def test_generated_inputs_are_seeded(pair):
    a = bench(pair[:1], BenchSettings(warmup=0, runs=1, memory=False, seed=3))
    assert a.settings.seed == 3
    sess = make_session(pair[0], BenchSettings())
    from spa.runtime import random_feeds as generate
    x, y = generate(input_specs(sess, 2), 3), generate(input_specs(sess, 2), 3)
    assert np.array_equal(x["input"], y["input"])


def test_dynamic_dims_get_sizes_the_model_runs_at(tmp_path):
    path = str(tmp_path / "strided.onnx")
    onnx.save(strided(4), path)  # a 1x1 image cannot pass its stride-2 stack
    r = bench([path], BenchSettings(batches=(2,), warmup=1, runs=2, threads=1, memory=False))
    assert r.timing(0, 2).input_shapes == {"x": [2, 3, 32, 32]}
    assert "x [1, 3, 32, 32]" in r.environment["sizes"] and r.environment["sizes"] in bench_text(r)
    given = bench([path], BenchSettings(batches=(1,), warmup=1, runs=2, threads=1, memory=False,
                                        input_shapes={"x": (1, 3, 40, 48)}))
    assert given.timing(0, 1).input_shapes == {"x": [1, 3, 40, 48]} and "sizes" not in given.environment
