"""The `spa` command line: a thin layer over the Python API. Each subcommand lives in
prune.py (prune, analyze), tools.py (bench, compare, gate) or sweep.py (sweep); shared options and the
error handling are in common.py."""

from __future__ import annotations

import click

from . import prune, sweep, tools
from .common import CONTEXT
from .memory import reuse_freed_memory


@click.group(context_settings=CONTEXT, epilog="\b\nExamples:\n  spa analyze models/mnist_cnn.onnx\n"
             "  spa prune models/mnist_cnn.onnx --ratio 0.3\n  spa prune -h")
@click.version_option(package_name="spa-prune")
def main():
    """SPA: structurally prune ONNX models."""
    reuse_freed_memory()


for _command in prune.COMMANDS + tools.COMMANDS + sweep.COMMANDS:
    main.add_command(_command)
