"""Per-op channel rules. Importing this package registers all of them.

Every module of this package must be listed in FAMILIES (tests/rules/test_registry.py
checks it): a family file left out would register nothing.
"""

from . import attention, constants, conv, elementwise, gemm, layout, nbits, norm, pool, quant, recurrent, reshape, slicing
from .elementwise import ACTIVATIONS, ARITHMETIC, sigmoid
from .base import ROLES, Ctx, Flow, Rule, broadcast, normalize_axis, output_spaces, volume
from .registry import RULES, data_axis, key, register, rule_for

FAMILIES = (attention, constants, conv, elementwise, gemm, layout, nbits, norm, pool, quant, recurrent, reshape, slicing)

__all__ = ["ACTIVATIONS", "ARITHMETIC", "sigmoid", "FAMILIES", "ROLES", "Ctx", "Flow", "Rule", "broadcast", "normalize_axis", "output_spaces", "volume", "RULES", "data_axis", "key",
           "register", "rule_for"]
