"""What every subcommand shares: one-line errors with exit codes, common options,
argument types, and a progress bar."""

from __future__ import annotations

import functools
import sys
import time
import traceback

import click

from ..errors import INTERNAL_EXIT_CODE, SpaError, UsageError


def run(fn):
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


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def command(*examples):
    """A subcommand with -h and its `examples` at the end of --help."""
    epilog = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples)
    return click.command(context_settings=CONTEXT, epilog=epilog)


def input_shape(fn):
    """--input-shape, the same in every subcommand."""
    return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,..",
                        help="Concrete shape of a dynamic input (repeatable); other dynamic dims are 1.")(fn)


def as_json(fn):
    """--json: a flag in every subcommand."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")(fn)


def samples(default=None):
    """--samples: dim 0 of generated inputs (compare, gate)."""
    return click.option("--samples", type=int, default=default, show_default=default is not None,
                        help="Samples in generated inputs" + ("" if default else " (default 8)") + ".")


def quiet(fn):
    return click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")(fn)


def common(fn):
    """What analyze and prune share."""
    fn = input_shape(fn)
    fn = click.option("--exclude", multiple=True, metavar="PATTERN",
                      help="Protect groups touching nodes or tensors matching this glob (repeatable); "
                           "a pattern that matches nothing is an error.")(fn)
    return as_json(fn)


class RoundTo(click.ParamType):
    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


def batches(text) -> tuple:
    try:
        out = tuple(int(b) for b in str(text).split(",") if b.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise UsageError(f"--batch must be positive integers separated by commas, got {text!r}")
    return out


class Bar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self):
        self.on = sys.stderr.isatty()
        self.drawn = False

    def __call__(self, fraction, label):
        if not self.on:
            return
        n = int(fraction * 30)
        sys.stderr.write(f"\r[{'#' * n}{'.' * (30 - n)}] {fraction * 100:3.0f}% {label[:40]:<40}")
        sys.stderr.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


class Progress:
    """Progress of a long stage on stderr: one line redrawn in place on a terminal, else
    a line at every tenth of the stage; each says the step, its count and elapsed time."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start, self.shown, self.drawn = {}, {}, False

    def __call__(self, stage, i, n, name=""):
        t0 = self.start.setdefault(stage, time.perf_counter())
        line = f"{stage}: {i} of {n} ({time.perf_counter() - t0:.1f} s) {name}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
            self.drawn = True
        elif i == n or i * 10 // max(n, 1) > self.shown.get(stage, -1):
            self.shown[stage] = i * 10 // max(n, 1)
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
