"""The sweep as a text table (stdout)."""

from __future__ import annotations

from ..report import table


def _f(x, spec):
    return "n/a" if x is None else format(x, spec)


def sweep_text(result) -> str:
    rows = []
    picked = set(v for v in result.picked.values() if v)
    for r in result.records:
        mark = "*" if r["id"] in picked else ""
        if r["status"] != "ok":
            rows.append([r["id"], "error", "", "", "", "", "", "", f"{r.get('stage')}: {r.get('error')}"])
            continue
        f, lat = r["fidelity"], r["latency"]
        rows.append([r["id"] + mark, "ok", f"-{r['macs_reduction']:.1%}", f"-{r['params_reduction']:.1%}",
                     _f(f["top1"], ".3f"), _f(f["cosine"], ".4f"), f"{lat['pruned_p50_ms']:.3f}",
                     f"{lat['ratio']:.3f}", ""])
    head = ["candidate", "status", "MACs", "params", "top-1", "cosine", "p50 ms", "lat ratio", "error"]
    lines = [table(rows, head), ""]
    lines.append(f"{len(result.records)} candidates: {len(result.ran)} run now, {len(result.reused)} reused from "
                 f"{result.out}/results.jsonl; report: {result.out}/report.html")
    if result.missing:
        lines.append(f"{len(result.missing)} unfinished: {', '.join(result.missing)}")
    if result.pick is not None and not result.missing:
        for m, rid in result.picked.items():
            lines.append(f"pick {result.pick}: {m}: " + (f"{rid} -> {result.out}/best/{m}.onnx" if rid else "none meets it"))
    return "\n".join(lines)
