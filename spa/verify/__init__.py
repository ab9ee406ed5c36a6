"""Checking a pruned model before it is written, the fidelity figures it reports, and
the masked-equivalence oracle."""

from .check import SAMPLES, verify
from .fidelity import fidelity, fidelity_all
from .masked import masked
from .sensitivity import SAMPLES as SENSITIVITY_SAMPLES, Curve, sensitivity as measure_sensitivity

__all__ = ["verify", "SAMPLES", "fidelity", "fidelity_all", "masked", "Curve", "measure_sensitivity", "SENSITIVITY_SAMPLES"]
