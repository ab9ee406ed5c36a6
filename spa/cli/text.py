"""Text shown by `spa prune` and `spa analyze`."""

from __future__ import annotations

import json
import shutil
import textwrap
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
    notes += "".join(f"interface: {c.kind} {c.name} {list(c.old_shape)} -> {list(c.new_shape)}\n" for c in r.interface)
    if r.recovery is not None:
        notes += r.recovery.summary() + "\n"
    if r.latency is not None:
        notes += r.latency.summary() + "\n"
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


def analysis_text(an, verbose=False, width=None) -> str:
    """The groups of an Analysis, fitted to `width` columns (the terminal's by default):
    one row per group naming its first layers, and under a blocked group why, wrapped.
    `verbose`: every layer of every group."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    rows = []
    for g in an.groups:
        names = list(g.layers or g.members)
        rows.append([g.id, g.label or g.kind, g.channels, f"{g.macs_share * 100:.1f}%",
                     "prunable" if g.prunable else "blocked", names])
    header = ("id", "kind", "channels", "MACs", "status", "layers")
    fixed = sum(max(len(str(r[i])) for r in rows + [list(header)]) + 2 for i in range(5))
    room = max(width - fixed, 24)
    for r in rows:
        r[-1] = _layers(r[-1], room, verbose)
    lines = table(rows, header).splitlines()
    out = lines[:2]
    for g, line in zip(an.groups, lines[2:]):
        out.append(line)
        if verbose and len(g.layers) > 1:  # one layer a line under the row
            out += [" " * fixed + name for name in g.layers[1:]]
        if not g.prunable:
            out += textwrap.wrap(g.reason, width, initial_indent="    why: ", subsequent_indent="         ")
    head = (f"{an.model}: {len(an.groups)} groups, {len(an.prunable)} prunable; "
            f"{human(an.stats.params)} parameters, {human(an.stats.macs)} MACs")
    text = head + "\n\n" + "\n".join(out)
    if an.provenance:
        text += "\n\n" + provenance_text(an.provenance)
    if an.blocked_ops:
        text += "\n\nops without a rule (they block their channels): " + ", ".join(
            f"{op} x{n}" for op, n in an.blocked_ops)
    text += "".join(f"\nnote: {n}" for n in an.notes)
    return text


def _layers(names, room, verbose) -> str:
    """The first layer names that fit in `room` columns, long ones cut in the middle, and
    how many more (`verbose`: the first only; the rest go on lines of their own)."""
    if verbose:
        return names[0] if names else ""
    shown, used = [], 0
    for k, name in enumerate(names):
        more = f" +{len(names) - k - 1}" if k < len(names) - 1 else ""
        left = room - used - len(more) - (2 if shown else 0)
        if len(name) <= left or not shown:
            shown.append(_middle(name, max(left, 12)))
            used += len(shown[-1]) + (2 if len(shown) > 1 else 0)
            continue
        return ", ".join(shown) + f" +{len(names) - k}"
    return ", ".join(shown)


def _middle(text, n) -> str:
    """`text` cut to n characters in the middle, where long node names repeat themselves least."""
    if len(text) <= n:
        return text
    head = (n - 1) // 3
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]


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
