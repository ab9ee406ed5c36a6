"""Op type -> rule. Registering an op twice is an error."""

from __future__ import annotations

RULES: dict = {}

DEFAULT_DOMAINS = ("", "ai.onnx")


def key(op_type: str, domain: str = "") -> str:
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}::{op_type}"


def register(cls):
    """Class decorator: instantiate the rule and map each of its op types to it."""
    rule = cls()
    for op in cls.ops:
        if op in RULES:
            raise ValueError(f"op {op!r} already has rule {type(RULES[op]).__name__}")
        RULES[op] = rule
    return cls


def rule_for(node):
    return RULES.get(key(node.op, node.domain or ""))


def data_axis(node) -> int | None:
    """The channel axis of a weighted op's data input (see Rule.data_axis), or None."""
    rule = rule_for(node)
    return None if rule is None else rule.data_axis(node)
