"""spa/rules/registry.py: op type -> rule. Ops without a rule (or in a foreign domain)
block the channels they touch, and analyze names them."""

import onnx
import pytest

import spa
from spa.rules import RULES
from spa.rules.base import Rule
from spa.rules.registry import key, register
from spa.testing.graphs import sandwich
from spa.testing.lookup import group_with, shape
from spa.testing.oracle import check_oracle


def test_every_registered_op_is_an_onnx_op():
    for op in RULES:
        domain, _, name = op.rpartition("::")
        assert onnx.defs.has(name, domain) or domain == "com.microsoft", op


def test_registering_an_op_twice_is_an_error():
    class Twice(Rule):
        ops = ("Relu",)

    with pytest.raises(ValueError, match="Relu"):
        register(Twice)
    assert type(RULES["Relu"]).__name__ == "Unary"


def test_key_ignores_the_default_domain_only():
    assert key("Relu") == key("Relu", "ai.onnx") == "Relu"
    assert key("Gelu", "com.microsoft") == "com.microsoft::Gelu"


def test_unknown_op_blocks_its_channels():
    m = sandwich(lambda g, x: g.op("LpNormalization", [x], name="lpn", axis=1))
    a = spa.analyze(m)
    gr = group_with(a, "conv0_w[0]")
    assert not gr.prunable and "no rule for op LpNormalization (node 'lpn')" in gr.reason
    assert ("LpNormalization", 1) in a.blocked_ops
    r = check_oracle(m)  # the tail is not behind the LRN and still prunes
    assert shape(r.model, "conv0_w") == (8, 3, 3, 3)
    assert shape(r.model, "tail_w") == (5, 8, 3, 3)


def test_registered_op_name_in_a_foreign_domain_blocks():
    """com.microsoft::Gelu is not the ONNX Gelu: no rule applies to it."""
    m = sandwich(lambda g, x: g.op("Gelu", [x], name="msgelu", domain="com.microsoft"), domains=["com.microsoft"])
    gr = group_with(spa.analyze(m), "conv0_w[0]")
    assert not gr.prunable and "no rule for op Gelu (node 'msgelu')" in gr.reason


def test_custom_domain_op_blocks():
    """An op onnxruntime does not know either: analyze still works and names it."""
    m = sandwich(lambda g, x: g.op("Mystery", [x], name="mystery", domain="com.example"), domains=["com.example"])
    a = spa.analyze(m)
    gr = group_with(a, "conv0_w[0]")
    assert not gr.prunable and "no rule for op Mystery (node 'mystery')" in gr.reason
    assert ("Mystery", 1) in a.blocked_ops
