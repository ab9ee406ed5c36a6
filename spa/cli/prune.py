"""`spa prune` and `spa analyze`: parse, call the API, print."""

from __future__ import annotations

import click

from .. import api as spa_api
from ..edit import MAX_RATIO, NORMALIZE
from ..measure import block_warnings
from ..report import to_json
from ..score import REDUCTIONS
from ..score.criteria import CRITERIA
from ..view import page, write
from .common import Progress, RoundTo, command, common, quiet, run
from .text import analysis_text, prune_text


def block_warning_lines(model, limit=1) -> list:
    """Warnings for Convs that miss onnxruntime's NCHWc kernels on this CPU: the first
    `limit` in full, then one line counting the rest (all of them: spa.measure.block_warnings)."""
    warns = block_warnings(model)
    lines = [f"spa: warning: {w.message()}" for w in warns[:limit]]
    if len(warns) > limit:
        lines.append(f"spa: warning: ... and {len(warns) - limit} more Conv channel counts off this CPU's "
                     f"{warns[0].block}-channel NCHWc block")
    return lines


@command("spa analyze model.onnx", "spa analyze model.onnx -v --exclude 'head*'",
         "spa analyze model.onnx --input-shape input:1,3,224,224 --json", "spa analyze model.onnx --html groups.html")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-v", "--verbose", is_flag=True, help="List every member of every group.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the groups on a drawing of the graph: one self-contained HTML file.")
@common
@run
def analyze(model, verbose, html_path, input_shapes, exclude, as_json):
    """List the coupled channel groups of MODEL and why any is blocked."""
    an = spa_api.analyze(model, input_shapes=list(input_shapes), exclude=exclude)
    click.echo(to_json(an.to_dict()) if as_json else analysis_text(an, verbose))
    if html_path:
        write(html_path, page(model, an))
        click.echo(f"spa: wrote {html_path}", err=True)
    for line in block_warning_lines(model):  # channel counts that miss onnxruntime's NCHWc kernels
        click.echo(line, err=True)


@command("spa prune model.onnx --ratio 0.3", "spa prune model.onnx small.onnx --target-macs 0.5 --exclude 'head*'",
         "spa prune model.onnx --target-macs 0.3 --calib samples.npz --json",
         "spa prune model.onnx --ratio 0.3 --report report.html",
         "spa prune model.onnx --target-latency 0.5 --batch 8 --threads 1")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("--ratio", type=float, help="Share of channels to remove from each prunable group.")
@click.option("--target-macs", type=float, help="Prune globally until MACs fall by this share.")
@click.option("--target-latency", type=float,
              help="Prune globally until onnxruntime's measured latency is this share of the original's "
                   "(e.g. 0.5), timed like `spa bench` at --batch on --device.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batch that --target-latency times at.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Execution provider that --target-latency times on.")
@click.option("--heads", type=float, help="Ratio for attention-head groups (overrides --ratio).")
@click.option("--head-dim", "head_dim", type=float,
              help="Ratio for head_dim slices shared by every head of an attention block.")
@click.option("--mlp", type=float, help="Ratio for plain channel groups: conv channels, MLP width.")
@click.option("--hidden", type=float, help="Ratio for groups that pass a norm (transformer hidden size).")
@click.option("--criterion", type=click.Choice(sorted(CRITERIA)),
              help="Default: obs with --calib, else obspa, or l2 for models with over 2 GB of weights. "
                   "taylor, hessian and obs need --calib.")
@click.option("--calib", type=click.Path(), help="Calibration inputs: an .npz keyed by input name, or a folder "
                                                 "of <input>.npy files; samples on axis 0.")
@click.option("--inputs", type=click.Path(), help="Inputs to measure fidelity on (.npz or a folder of <input>.npy "
                                                  "files; default: --calib, else 8 generated samples).")
@click.option("--recover/--no-recover", default=None,
              help="Refit the pruned weights so each layer reproduces the original, on the --calib data "
                   "(default: on with --calib) or, without it, on synthetic images.")
@click.option("--sensitivity/--no-sensitivity", default=None,
              help="With --calib and --target-macs or --global: measure how much the outputs change as each "
                   "group alone loses channels, and remove where the error per MACs saved is lowest.")
@quiet
@click.option("--reduce", default="mean", show_default=True, type=click.Choice(REDUCTIONS),
              help="How the scores of a group's members combine.")
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across groups.")
@click.option("--normalize", default="mean", show_default=True, type=click.Choice(NORMALIZE),
              help="What each group's scores are divided by before ranking across groups.")
@click.option("--max-ratio", default=MAX_RATIO, show_default=True, type=float,
              help="Largest share of one group's channels that --target-macs or --global may remove.")
@click.option("--round-to", default="auto", show_default=True, type=RoundTo(),
              help="Keep channel counts multiples of N; auto: per group the nearest multiple of 8, "
                   "else 4, 2, 1, within half the asked removal.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Also write an HTML report: the graph with each group before and after, the fidelity, the timings.")
@click.option("--external-data", is_flag=True, default=None,
              help="Write tensors of 1 KB or more to OUTPUT.data (automatic when weights exceed 2 GB).")
@click.option("--allow-interface-change", is_flag=True,
              help="Also prune groups that reach graph inputs or outputs (a KV cache, feature outputs); writes "
                   "<OUTPUT stem>.interface.json with each changed input and output.")
@click.option("--change-interface", "interface_patterns", multiple=True, metavar="PATTERN",
              help="As --allow-interface-change, for the graph inputs and outputs whose names match this glob "
                   "pattern only (repeatable), e.g. 'past_key_values.*' 'present.*'.")
@click.option("--threads", type=click.IntRange(min=0),
              help="Threads for onnxruntime and numpy's BLAS (default: their own counts; 1 is often faster "
                   "on a busy machine).")
@common
@run
def prune(model, output, ratio, target_macs, target_latency, batch, device, heads, head_dim, mlp, hidden, criterion,
          calib, inputs, recover,
          sensitivity, quiet, reduce, global_ranking, normalize, max_ratio, round_to, seed, force, report_path,
          external_data, allow_interface_change, interface_patterns, threads, input_shapes, exclude, as_json):
    """Prune MODEL and write OUTPUT (default: <stem>.pruned.onnx beside MODEL)."""
    with Progress(enabled=not quiet) as progress:
        result = spa_api.prune(model, output or spa_api.default_output(model), ratio=ratio, target_macs=target_macs,
                               criterion=criterion, reduce=reduce, global_ranking=global_ranking, round_to=round_to,
                               exclude=exclude, input_shapes=list(input_shapes), seed=seed, force=force,
                               kinds={"heads": heads, "head_dim": head_dim, "mlp": mlp, "hidden": hidden},
                               external_data=external_data or None, calib=calib, normalize=normalize,
                               max_ratio=max_ratio, recover=recover, sensitivity=sensitivity,
                               progress=progress if not quiet else None, inputs=inputs, threads=threads,
                               allow_interface_change=allow_interface_change or interface_patterns,
                               target_latency=target_latency, batch=batch, device=device)
    click.echo(to_json(result.to_dict()) if as_json else prune_text(result))
    if report_path:
        an = spa_api.analyze(model, input_shapes=list(input_shapes), exclude=exclude)
        write(report_path, page(model, an, result))
        if not quiet:
            click.echo(f"spa: wrote {report_path}", err=True)
    for line in [] if quiet else block_warning_lines(result.output or result.model):  # against the NCHWc block
        click.echo(line, err=True)


COMMANDS = (analyze, prune)
