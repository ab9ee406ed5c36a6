"""`spa bench`, `spa compare` and `spa gate`: parse, call the API, print."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from ..io import parse_input_shapes
from ..measure import bench as bench_mod
from ..measure import compare as compare_mod
from ..measure import explain as explain_mod
from ..measure import gate as gate_mod
from ..report import to_json
from .common import Bar, as_json, batches, command, input_shape, run, samples


@command("spa bench model.onnx model.pruned.onnx --batch 1,8 --threads 4",
         "spa bench model.onnx --device cuda --seconds 10 --json",
         "spa bench --explain model.onnx model.pruned.onnx --batch 8 --threads 1")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(bench_mod.DEVICES),
              help="cuda: CUDA execution provider with IOBinding.")
@click.option("--batch", default="1", show_default=True, metavar="B1,B2,..", help="Batch sizes to time.")
@click.option("--warmup", default=10, show_default=True, type=int, help="Untimed runs per model and batch.")
@click.option("--runs", type=int, help="Timed runs per model and batch (default 50).")
@click.option("--seconds", type=float, help="Instead of --runs: time each model about this long per batch.")
@click.option("--threads", default=0, show_default=True, type=int,
              help="Intra-op threads; 0: onnxruntime's default.")
@click.option("--opt-level", default="all", show_default=True, type=click.Choice(list(bench_mod.OPT_LEVELS)),
              help="onnxruntime graph optimization level.")
@input_shape
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated inputs.")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurement (one child process per model).")
@click.option("--explain", is_flag=True,
              help="For two models (original, pruned): where the time went, per op kind, from onnxruntime's "
                   "profiler (first --batch only).")
@as_json
@run
def bench(models, device, batch, warmup, runs, seconds, threads, opt_level, input_shapes, seed, no_memory,
          explain, as_json):
    """Time MODELS in onnxruntime with identical settings; ratios are against the first."""
    if runs is not None and seconds is not None:
        raise UsageError("give --runs or --seconds, not both")
    settings = bench_mod.BenchSettings(device=device, batches=batches(batch), warmup=warmup,
                                       runs=50 if runs is None else runs, seconds=seconds, threads=threads,
                                       opt_level=opt_level, input_shapes=parse_input_shapes(input_shapes),
                                       seed=seed, memory=not no_memory)
    if explain:
        e = explain_mod.explain(models, settings, runs=20 if runs is None else runs)
        click.echo(to_json(e.to_dict()) if as_json else explain_mod.explain_text(e))
        return
    bar = Bar()
    try:
        result = bench_mod.bench(models, settings, progress=bar)
    finally:
        bar.close()
    click.echo(to_json(result.to_dict()) if as_json else bench_mod.bench_text(result))


@command("spa compare model.onnx model.pruned.onnx --inputs data.npz",
         "spa compare model.onnx model.pruned.onnx --samples 64 --atol 0.5 --rtol 0.1",
         "spa compare model.onnx model.pruned.onnx --save-inputs in.npz --save-outputs out.npz --json")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--inputs", type=click.Path(), help=".npz file or folder of <input>.npy files; default: generated.")
@samples(8)
@input_shape
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated inputs.")
@click.option("--atol", type=float, help="Pass when |pruned - original| <= atol + rtol * |original| everywhere.")
@click.option("--rtol", type=float, help="See --atol (either alone: the other is 0).")
@click.option("--save-inputs", type=click.Path(), help="Write the inputs used (.npz, or a folder ending in /).")
@click.option("--save-outputs", type=click.Path(),
              help="Write both models' outputs as original/<name>, pruned/<name> (.npz or folder/).")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Intra-op threads; 0: onnxruntime's default.")
@as_json
@run
def compare(original, pruned, inputs, samples, input_shapes, seed, atol, rtol, save_inputs, save_outputs, threads,
            as_json):
    """Compare every output of PRUNED with ORIGINAL's on the same inputs. With --atol or
    --rtol, end with PASSED or FAILED (exit 1)."""
    if samples < 1:
        raise UsageError(f"--samples must be positive, got {samples}")
    c = compare_mod.compare(original, pruned, inputs=inputs, batch=samples,
                            input_shapes=parse_input_shapes(input_shapes), seed=seed,
                            save_inputs=save_inputs, save_outputs=save_outputs, atol=atol, rtol=rtol,
                            threads=threads)
    click.echo(to_json(c.to_dict()) if as_json else compare_mod.compare_text(c))
    if c.passed is False:
        sys.exit(1)


@command("spa gate model.onnx model.pruned.onnx --min-macs-reduction 0.3 --min-top1 0.95",
         "spa gate model.onnx model.pruned.onnx --max-latency-ratio 0.7 --batch 8 --junit gate.xml",
         "spa gate model.onnx model.pruned.onnx --config pyproject.toml --json-out gate.json")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--config", type=click.Path(dir_okay=False),
              help="TOML file with a [tool.spa.gate] table (default: ./pyproject.toml if present).")
@click.option("--min-macs-reduction", type=float, help="Fail unless MACs fell by at least this share.")
@click.option("--min-params-reduction", type=float, help="Fail unless parameters fell by at least this share.")
@click.option("--max-latency-ratio", type=float, help="Fail if pruned p50 / original p50 exceeds this.")
@click.option("--batch", type=int, help="Batch for the latency check (default 1).")
@click.option("--device", type=click.Choice(bench_mod.DEVICES), help="Device for the latency check (default cpu).")
@click.option("--runs", type=int, help="Timed runs for the latency check (default 30).")
@click.option("--warmup", type=int, help="Warm-up runs for the latency check (default 5).")
@click.option("--threads", type=int, help="Intra-op threads for the latency check (default: onnxruntime's).")
@click.option("--min-cosine", type=float, help="Fail if any output's cosine similarity is below this.")
@click.option("--min-top1", type=float, help="Fail if any classifier output's top-1 agreement is below this.")
@click.option("--max-file-size", help="Fail if the pruned file is larger (bytes, or e.g. 25MB, 2GiB).")
@click.option("--inputs", type=click.Path(), help="Inputs for fidelity (.npz or .npy folder); default: generated.")
@samples()
@input_shape
@click.option("--seed", type=int, help="Seed of generated inputs (default 0).")
@as_json
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), help="Also write the JSON report here.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@run
def gate(original, pruned, config, as_json, json_path, junit_path, **flags):
    """Check PRUNED against ORIGINAL; exit 0 when every check passes, 1 otherwise."""
    table, base = gate_mod.read_config(config)
    th = gate_mod.thresholds(table, flags, base)
    result = gate_mod.gate(original, pruned, th)
    text = to_json(result.to_dict())
    if json_path:
        gate_mod.write_report(json_path, text + "\n")
    if junit_path:
        gate_mod.write_report(junit_path, gate_mod.junit_xml(result))
    click.echo(text if as_json else gate_mod.gate_text(result))
    sys.exit(0 if result.passed else 1)


COMMANDS = (bench, compare, gate)
