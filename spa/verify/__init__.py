"""Checking a pruned model before it is written, the fidelity figures it reports, and
the masked-equivalence oracle."""

from .check import verify
from .check import SAMPLES
from .fidelity import fidelity, fidelity_all
from .masked import masked

__all__ = ["verify", "SAMPLES", "fidelity", "fidelity_all", "masked"]
