"""Test support for SPA (like numpy.testing): tiny ONNX graph builders, the test
architectures, the masked-equivalence oracle, accessors for a model's constants, the
zoo's weightless model format and the fuzz case generator.

Used by tests/ and tools/; it imports only onnx, onnxruntime, numpy and spa, so it
ships with the package harmlessly. Import the modules themselves:
``from spa.testing.graphs import Graph``, ``from spa.testing.nets import ALL``.
"""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The checkout spa is imported from (an editable install): its models/ folder holds
the zoo and the bundled models that tests and tools read."""

PROGRESS = re.compile(r"^spa: [a-z ]+( \d+\.\d s|: \d+ of \d+ .*)$")
"""A progress line of `spa prune` on a non-terminal stderr (a finished stage, or a step of
a counted stage): the lines an error may follow."""


def message_lines(output: str) -> list:
    """The non-empty lines of a command's output that are not progress lines: for a failed
    command, the one-line error."""
    return [ln for ln in output.strip().splitlines() if ln.strip() and not PROGRESS.match(ln)]
