"""Measuring models in onnxruntime: latency and memory (bench), fidelity (compare),
and the CI gate. The modules are exported as such: spa.measure.bench.bench(...)."""

from . import bench, compare, gate
from .bench import BenchResult, BenchSettings, BlockWarning, block_warnings, cpu_block_size
from .compare import Comparison
from .gate import GateResult, Thresholds

__all__ = ["bench", "compare", "gate", "BenchResult", "BenchSettings", "BlockWarning", "block_warnings",
           "cpu_block_size", "Comparison", "GateResult", "Thresholds"]
