"""Checking a pruned model before it is written, and the masked-equivalence oracle."""

from .check import verify
from .masked import masked
from .sensitivity import Curve, sensitivity as measure_sensitivity

__all__ = ["verify", "masked", "Curve", "measure_sensitivity"]
