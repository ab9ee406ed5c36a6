"""Per-op channel rules. Importing this package registers all of them."""

from . import attention, constants, conv, elementwise, gemm, layout, norm, pool, reshape, slicing  # noqa: F401
from .registry import RULES, rule_for  # noqa: F401
