"""Every rule family file is imported by spa/rules/__init__.py: one left out would
register nothing, silently. Likewise for the criteria."""

import pathlib

import spa.rules
import spa.score.criteria


def _files(pkg, skip):
    return {p.stem for p in pathlib.Path(pkg.__file__).parent.glob("*.py")} - skip


def test_every_rule_family_is_registered():
    assert {m.__name__.rpartition(".")[2] for m in spa.rules.FAMILIES} == \
        _files(spa.rules, {"__init__", "base", "registry"})


def test_every_criterion_family_is_registered():
    assert {m.__name__.rpartition(".")[2] for m in spa.score.criteria.FAMILIES} == \
        _files(spa.score.criteria, {"__init__", "registry"})


def test_elementwise_functions_belong_to_registered_ops():
    """The numpy functions the statistics push through are keyed by ops their rule handles."""
    for op in list(spa.rules.ACTIVATIONS) + list(spa.rules.ARITHMETIC):
        assert op in spa.rules.RULES and spa.rules.RULES[op].__module__ == "spa.rules.elementwise"
