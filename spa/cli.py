"""Command line: `spa prune` and `spa analyze`. Parses, calls the API, prints."""

from __future__ import annotations

import functools
import sys
import traceback

import click

from . import api, report
from .criteria import CRITERIA
from .errors import INTERNAL_EXIT_CODE, SpaError
from .importance import REDUCTIONS
from .plan import MAX_RATIO, NORMALIZE


def _run(fn):
    """Turn errors into one line and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpaError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"spa: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # a bug: still one line unless --debug
            if debug:
                traceback.print_exc()
            click.echo(f"spa: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       " (rerun with --debug for the traceback)", err=True)
            sys.exit(INTERNAL_EXIT_CODE)
    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _common(fn):
    fn = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,..",
                      help="Concrete shape for a dynamic input (repeatable).")(fn)
    fn = click.option("--exclude", multiple=True, metavar="PATTERN",
                      help="Protect groups touching nodes or tensors matching this glob (repeatable).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(fn)
    return fn


class _RoundTo(click.ParamType):
    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


@click.group()
@click.version_option(package_name="spa-prune")
def main():
    """SPA: structurally prune ONNX models."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_common
@_run
def analyze(model, input_shapes, exclude, as_json):
    """List the coupled channel groups of MODEL and why any is blocked."""
    an = api.analyze(model, input_shapes=list(input_shapes), exclude=exclude)
    click.echo(report.to_json(an.to_dict()) if as_json else report.analysis_text(an))
    for line in block_warning_lines(model):  # channel counts that miss onnxruntime's NCHWc kernels
        click.echo(line, err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("--ratio", type=float, help="Share of channels to remove from each prunable group.")
@click.option("--target-macs", type=float, help="Prune globally until MACs fall by this share.")
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
@click.option("--reduce", default="mean", show_default=True, type=click.Choice(REDUCTIONS),
              help="How the scores of a group's members combine.")
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across groups.")
@click.option("--normalize", default="mean", show_default=True, type=click.Choice(NORMALIZE),
              help="What each group's scores are divided by before ranking across groups.")
@click.option("--max-ratio", default=MAX_RATIO, show_default=True, type=float,
              help="Largest share of one group's channels that --target-macs or --global may remove.")
@click.option("--round-to", default="auto", show_default=True, type=_RoundTo(),
              help="Keep channel counts multiples of N; auto: per group the nearest multiple of 8, "
                   "else 4, 2, 1, within half the asked removal.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--external-data", is_flag=True, default=None,
              help="Write tensors of 1 KB or more to OUTPUT.data (automatic when weights exceed 2 GB).")
@_common
@_run
def prune(model, output, ratio, target_macs, heads, head_dim, mlp, hidden, criterion, calib, reduce, global_ranking,
          normalize, max_ratio, round_to, seed, force, external_data, input_shapes, exclude, as_json):
    """Prune MODEL and write OUTPUT (default: <stem>.pruned.onnx beside MODEL)."""
    result = api.prune(model, output or api.default_output(model), ratio=ratio, target_macs=target_macs,
                       criterion=criterion, reduce=reduce, global_ranking=global_ranking, round_to=round_to,
                       exclude=exclude, input_shapes=list(input_shapes), seed=seed, force=force,
                       kinds={"heads": heads, "head_dim": head_dim, "mlp": mlp, "hidden": hidden},
                       external_data=external_data or None, calib=calib, normalize=normalize,
                       max_ratio=max_ratio)
    click.echo(report.to_json(result.to_dict()) if as_json else report.prune_text(result))


from .cli_tools import COMMANDS, block_warning_lines  # noqa: E402  (bench, compare, gate; imports _run above)

for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
