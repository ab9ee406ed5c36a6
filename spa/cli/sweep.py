"""`spa sweep`: parse, call spa.sweep, print."""

from __future__ import annotations

import sys

import click

from .. import sweep as sweep_mod
from ..errors import UsageError
from ..report import to_json
from .common import as_json, command, input_shape, quiet, run


def _line(rec, done, total):
    what = (f"top-1 {rec['fidelity']['top1']}, latency x{rec['latency']['ratio']:.3f}" if rec["status"] == "ok"
            else f"error in {rec.get('stage')}: {rec.get('error')}")
    click.echo(f"spa: sweep: {done} of {total} {rec['id']} ({rec['timings']['total_s']:.1f} s) {what}", err=True)


@command("spa sweep model.onnx --ratios 0.1,0.2,0.3,0.4,0.5 --criteria obspa,l2 --out sweep/",
         "spa sweep models/ --target-macs 0.3,0.5 --inputs val.npz --out sweep/ --jobs 2 --pick \"top1>=0.98\"",
         "spa sweep models/ --ratios 0.2,0.4 --out sweep/ --ray-address auto --threads 2")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Sweep folder: results.jsonl, report.html, models/, best/. Rerunning resumes it.")
@click.option("--ratios", help="--ratio values, e.g. 0.1,0.2,0.3.")
@click.option("--target-macs", help="--target-macs values, e.g. 0.3,0.5.")
@click.option("--target-latency", help="--target-latency values, e.g. 0.5 (timed at --batch with --threads).")
@click.option("--criteria", help="Criteria, e.g. obspa,l2 (default: spa prune's own choice).")
@click.option("--calib", type=click.Path(), help="Calibration inputs for every prune (.npz or .npy folder).")
@click.option("--inputs", type=click.Path(), help="Fidelity inputs (.npz or .npy folder); default: generated.")
@click.option("--samples", default=8, show_default=True, type=int, help="Generated fidelity inputs.")
@click.option("--batch", default=1, show_default=True, type=int, help="Batch latency is timed at.")
@click.option("--threads", default=1, show_default=True, type=int,
              help="onnxruntime and BLAS threads per candidate: the CPUs each worker or Ray task gets.")
@click.option("--runs", default=20, show_default=True, type=int, help="Timed runs per model and candidate.")
@click.option("--warmup", default=5, show_default=True, type=int, help="Untimed runs before them.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--jobs", type=int, help="Candidates at once in local processes (default 1).")
@click.option("--ray", "use_ray", is_flag=True, help="Run candidates as Ray tasks on a local Ray instance.")
@click.option("--ray-address", help="Run them on this Ray cluster (e.g. auto, or ip:6379); implies --ray.")
@click.option("--pick", help="Copy the fastest candidate meeting e.g. \"top1>=0.98\" or \"cosine>=0.995\" to "
                             "OUT/best/; exit 1 when a model has none.")
@input_shape
@quiet
@as_json
@run
def sweep(models, out, ratios, target_macs, target_latency, criteria, calib, inputs, samples, batch, threads, runs,
          warmup, seed, jobs, use_ray, ray_address, pick, input_shapes, quiet, as_json):
    """Prune each MODEL (a file, or a folder of .onnx files) at every setting and criterion,
    measure fidelity and latency, and report the trade-off."""
    if jobs is not None and (use_ray or ray_address):
        raise UsageError("--jobs runs local processes; with --ray, Ray schedules by --threads CPUs")
    settings = sweep_mod.Settings(calib=calib, inputs=inputs, samples=samples, batch=batch, threads=threads,
                                  runs=runs, warmup=warmup, input_shapes=tuple(input_shapes), seed=seed)
    result = sweep_mod.sweep(models, out, ratios=sweep_mod.values(ratios, "--ratios"),
                             target_macs=sweep_mod.values(target_macs, "--target-macs"),
                             target_latency=sweep_mod.values(target_latency, "--target-latency"),
                             criteria=sweep_mod.criteria(criteria), settings=settings, jobs=jobs or 1,
                             ray=use_ray, ray_address=ray_address, pick=sweep_mod.parse_pick(pick),
                             progress=None if quiet else _line)
    click.echo(to_json(result.to_dict()) if as_json else sweep_mod.sweep_text(result))
    if result.missing:
        click.echo(f"spa: error: {result.error}", err=True)
        sys.exit(1)
    bad = [m for m, rid in result.picked.items() if rid is None]
    if bad:
        click.echo(f"spa: error: no candidate of {', '.join(bad)} meets --pick {result.pick}", err=True)
        sys.exit(1)


COMMANDS = (sweep,)
