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


def common(fn):
    fn = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,..",
                      help="Concrete shape for a dynamic input (repeatable).")(fn)
    fn = click.option("--exclude", multiple=True, metavar="PATTERN",
                      help="Protect groups touching nodes or tensors matching this glob (repeatable).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(fn)
    return fn


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
