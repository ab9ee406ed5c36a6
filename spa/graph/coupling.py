"""The graph stage as one call: channel graph, groups and head_dim groups of a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .channels import ChannelGraph, build
from .groups import find_groups, removed_elements
from .headdim import head_dim_groups, sink_roles


@dataclass(frozen=True)
class Coupling:
    """What `couple` found: the main channel graph and its groups, and, for models with
    attention heads, the head_dim graph and its prunable groups (numbered after the main ones)."""

    cg: ChannelGraph
    groups: list
    cg2: ChannelGraph | None = None
    head_dims: list = ()

    @property
    def all(self) -> list:
        return list(self.groups) + list(self.head_dims)


def couple(m, exclude=(), head_dims=True, interface=False) -> Coupling:
    """Build the channel graph of a loaded model and find its coupled groups.

    Args:
        m: an io.Model.
        exclude: glob patterns of node or tensor names whose groups are protected.
        head_dims: also find head_dim groups (local plans only prune them).
        interface: graph inputs and outputs that may change (channels.interface_allowed).
    """
    cg = build(m, interface=interface)
    groups = find_groups(cg, exclude)
    cg2, found = head_dim_groups(m, groups, exclude, interface) if head_dims else (None, [])
    return Coupling(cg, groups, cg2, found)


def oracle_mask(coupling: Coupling, plan: dict) -> tuple:
    """(tensor, axis, indices) of the parameter slices the masked oracle zeroes for a
    plan ({group id: channel indices})."""
    out: dict = {}
    main = {gid: ch for gid, ch in plan.items() if gid < len(coupling.groups)}
    for cg, groups, part in ((coupling.cg, coupling.groups, main), (coupling.cg2, coupling.head_dims, plan)):
        for gr in groups:
            if gr.id not in part:
                continue
            for s, idx in removed_elements([gr], {gr.id: part[gr.id]}).items():
                node = cg.g.nodes[s]
                if (node["param"] or node["computed"]) and node["role"] in sink_roles(gr):
                    out[s] = np.union1d(out.get(s, idx), idx)
    return tuple((n, a, tuple(int(i) for i in idx)) for (n, a), idx in sorted(out.items()))
