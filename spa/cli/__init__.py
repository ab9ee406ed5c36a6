"""The `spa` command line: a thin layer over the Python API. Each subcommand lives in
prune.py (prune, analyze) or tools.py (bench, compare, gate); shared options and the
error handling are in common.py."""

from __future__ import annotations

import click

from . import prune, tools


@click.group()
@click.version_option(package_name="spa-prune")
def main():
    """SPA: structurally prune ONNX models."""


for _command in prune.COMMANDS + tools.COMMANDS:
    main.add_command(_command)
