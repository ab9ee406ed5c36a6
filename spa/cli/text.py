"""Text shown by `spa prune` and `spa analyze`."""

from __future__ import annotations

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
    checks = ("verified: checker, onnxruntime run, outputs unchanged, deterministic" if r.verdict.checker
              else "not verified")
    notes = "".join(f"note: {n}\n" for n in r.notes)
    if r.recovery is not None:
        notes += r.recovery.summary() + "\n"
    return f"{out}\n\ncriterion: {r.criterion}\n{notes}{checks}\nwrote {where}"


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
    if an.blocked_ops:
        text += "\n\nops without a rule (they block their channels): " + ", ".join(
            f"{op} x{n}" for op, n in an.blocked_ops)
    return text
