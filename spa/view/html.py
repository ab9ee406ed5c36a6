"""One self-contained HTML page (no CDN, works offline) showing a model's graph with its
coupled channel groups coloured: `spa analyze --html`, and `spa prune --report` with each
group before and after, the fidelity and the timings."""

from __future__ import annotations

import html
import json
import os
import tempfile

import onnx

from ..report import human
from .assets import CSS, JS
from .layout import NODE_H, NODE_W, layout, node_graph

BLOCKED = "#d0d0d0"


def page(model, analysis, result=None) -> str:
    """The HTML page for an Analysis of `model`, and of its prune when `result` is given.

    Args:
        model: the analysed model: a path or an onnx.ModelProto (external data is not read).
        analysis: spa.analyze's Analysis of it.
        result: spa.prune's PruneResult for the report of a prune, or None.

    Returns:
        The page as text.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    data = view_data(proto, analysis, result)
    title = os.path.basename(analysis.model) + (" pruned" if result is not None else " groups")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>SPA: {html.escape(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
            f"<div id=\"side\"><div id=\"head\">{_head(analysis, result)}"
            "<input id=\"search\" type=\"search\" placeholder=\"search node names\"><div id=\"found\"></div></div>\n"
            "<ul id=\"groups\"></ul><div id=\"detail\">Click a group to see its members, or a node.</div></div>\n"
            "<div id=\"canvas\"></div>\n"
            f"<script type=\"application/json\" id=\"spa-data\">{payload}</script>\n<script>{JS}</script>\n"
            "</body></html>\n")


def write(path, text: str):
    """Write the page through a temporary file and a rename."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)) or ".", suffix=".spa.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def view_data(proto, analysis, result=None) -> dict:
    """What the page's script draws: node boxes and edges, groups with their colour and
    node indices, and for a prune the channels each group keeps."""
    g = node_graph(proto)
    boxes = layout(g)
    index = {box.name: i for i, box in enumerate(boxes)}
    after = {c.id: c.after for c in result.changes} if result is not None else {}
    groups = []
    for gr in analysis.groups:
        nodes = sorted({index[n] for n in gr.nodes if n in index})
        groups.append({"id": gr.id, "kind": gr.kind, "label": gr.label or gr.kind, "channels": gr.channels,
                       "macs_share": gr.macs_share, "prunable": gr.prunable, "reason": gr.reason,
                       "layers": list(gr.layers), "members": list(gr.members), "nodes": nodes,
                       "after": after.get(gr.id, gr.channels if result is not None else None),
                       "color": _color(gr.id) if gr.prunable else BLOCKED})
    owner = _owners(proto, analysis, boxes)
    nodes = [{"name": b.name, "op": b.op, "short": _short(b.name, b.op), "x": b.x, "y": b.y,
              "group": owner.get(b.name)} for b in boxes]
    position = {box.index: i for i, box in enumerate(boxes)}
    edges = [[position[a], position[b]] for a, b in g.edges]
    return {"box": [NODE_W, NODE_H], "nodes": nodes, "edges": edges, "groups": groups}


def _owners(proto, analysis, boxes) -> dict:
    """{node name: the group it is coloured by}: the group of its output channels where a
    parameter says (axis 0 of a conv weight, a bias or a norm's scale; axis 1 of a MatMul
    weight), else the first group that touches it."""
    out_axis = {"0": {}, "1": {}}
    for gr in analysis.groups:
        for m in gr.members:
            tensor, _, axis = m.rpartition("[")
            if axis[:-1] in out_axis:
                out_axis[axis[:-1]].setdefault(tensor, gr.id)
    touching = {}
    for gr in analysis.groups:
        for n in gr.nodes:
            touching.setdefault(n, gr.id)
    names = {box.index: box.name for box in boxes}
    out = {}
    for k, node in enumerate(proto.graph.node):
        name = names.get(k)
        if name is None:
            continue
        owners = out_axis["1" if node.op_type == "MatMul" else "0"]
        own = next((owners[t] for t in node.input[1:] if t in owners), None)
        out[name] = own if own is not None else touching.get(name)
    return out


def _color(gid: int) -> str:
    return f"hsl({gid * 137.508 % 360:.0f}, 65%, 72%)"


def _short(name: str, op: str) -> str:
    """The distinctive part of a node name: `/layer1/layer1.0/conv1/Conv` -> `layer1.0/conv1`."""
    parts = [p for p in name.split("/") if p and p != op]
    text = "/".join(parts[-2:]) if parts else ""
    room = 22 - len(op)
    return text if len(text) <= room else "…" + text[-(room - 1):] if room > 4 else ""


def _head(analysis, result) -> str:
    """The page's heading: the model, its figures and, for a prune, what it did."""
    a = analysis
    out = [f"<h1>{html.escape(a.model)}</h1>",
           f"<div>{len(a.groups)} groups, {len(a.prunable)} prunable; {human(a.stats.params)} parameters, "
           f"{human(a.stats.macs)} MACs</div>"]
    if a.provenance:
        out.append(f"<div>pruned by SPA {html.escape(a.provenance.get('version', '?'))} with criterion "
                   f"{html.escape(a.provenance.get('criterion', '?'))}</div>")
    if a.blocked_ops:
        out.append("<div>ops without a rule: " + html.escape(", ".join(f"{op} x{n}" for op, n in a.blocked_ops))
                   + "</div>")
    if result is None:
        return "".join(out)
    b, r = result.before, result.after
    rows = [("parameters", human(b.params), human(r.params)), ("MACs", human(b.macs), human(r.macs)),
            ("file size", human(b.file_size) + "B", human(r.file_size) + "B")]
    out.append("<table id=\"stats\"><tr><th></th><th>before</th><th>after</th></tr>"
               + "".join(f"<tr><td>{k}</td><td>{x}</td><td>{y}</td></tr>" for k, x, y in rows) + "</table>")
    out.append(f"<div>criterion {html.escape(result.criterion)}; {len(result.changes)} groups pruned; "
               f"MACs -{result.macs_reduction:.1%}</div>")
    out.append(_fidelity(result.verdict))
    took = sum(result.timings.values())
    out.append(f"<div id=\"timings\">took {took:.1f} s: "
               + html.escape(", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())) + "</div>")
    out += [f"<div>note: {html.escape(n)}</div>" for n in result.notes]
    return "".join(out)


def _fidelity(v) -> str:
    if not v.checker:
        return "<div>not verified</div>"

    def cell(x, spec):
        return "n/a" if x is None else format(x, spec)

    rows = "".join(f"<tr><td>{html.escape(f.name)}</td><td>{cell(f.cosine, '.4f')}</td><td>{cell(f.max_abs, '.3g')}"
                   f"</td><td>{'' if f.top1 is None else format(f.top1, '.1%')}</td></tr>" for f in v.fidelity)
    return (f"<div>fidelity on {v.samples} samples, {html.escape(v.inputs)}:</div><table id=\"fidelity\">"
            f"<tr><th>output</th><th>cosine</th><th>max abs</th><th>top-1</th></tr>{rows}</table>")
