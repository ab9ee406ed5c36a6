"""The channel dependency graph: a networkx MultiGraph of spaces (tensor, axis).

Nodes carry `size`, `param` (the tensor is a constant), `weight` (a floating-point
constant), `computed` (computed in the graph from constants alone: a weight standardised
at run time; it has a role but is never sliced, its parameters are), `role` (see rules.base.ROLES), `lossy` (a norm mixes its channels), `tag`
and `blockers` (reasons this space cannot be pruned). Each edge is one rule link with
index arrays `ia`/`ib`: element ia[k] of space `a` goes with ib[k] of the other end
(networkx does not keep the order of an edge's ends, so `a` records it).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

import networkx as nx
import onnx_graphsurgeon as gs

from ..io import Model
from ..rules import Ctx, Flow, rule_for


@dataclass
class ChannelGraph:
    model: Model
    ctx: Ctx
    g: nx.MultiGraph
    flows: list  # (gs node, rule or None, Flow) in graph order
    same: list  # (space a, space b, factor, reason): b must keep factor times a's elements

    def copy(self) -> "ChannelGraph":
        """The same channel graph over a copy of the model's graph (weights shared until
        replaced): compensation and rewrite edit a copy, so this one can plan again."""
        graph = self.model.graph.copy()
        model = replace(self.model, graph=graph)
        flows = [(node, rule, flow) for node, (_, rule, flow) in zip(graph.nodes, self.flows)]
        return ChannelGraph(model, Ctx(model, self.ctx.inner), self.g, flows, self.same)


INTERFACE = "SPA keeps the model's interface; --allow-interface-change lets it change"


def interface_allowed(interface, name) -> bool:
    """Whether graph input or output `name` may change: `interface` is a bool, or glob
    patterns of the names that may."""
    if isinstance(interface, bool) or interface is None:
        return bool(interface)
    return any(fnmatch.fnmatchcase(name, p) for p in interface)


def build(model: Model, inner: bool = False, interface=False) -> ChannelGraph:
    """Run every node's rule and collect links, roles and blockers (`inner`: see Ctx;
    `interface`: graph inputs and outputs that may change, see interface_allowed)."""
    ctx = Ctx(model, inner)
    g = nx.MultiGraph()
    flows = []
    for node in model.graph.nodes:
        rule = rule_for(node)
        flow = Flow(node, ctx)
        if rule is not None:
            rule.couple(node, flow)
        flows.append((node, rule, flow))
        for sa, sb, ia, ib in flow.links:
            for s in (sa, sb):
                _add_space(g, ctx, s)
            g.add_edge(sa, sb, a=sa, ia=ia, ib=ib, node=node.name)
    for node, rule, flow in flows:
        _block_untouched(g, ctx, node, rule, flow)
        for s, role in flow.roles.items():
            if s in g and (g.nodes[s]["param"] or g.nodes[s]["computed"]):
                g.nodes[s]["role"] = role
        for s in flow.lossy & set(g.nodes):
            g.nodes[s]["lossy"] = True
        for s, tag in flow.tags.items():
            if s in g:
                g.nodes[s]["tag"] = tag
    for t, where in [(t, "graph input") for t in model.graph.inputs] + \
                    [(t, "graph output") for t in model.graph.outputs]:
        if interface_allowed(interface, t.name):
            continue
        for axis in range(ctx.rank(t) or 0):
            if (t.name, axis) in g:
                g.nodes[(t.name, axis)]["blockers"].append(f"'{t.name}' is a {where} ({INTERFACE})")
    same = [c for _, _, flow in flows for c in flow.same]
    return ChannelGraph(model, ctx, g, flows, same)


def _add_space(g, ctx, s):
    if s in g:
        return
    name, axis = s
    t = ctx.tensors[name]
    value = ctx.const(t)
    g.add_node(s, size=ctx.dim(t, axis), param=value is not None,
               weight=value is not None and value.dtype.kind == "f", role=None, blockers=[],
               lossy=False, tag=None, computed=ctx.computed(t))


def _block_untouched(g, ctx, node, rule, flow):
    """Every existing space of a node's tensors that its rule does not handle is blocked."""
    for t in _touched(node):
        for axis in range(ctx.rank(t) or 0):
            s = (t.name, axis)
            if s not in g or s in flow.handled:
                continue
            if rule is None:
                why = (f"no rule for op {node.op} (node '{node.name}'): a rule in spa/rules/ would unblock it "
                       "(checklist in spa/rules/base.py)")
            elif s in flow.reasons:
                why = f"{flow.reasons[s]} (node '{node.name}')"
            else:
                why = f"{node.op} '{node.name}' does not pass axis {axis} of '{t.name}' (its rule cannot)"
            g.nodes[s]["blockers"].append(why)


def _touched(node):
    """Inputs, outputs and any outer tensor a subgraph of the node reads."""
    seen = {t.name: t for t in list(node.inputs) + list(node.outputs) if t.name}
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            inner = {t.name for n in value.nodes for t in n.outputs} | {t.name for t in value.inputs}
            for n in value.nodes:
                for t in _touched(n):
                    if t.name not in inner and t.name not in seen:
                        seen[t.name] = t
    return list(seen.values())
