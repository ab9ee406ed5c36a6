"""What every subcommand shares: one-line errors with exit codes, common options,
argument types, and a progress bar."""

from __future__ import annotations

import functools
import shutil
import sys
import threading
import time
import traceback

import click

from ..errors import INTERNAL_EXIT_CODE, SpaError, UsageError

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it


def run(fn):
    """Turn errors into one line and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C: what was being written is removed on the way out
            click.echo("\nspa: interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT_CODE)
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
    """What `spa prune` is doing, on stderr.

    The API calls it as progress(stage, i, n, name): (stage, 0, 0, "") when a stage
    starts, (stage, i, n, name) as a counted stage advances. A finished stage leaves one
    line with its time. On a terminal the running stage is one more line, redrawn in place
    every half second and at each step: its elapsed time, and for a counted stage a bar
    with the step count and ETA. Elsewhere (a log, a pipe) a counted stage prints a line at
    every tenth of its steps.
    """

    WIDTH = 30  # characters of the bar

    def __init__(self, stream=None, enabled=True):
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.stage, self.start, self.step, self.shown = None, 0.0, None, -1
        self.lock = threading.Lock()
        self.ticker = None
        if self.tty:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def __call__(self, stage, i, n, name=""):
        with self.lock:
            if stage != self.stage:
                self._finish()
                self.stage, self.start, self.step, self.shown = stage, time.perf_counter(), None, -1
            if n > 0:
                self.step = (i, n, name)
                if self.tty:
                    self._draw()
                elif i == n or i * 10 // n > self.shown:
                    self.shown = i * 10 // n
                    self._write(f"spa: {stage}: {i} of {n} ({time.perf_counter() - self.start:.1f} s) {name}\n")
            elif self.tty:
                self._draw()

    def close(self, failed=False):
        """End the display; the last stage leaves its line unless it `failed` (the error says why)."""
        with self.lock:
            if failed and self.tty and self.stage is not None:
                self._write("\r\033[K")
            elif not failed:
                self._finish()
            self.stage = None
            self.ticker = None  # the thread sees it and stops

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        self.close(failed=exc_type is not None)
        return False

    def _finish(self):
        """Leave the stage that ran as one line with its time."""
        if self.stage is not None:
            self._write(("\r\033[K" if self.tty else "") + f"spa: {self.stage} {time.perf_counter() - self.start:.1f} s\n")

    def _draw(self):
        took = time.perf_counter() - self.start
        line = f"spa: {self.stage} {took:.1f} s"
        if self.step is not None:
            i, n, name = self.step
            full = int(self.WIDTH * i / n)
            eta = f"ETA {took / i * (n - i):.0f} s" if i else "ETA ?"
            line = f"spa: {self.stage} [{'#' * full}{'.' * (self.WIDTH - full)}] {i}/{n} {eta} {name}"
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self._write("\r\033[K" + line[:width])

    def _tick(self):
        while self.ticker is not None:
            time.sleep(0.5)
            with self.lock:
                if self.stage is not None and self.ticker is not None:
                    self._draw()

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()
