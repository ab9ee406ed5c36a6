"""Test support for SPA (like numpy.testing): tiny ONNX graph builders, the test
architectures, the masked-equivalence oracle, accessors for a model's constants, the
zoo's weightless model format and the fuzz case generator.

Used by tests/ and tools/; it imports only onnx, onnxruntime, numpy and spa, so it
ships with the package harmlessly. Import the modules themselves:
``from spa.testing.graphs import Graph``, ``from spa.testing.nets import ALL``.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The checkout spa is imported from (an editable install): its models/ folder holds
the zoo and the bundled models that tests and tools read."""
