"""Masked-equivalence oracle over every test architecture, with random plans."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spa
from spa.testing.nets import ALL
from spa.testing.oracle import assert_oracle


@pytest.mark.parametrize("name", sorted(ALL))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), ratio=st.floats(0.15, 0.9), global_ranking=st.booleans())
def test_random_plans_match_masked_original(name, seed, ratio, global_ranking):
    model = ALL[name](seed % 3)
    result = spa.prune(model, ratio=ratio, criterion="random", seed=seed, global_ranking=global_ranking)
    assert_oracle(model, result)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_magnitude_plans_match_masked_original(name, criterion):
    model = ALL[name]()
    assert_oracle(model, spa.prune(model, ratio=0.3, criterion=criterion))


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "densenet"])
def test_ratio_03_cuts_at_least_40_percent_of_macs(name):
    result = spa.prune(ALL[name](), ratio=0.3)
    assert result.macs_reduction >= 0.40
    assert result.verdict.checker and result.verdict.runs


@pytest.mark.parametrize("name", ["resnet", "densenet", "mobilenetv2", "resnext"])
def test_no_group_is_emptied(name):
    model = ALL[name]()
    result = spa.prune(model, ratio=0.99, criterion="random")
    assert all(c.after >= 1 for c in result.changes)
    assert_oracle(model, result)


@pytest.mark.parametrize("target", [0.2, 0.5])
def test_target_macs_is_reached(target):
    result = spa.prune(ALL["resnet"](), target_macs=target)
    assert result.macs_reduction >= target - 0.02


def test_round_to_keeps_multiples():
    model = ALL["mobilenetv2"]()
    result = spa.prune(model, ratio=0.4, round_to=8)
    an = {g.id: g for g in spa.analyze(model).groups}
    for c in result.changes:
        assert c.after % 8 == 0 or c.after == an[c.id].channels
    assert_oracle(model, result)


def test_exclude_protects_matching_groups():
    model = ALL["resnet"]()
    an = spa.analyze(model, exclude=["conv_w_0"])
    hit = [g for g in an.groups if "conv_w_0[0]" in g.members]
    assert hit and not hit[0].prunable and "exclude" in hit[0].reason
    result = spa.prune(model, ratio=0.3, exclude=["conv_w_0"])
    assert hit[0].id not in {c.id for c in result.changes}


def test_global_ranking_differs_from_local():
    model = ALL["resnet"]()
    local = spa.prune(model, ratio=0.3)
    glob = spa.prune(model, ratio=0.3, global_ranking=True)
    assert [c.after for c in local.changes] != [c.after for c in glob.changes]
    removed = sum(c.before - c.after for c in glob.changes)
    total = sum(g.channels for g in spa.analyze(model).prunable)
    assert removed >= 0.3 * total


@pytest.mark.parametrize("max_ratio", [0.5, 0.8])
def test_global_plans_remove_at_most_max_ratio_of_a_group(max_ratio):
    model = ALL["resnet"]()
    result = spa.prune(model, ratio=0.75, global_ranking=True, round_to=1, max_ratio=max_ratio)
    assert result.changes and all(c.before - c.after <= max_ratio * c.before for c in result.changes)
    assert max((c.before - c.after) / c.before for c in result.changes) > 0.4
    assert_oracle(model, result)
    uncapped = spa.prune(model, ratio=0.75, global_ranking=True, round_to=1, max_ratio=1.0)
    assert max((c.before - c.after) / c.before for c in uncapped.changes) > max_ratio


def test_analyze_names_every_group_and_reasons():
    an = spa.analyze(ALL["fpn"]())
    assert [g.id for g in an.groups] == list(range(len(an.groups)))
    for g in an.groups:
        assert g.members and 0 <= g.macs_share
        assert g.prunable == (g.reason == "")
    assert any("graph output" in g.reason for g in an.groups)
    assert np.isclose(sum(g.macs_share for g in an.groups if g.prunable) > 0, True)


def test_round_to_counts_elements_so_heads_still_prune():
    """A channel that spans 8 elements (a conv group of 8) already keeps multiples of 8."""
    model = ALL["resnext"]()
    plain = spa.prune(model, ratio=0.5, criterion="random")
    rounded = spa.prune(model, ratio=0.5, criterion="random", round_to=8)
    pick = lambda r: {c.id: c.after for c in r.changes}  # noqa: E731
    assert pick(rounded) == pick(plain)


@pytest.mark.parametrize("n,ratio,kept", [(64, 0.3, 48), (96, 0.3, 64), (24, 0.5, 16), (16, 0.3, 12), (8, 0.3, 6),
                                          (3, 0.5, 2), (128, 0.3, 88)])
def test_auto_round_keeps_nearest_coarse_multiple(n, ratio, kept):
    from spa.graph.groups import Group
    from spa.edit.plan import auto_keep

    assert auto_keep(Group(0, n, {}), ratio) == kept


def test_default_round_to_is_auto_and_keeps_multiples_of_8_on_wide_groups():
    model = ALL["mobilenetv2"]()
    result = spa.prune(model, ratio=0.3)
    assert result.changes and all(c.after % 8 == 0 for c in result.changes if c.before >= 32)
    assert_oracle(model, result)


@pytest.mark.parametrize("normalize", ["mean", "max", "none"])
def test_global_ranking_removes_the_lowest_normalised_scores(normalize):
    from spa.graph import build
    from spa.graph.groups import find_groups
    from spa.score.importance import score
    from spa.io import load
    from spa.edit.plan import normalised
    model = ALL["resnet"]()
    cg = build(load(model))
    groups = find_groups(cg)
    scores = score(cg, groups, "l2")
    result = spa.prune(model, ratio=0.3, global_ranking=True, round_to=1, normalize=normalize, criterion="l2")
    after = {c.id: c.after for c in result.changes}
    removed, kept = [], []
    for gid, sc in scores.items():
        order = np.sort(normalised(sc, normalize))
        cut = len(sc) - after.get(gid, len(sc))
        removed += list(order[:cut])
        kept += list(order[cut:])
    assert removed and max(removed) <= min(kept) + 1e-12
