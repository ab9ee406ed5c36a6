"""Results -> text tables or JSON."""

from __future__ import annotations

import importlib.metadata
import json
import os


def human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}P"


def table(rows, header) -> str:
    rows = [[str(c) for c in r] for r in [header] + list(rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


# -- provenance: what a prune did, recorded in the pruned model's metadata_props ---------------
PROVENANCE = "spa.prune."  # key prefix; a later prune replaces these entries


def version() -> str:
    try:
        return importlib.metadata.version("spa-prune")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def provenance(source: str, settings: dict, criterion: str, before, after) -> dict:
    """{key: text} for a pruned model's metadata_props: SPA's version, the model it came
    from (file name), the settings, the criterion, and params and MACs before and after
    (Stats). Deterministic: the same prune writes the same entries."""
    def figures(s):
        return json.dumps({"params": s.params, "macs": s.macs})

    return {PROVENANCE + "version": version(), PROVENANCE + "source": os.path.basename(source),
            PROVENANCE + "settings": json.dumps(settings, sort_keys=True, default=str),
            PROVENANCE + "criterion": criterion, PROVENANCE + "before": figures(before),
            PROVENANCE + "after": figures(after)}


def stamp(proto, entries: dict):
    """Write `entries` into proto.metadata_props, replacing earlier provenance entries."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PROVENANCE)]
    del proto.metadata_props[:]
    for key, value in kept + sorted(entries.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_provenance(proto) -> dict:
    """The provenance entries of a model, without the key prefix ({} when SPA did not prune it)."""
    return {p.key[len(PROVENANCE):]: p.value for p in proto.metadata_props if p.key.startswith(PROVENANCE)}
