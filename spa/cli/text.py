"""Text shown by `spa prune` and `spa analyze`."""

from __future__ import annotations

import json
from collections import Counter

from ..report import human, table


def prune_text(r) -> str:
    def pct(a, b):
        return f"{(b / a - 1) * 100:+.1f}%" if a else "n/a"

    b, a = r.before, r.after
    rows = [
        ("parameters", human(b.params), human(a.params), pct(b.params, a.params)),
        ("MACs", human(b.macs), human(a.macs), pct(b.macs, a.macs)),
        ("file size", human(b.file_size) + "B", human(a.file_size) + "B", pct(b.file_size, a.file_size)),
        ("groups pruned", "", f"{len(r.changes)} of {r.prunable} prunable", ""),
        ("groups blocked", "", str(r.blocked), ""),
    ]
    out = table(rows, ("", "before", "after", "change"))
    where = r.output or "(not written)"
    notes = "".join(f"note: {n}\n" for n in r.notes)
    if r.recovery is not None:
        notes += r.recovery.summary() + "\n"
    took = sum(r.timings.values())
    stages = ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items() if v >= 0.05)
    return (f"{out}\n\ncriterion: {r.criterion}\nchannels: {changes_text(r.changes)}\n{notes}"
            f"{verdict_text(r.verdict)}\ntook {took:.1f} s" + (f" ({stages})" if stages else "") + f"\nwrote {where}")


def changes_text(changes, limit=8) -> str:
    """Per-group channel counts, alike ones together: `256→176 ×13, 64→48 ×3`."""
    counts = Counter((c.before, c.after) for c in changes)
    parts = [f"{b}→{a}" + (f" ×{n}" if n > 1 else "") for (b, a), n in
             sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0][0]))]
    return ", ".join(parts[:limit]) + (f", ... ({len(parts) - limit} more)" if len(parts) > limit else "")


def verdict_text(v) -> str:
    """What verification checked, and the fidelity it measured."""
    if not v.checker:
        return "not verified"
    text = ("verified: onnx.checker (full check), onnxruntime runs it twice with identical results, the outputs "
            "keep their names, shapes and types\n"
            f"fidelity on {v.samples} sample{'s' if v.samples != 1 else ''}, {v.inputs}:")
    rows = [(f.name, fmt(f.cosine, ".4f"), fmt(f.max_abs, ".3g"), fmt(f.mean_abs, ".3g"),
             "" if f.top1 is None else f"{f.top1:.1%}", f.note) for f in v.fidelity]
    lines = table(rows, ("output", "cosine", "max abs", "mean abs", "top-1 agreement", "note")).splitlines()
    return text + "\n" + "\n".join("  " + line for line in lines)


def fmt(x, spec) -> str:
    return "n/a" if x is None else format(x, spec)


def analysis_text(an, verbose=False) -> str:
    rows = []
    for g in an.groups:
        members = ", ".join(g.members[:3]) + (f" +{len(g.members) - 3}" if len(g.members) > 3 else "")
        status = "prunable" if g.prunable else "blocked"
        rows.append((g.id, g.kind, g.channels, f"{g.macs_share * 100:.1f}%", status, members,
                     "" if g.prunable else g.reason))
    head = (f"{an.model}: {len(an.groups)} groups, {len(an.prunable)} prunable; "
            f"{human(an.stats.params)} parameters, {human(an.stats.macs)} MACs")
    text = head + "\n\n" + table(rows, ("id", "kind", "channels", "MACs", "status", "members", "reason"))
    if an.provenance:
        text += "\n\n" + provenance_text(an.provenance)
    if an.blocked_ops:
        text += "\n\nops without a rule (they block their channels): " + ", ".join(
            f"{op} x{n}" for op, n in an.blocked_ops)
    return text


def provenance_text(p: dict) -> str:
    """What SPA recorded in a model it pruned (metadata_props)."""
    def figures(key):
        try:
            d = json.loads(p.get(key, ""))
            return f"{human(d['params'])} parameters, {human(d['macs'])} MACs"
        except (ValueError, KeyError, TypeError):
            return p.get(key, "?")

    try:
        settings = json.loads(p.get("settings", "{}"))
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if not (v is None or v is False or v == [] or v == {}))
    except ValueError:
        shown = p.get("settings", "")
    return (f"pruned by SPA {p.get('version', '?')} from {p.get('source', '?')} with criterion "
            f"{p.get('criterion', '?')}: {figures('before')} -> {figures('after')}\nsettings: {shown}")
