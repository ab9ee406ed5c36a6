"""Coupled channel groups.

Every element of every space gets a global id; rule links join ids with a
union-find. A class of joined elements is one *channel* (an atom): removing it
means removing all its elements together. Channels that touch the same set of
spaces form a *group*, the unit analyze reports and plans prune.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from .channels import INTERFACE, ChannelGraph
from .macs import node_macs


@dataclass
class Group:
    id: int
    channels: int
    spaces: dict  # space -> (element indices, channel index of each element)
    blockers: list = field(default_factory=list)
    macs: float = 0.0
    kind: str = "mlp"  # "heads" (attention heads), "hidden" (through a norm), "mlp" (any other)

    @property
    def prunable(self) -> bool:
        return not self.blockers

    def params(self, g):
        return [s for s in self.spaces if g.nodes[s]["param"]]


def interface_blocked(group) -> bool:
    """The group is blocked only because it reaches the graph's inputs or outputs."""
    return bool(group.blockers) and all(INTERFACE in why for why in group.blockers)


def union_find(n, u, v):
    """Labels (the smallest id of each class) for n ids joined by pairs u[k]~v[k]."""
    lab = np.arange(n)
    while True:
        lu, lv = lab[u], lab[v]
        if np.array_equal(lu, lv):
            return lab
        m = np.minimum(lu, lv)
        np.minimum.at(lab, lu, m)
        np.minimum.at(lab, lv, m)
        while True:
            nxt = lab[lab]
            if np.array_equal(nxt, lab):
                break
            lab = nxt


def find_groups(cg: ChannelGraph, exclude=()) -> list[Group]:
    """All groups that hold at least one floating-point weight, prunable or not."""
    g = cg.g
    spaces = list(g.nodes)
    sizes = np.array([g.nodes[s]["size"] for s in spaces], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(sizes)])
    index = {s: i for i, s in enumerate(spaces)}
    us, vs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for sa, sb, data in g.edges(data=True):
        if data["a"] != sa:
            sa, sb = sb, sa
        us.append(base[index[sa]] + data["ia"])
        vs.append(base[index[sb]] + data["ib"])
    lab = union_find(int(base[-1]), np.concatenate(us), np.concatenate(vs))
    owner = np.repeat(np.arange(len(spaces)), sizes)

    # one signature per channel: a hash of the set of spaces it touches
    n_sp = len(spaces)
    key = np.unique(lab * n_sp + owner)
    lab_of, space_of = key // n_sp, key % n_sp
    salt = np.random.default_rng(0).integers(1, 2**62, size=n_sp, dtype=np.int64)
    is_weight = np.array([g.nodes[s]["weight"] for s in spaces], dtype=np.int64)
    labels, starts = np.unique(lab_of, return_index=True)
    sig = np.add.reduceat(salt[space_of], starts)  # wraps around; only equality matters
    has_weight = np.add.reduceat(is_weight[space_of], starts) > 0
    by_sig: dict = {}
    for i in np.flatnonzero(has_weight):
        by_sig.setdefault(int(sig[i]), []).append(i)

    gid_of = np.full(int(base[-1]), -1, dtype=np.int64)
    chan_of = np.zeros(int(base[-1]), dtype=np.int64)
    groups = []
    for idxs in sorted(by_sig.values(), key=lambda ix: labels[ix[0]]):
        chans = labels[idxs]
        gid_of[chans] = len(groups)
        chan_of[chans] = np.arange(len(chans))
        groups.append(Group(len(groups), len(chans), {}))
    for si, s in enumerate(spaces):
        labs = lab[base[si]:base[si + 1]]
        gids = gid_of[labs]
        for gid in np.unique(gids[gids >= 0]):
            pos = np.flatnonzero(gids == gid)
            groups[gid].spaces[s] = (pos, chan_of[labs[pos]])
    for gr in groups:
        _annotate(cg, gr, exclude)
    _enforce_same_size(cg, groups)
    _attribute_macs(cg, groups)
    return groups


def _annotate(cg, group, exclude):
    """Collect the blockers of a group's spaces, and mark it if a name matches --exclude."""
    g = cg.g
    reasons = []
    for s in group.spaces:
        for why in g.nodes[s]["blockers"]:
            if why not in reasons:
                reasons.append(why)
    if exclude:
        names = {s[0] for s in group.spaces}
        names |= {n.name for s in group.spaces for n in _users(cg, s[0])}
        hit = next((n for n in sorted(names) for p in exclude if fnmatch.fnmatchcase(n, p)), None)
        if hit:
            reasons.insert(0, f"excluded: '{hit}' matches --exclude (drop the pattern to prune it)")
    if group.channels == 1 and not reasons:
        size = max(g.nodes[s]["size"] for s in group.spaces)
        reasons.append("a single channel cannot be removed" if size == 1 else
                       f"its {size} channels are tied into one unit (index ties across grouped "
                       "convolutions and channel permutations), which cannot lose a channel")
    if not reasons and all(g.nodes[s]["param"] or cg.ctx.computed(cg.ctx.tensors[s[0]]) for s in group.spaces):
        reasons.append("it holds only weights and values computed from them (the statistics of a weight "
                       "standardised in the graph): no activation channel would go")
    group.blockers = reasons
    nodes = [g.nodes[s] for s in group.spaces]
    group.kind = "hidden" if any(n["lossy"] for n in nodes) else \
        "head_dim" if any(n["tag"] == "head_dim" for n in nodes) else \
        "heads" if any(n["tag"] == "heads" for n in nodes) else "mlp"


def _enforce_same_size(cg, groups):
    """Block a group that would shrink one of two tied axes more than the other."""
    for sa, sb, factor, why in cg.same:
        for gr in groups:
            na = len(gr.spaces[sa][0]) if sa in gr.spaces else 0
            nb = len(gr.spaces[sb][0]) if sb in gr.spaces else 0
            if nb != factor * na and why not in gr.blockers:
                gr.blockers.append(why)


def _users(cg, name):
    t = cg.ctx.tensors[name]
    return list(t.inputs) + list(t.outputs)


def _attribute_macs(cg, groups):
    """MACs a group carries: for each MAC op, the share that goes if the group goes."""
    where = {}
    for gr in groups:
        for s, (pos, _) in gr.spaces.items():
            where.setdefault(s, []).append((gr, len(pos)))
    for node, _, _ in cg.flows:
        macs, factors = node_macs(node, cg.ctx)
        if not macs:
            continue
        kept = {}
        for s in factors:
            n = cg.g.nodes[s]["size"] if s in cg.g else None
            for gr, count in where.get(s, []):
                kept[gr.id] = kept.get(gr.id, 1.0) * (1 - count / n)
        for gid, k in kept.items():
            groups[gid].macs += macs * (1 - k)


def removed_elements(groups, plan) -> dict:
    """{space: element indices removed} from {group id: channel indices}."""
    by_id = {gr.id: gr for gr in groups}
    out: dict = {}
    for gid, chans in plan.items():
        for s, (pos, chan) in by_id[gid].spaces.items():
            gone = pos[np.isin(chan, chans)]
            if len(gone):
                out[s] = np.union1d(out.get(s, np.zeros(0, np.int64)), gone)
    return out
