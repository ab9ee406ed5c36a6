"""Head_dim groups: slices of head_dim that every head of an attention block shares.

The main channel graph maps a Reshape that splits the hidden axis into heads x head_dim
to its outer axis, so whole heads form groups. A second graph, built only when the
model has attention heads, maps the inner axis instead (rules.base.Ctx `inner`), and
its head_dim groups are pruned alongside: Q and K lose the same slice of every head
(one term of Q.K^T), V and the output projection another. Removing a slice equals
zeroing it, so the masked oracle holds; anything a rule cannot prove blocks, as usual.
"""

from __future__ import annotations

from dataclasses import replace

from .channels import build
from .groups import find_groups


def head_dim_groups(m, groups, exclude=(), interface=False):
    """(second ChannelGraph or None, its prunable head_dim groups renumbered after `groups`)."""
    if not any(g.kind == "heads" for g in groups):
        return None, []
    cg = build(m, inner=True, interface=interface)
    found = [g for g in find_groups(cg, exclude) if g.kind == "head_dim" and g.prunable]
    return cg, [replace(g, id=len(groups) + k) for k, g in enumerate(found)]


def sink_roles(group) -> tuple:
    """Parameter roles whose slices the masked oracle zeroes for this group: a head_dim
    slice of Q or K has no consumer weight, so its producing columns are zeroed too."""
    return ("in", "out", "elem") if group.kind == "head_dim" else ("in",)
