"""Checking a pruned model before it is written, and the masked-equivalence oracle."""

from .check import verify
from .masked import masked

__all__ = ["verify", "masked"]
