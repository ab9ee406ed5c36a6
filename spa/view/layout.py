"""A layered drawing of an ONNX graph, computed in Python: each node on the layer of its
longest path from the inputs, ordered within its layer by the mean position of its
predecessors (one downward sweep of the barycenter heuristic)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import onnx

SKIP = {"Constant"}  # drawn as weights are: not at all
NODE_W, NODE_H, GAP_X, GAP_Y = 150, 26, 24, 22


@dataclass(frozen=True)
class Box:
    """One node of the drawing."""

    index: int
    name: str
    op: str
    x: float
    y: float


def node_graph(proto: onnx.ModelProto) -> nx.DiGraph:
    """A DiGraph over node indices: an edge where one node's output feeds another. Each
    node has `name` (its name, or `op_index` when it has none) and `op`."""
    g = nx.DiGraph()
    producer = {}
    for k, node in enumerate(proto.graph.node):
        if node.op_type in SKIP:
            continue
        g.add_node(k, name=node.name or f"{node.op_type}_{k}", op=node.op_type)
        for out in node.output:
            if out:
                producer[out] = k
    for k, node in enumerate(proto.graph.node):
        if k not in g:
            continue
        for name in node.input:
            if name in producer and producer[name] != k:
                g.add_edge(producer[name], k)
    return g


def layout(g: nx.DiGraph) -> list:
    """A Box per node of `g` (see node_graph), layer by layer from the top."""
    if not nx.is_directed_acyclic_graph(g):  # a valid model never is; draw it in file order
        return [Box(k, d["name"], d["op"], 0.0, i * (NODE_H + GAP_Y)) for i, (k, d) in enumerate(g.nodes(data=True))]
    depth = {}
    for k in nx.topological_sort(g):
        depth[k] = max((depth[p] + 1 for p in g.predecessors(k)), default=0)
    layers: dict = {}
    for k in g.nodes:  # file order: ties keep the exporter's order
        layers.setdefault(depth[k], []).append(k)
    pos, boxes = {}, []
    for d in sorted(layers):
        row = layers[d]
        if d:
            row.sort(key=lambda k: _barycenter(g, k, pos))
        start = -(len(row) - 1) / 2
        for i, k in enumerate(row):
            pos[k] = start + i
    lo = min(pos.values(), default=0)
    for k in g.nodes:
        boxes.append(Box(k, g.nodes[k]["name"], g.nodes[k]["op"], (pos[k] - lo) * (NODE_W + GAP_X),
                         depth[k] * (NODE_H + GAP_Y)))
    return boxes


def _barycenter(g, k, pos) -> float:
    placed = [pos[p] for p in g.predecessors(k) if p in pos]
    return sum(placed) / len(placed) if placed else 0.0
