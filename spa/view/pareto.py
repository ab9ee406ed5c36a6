"""The sweep report (`spa sweep`, DIR/report.html): per model, fidelity against latency and
against MACs as SVG scatter plots drawn here in Python, the Pareto front of each, and a
table of every candidate. One self-contained page: inline style and script, no CDN. A click
on a point or a row shows the candidate's settings, figures and a link to its pruned file."""

from __future__ import annotations

import html
import json
import math

W, H, PAD = 440, 300, 48  # plot size and margin, px
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

CSS = """body{font:14px system-ui,sans-serif;margin:16px;color:#222}h2{margin:24px 0 4px}
.plots{display:flex;flex-wrap:wrap;gap:12px}svg{background:#fafafa;border:1px solid #ddd}
.pt{cursor:pointer;stroke:#fff;stroke-width:1}.pt.front{stroke:#000;stroke-width:1.5}.pt.sel{stroke:#f90;stroke-width:4}
.front-line{fill:none;stroke:#888;stroke-dasharray:4 3}.axis{stroke:#444}.tick{font-size:11px;fill:#555}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.sel{background:#ffe7c2}tr.row{cursor:pointer}
body{margin-right:400px}#detail{position:fixed;right:8px;top:8px;width:370px;max-height:92vh;overflow:auto;
background:#fff;border:1px solid #ccc;padding:8px;font-size:13px}
.legend span{display:inline-block;margin-right:12px}.err{color:#b00}"""

JS = """const data=JSON.parse(document.getElementById('sweep-data').textContent);
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function show(id){const r=data[id];if(!r)return;
document.querySelectorAll('.sel').forEach(e=>e.classList.remove('sel'));
document.querySelectorAll('[data-id="'+CSS.escape(id)+'"]').forEach(e=>e.classList.add('sel'));
let h='<b>'+esc(id)+'</b> ';
if(r.file)h+='<a class="file" href="'+esc(r.file)+'">'+esc(r.file)+'</a>';
h+='<table><tr><th>setting</th><th>value</th></tr>';
for(const [k,v] of Object.entries(r.rows))h+='<tr><td>'+esc(k)+'</td><td>'+esc(v)+'</td></tr>';
document.getElementById('detail').innerHTML=h+'</table>';}
document.querySelectorAll('[data-id]').forEach(e=>e.addEventListener('click',()=>show(e.dataset.id)));"""


def page(records, out_dir="") -> str:
    """The report page for sweep records (results.jsonl lines), links relative to the sweep folder."""
    models = sorted({r["model"] for r in records})
    crits = sorted({r["criterion"] for r in records})
    color = {c: COLORS[i % len(COLORS)] for i, c in enumerate(crits)}
    details = {r["id"]: {"file": r.get("file") if r["status"] == "ok" else None, "rows": _rows(r)} for r in records}
    body = [f"<h1>SPA sweep: {len(records)} candidate{'s' * (len(records) != 1)}, {len(models)} "
            f"model{'s' * (len(models) != 1)}</h1>",
            "<div class=\"legend\">" + "".join(f"<span style=\"color:{color[c]}\">&#9679; {html.escape(c)}</span>"
                                                for c in crits)
            + "<span>outlined: Pareto front</span><span>labels: r --ratio, m --target-macs, "
              "t --target-latency</span></div>",
            "<div id=\"detail\">Click a point or a row to see its settings and pruned file.</div>"]
    for m in models:
        mine = [r for r in records if r["model"] == m]
        ok = [r for r in mine if r["status"] == "ok"]
        metric = "top1" if ok and all(r["fidelity"]["top1"] is not None for r in ok) else "cosine"
        body.append(f"<section class=\"model\" data-model=\"{html.escape(m)}\"><h2>{html.escape(m)}</h2>")
        body.append("<div class=\"plots\">" + _plot(ok, metric, "latency", color) + _plot(ok, metric, "macs", color)
                    + "</div>")
        body.append(_table(mine))
        body.append("</section>")
    payload = json.dumps(details, sort_keys=True).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>SPA sweep</title>\n"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + f"\n<script type=\"application/json\" id=\"sweep-data\">{payload}</script>\n<script>{JS}</script>\n"
              "</body></html>\n")


def front(points) -> list:
    """Indices of the points (x: lower is better, y: higher is better) no other point beats
    on both, sorted by x."""
    keep = [i for i, (x, y) in enumerate(points)
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points)]
    return sorted(keep, key=lambda i: points[i])


def _x(r, axis):
    return r["latency"]["ratio"] if axis == "latency" else 1 - r["macs_reduction"]


def _plot(ok, metric, axis, color) -> str:
    label = "latency (pruned / original p50)" if axis == "latency" else "MACs (pruned / original)"
    pts = [(_x(r, axis), r["fidelity"][metric]) for r in ok]
    svg = [f"<svg class=\"plot\" data-axis=\"{axis}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" "
           "xmlns=\"http://www.w3.org/2000/svg\">"]
    if not pts:
        return svg[0] + f"<text x=\"{PAD}\" y=\"{H / 2}\">no candidate finished</text></svg>"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = _span(min(xs + [0.0]), max(xs + [1.0]))
    y0, y1 = _span(min(ys), max(ys + [1.0]))

    def sx(x):
        return PAD + (x - x0) / (x1 - x0) * (W - PAD - 12)

    def sy(y):
        return H - PAD - (y - y0) / (y1 - y0) * (H - PAD - 12)

    svg.append(f"<line class=\"axis\" x1=\"{PAD}\" y1=\"{H - PAD}\" x2=\"{W - 12}\" y2=\"{H - PAD}\"/>"
               f"<line class=\"axis\" x1=\"{PAD}\" y1=\"12\" x2=\"{PAD}\" y2=\"{H - PAD}\"/>")
    for tx in _ticks(x0, x1):
        svg.append(f"<text class=\"tick\" x=\"{sx(tx):.1f}\" y=\"{H - PAD + 14}\" text-anchor=\"middle\">{tx:g}</text>")
    for ty in _ticks(y0, y1):
        svg.append(f"<text class=\"tick\" x=\"{PAD - 4}\" y=\"{sy(ty) + 4:.1f}\" text-anchor=\"end\">{ty:g}</text>")
    svg.append(f"<text x=\"{(W + PAD) / 2}\" y=\"{H - 12}\" text-anchor=\"middle\">{label}</text>"
               f"<text x=\"14\" y=\"{(H - PAD) / 2}\" text-anchor=\"middle\" "
               f"transform=\"rotate(-90 14 {(H - PAD) / 2})\">{metric}</text>")
    on = front(pts)
    svg.append("<polyline class=\"front-line\" points=\""
               + " ".join(f"{sx(pts[i][0]):.1f},{sy(pts[i][1]):.1f}" for i in on) + "\"/>")
    for i, r in enumerate(ok):
        cls = "pt front" if i in on else "pt"
        svg.append(f"<circle class=\"{cls}\" data-id=\"{html.escape(r['id'])}\" cx=\"{sx(pts[i][0]):.1f}\" "
                   f"cy=\"{sy(pts[i][1]):.1f}\" r=\"6\" fill=\"{color[r['criterion']]}\"><title>"
                   f"{html.escape(r['id'])}: {metric} {pts[i][1]:.4f}, {axis} {pts[i][0]:.3f}</title></circle>"
                   f"<text class=\"tick\" x=\"{sx(pts[i][0]) + 8:.1f}\" y=\"{sy(pts[i][1]) - 7:.1f}\">"
                   f"{KNOB_LABELS.get(r['knob'], '')}{r['value']:g}</text>")
    return "".join(svg) + "</svg>"


KNOB_LABELS = {"ratio": "r", "target_macs": "m", "target_latency": "t"}


def _ticks(lo, hi, most=6) -> list:
    """Round values between lo and hi, at most `most` of them (steps of 1, 2, 2.5 or 5 x 10^k)."""
    span = hi - lo
    for k in range(-4, 3):
        for m in (1, 2, 2.5, 5):
            step = m * 10.0 ** k
            if span / step <= most:
                first = math.ceil(lo / step - 1e-9)
                return [round((first + i) * step, 6) for i in range(int(span / step) + 1)
                        if (first + i) * step <= hi + 1e-9]
    return [lo, hi]


def _span(lo, hi):
    pad = (hi - lo) * 0.05 or 0.01
    return lo - pad, hi + pad


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def _table(records) -> str:
    head = ("candidate", "MACs", "params", "top-1", "cosine", "latency ratio", "p50 ms", "node", "file")
    rows = []
    for r in records:
        rid = html.escape(r["id"])
        if r["status"] != "ok":
            rows.append(f"<tr class=\"row\" data-id=\"{rid}\"><td>{rid}</td><td class=\"err\" colspan=\"8\">"
                        f"{html.escape(str(r.get('stage')))}: {html.escape(str(r.get('error')))}</td></tr>")
            continue
        f, lat = r["fidelity"], r["latency"]
        node = r.get("node", {})
        rows.append(f"<tr class=\"row\" data-id=\"{rid}\"><td>{rid}</td><td>-{r['macs_reduction']:.1%}</td>"
                    f"<td>-{r['params_reduction']:.1%}</td><td>{_fmt(f['top1'], '.3f')}</td>"
                    f"<td>{_fmt(f['cosine'], '.4f')}</td><td>{lat['ratio']:.3f}</td><td>{lat['pruned_p50_ms']:.3f}</td>"
                    f"<td>{html.escape(str(node.get('ray_node', node.get('host', '')))[:12])}</td>"
                    f"<td><a href=\"{html.escape(r['file'])}\">{html.escape(r['file'])}</a></td></tr>")
    return ("<table class=\"candidates\"><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def _rows(r) -> dict:
    """What the detail panel lists for one candidate."""
    out = {"model": r["source"], r["knob"]: r["value"], "criterion": r["criterion"]}
    out.update({k: v for k, v in r["settings"].items() if v not in (None, [], ())})
    if r["status"] != "ok":
        out["error"] = f"{r.get('stage')}: {r.get('error')}"
        return out
    f, lat = r["fidelity"], r["latency"]
    out.update({"criterion used": r["used_criterion"], "MACs": f"{r['before']['macs']} -> {r['after']['macs']}",
                "params": f"{r['before']['params']} -> {r['after']['params']}",
                "file size": f"{r['before']['file_size']} -> {r['after']['file_size']}",
                "top-1": _fmt(f["top1"], ".4f"), "cosine": _fmt(f["cosine"], ".6f"),
                "max abs": _fmt(f["max_abs"], ".3g"), "fidelity inputs": f"{f['samples']} samples, {f['inputs']}",
                "latency": f"{lat['pruned_p50_ms']:.3f} ms vs {lat['original_p50_ms']:.3f} ms (x{lat['ratio']:.3f}) "
                           f"at batch {lat['batch']}",
                "node": json.dumps(r.get("node", {}), sort_keys=True),
                "time": f"{r['timings'].get('total_s', 0):.1f} s"})
    return out
