"""Changes to the graph's interface (--allow-interface-change): which graph inputs and
outputs lose elements, and how to feed and read the pruned model like the original.

A changed input takes the original's array with the removed elements dropped; a changed
output equals the original's (or the masked original's) with them dropped.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from ..protos import graph_inputs
from ..results import InterfaceChange


def interface_changes(proto, keep: dict) -> tuple:
    """One InterfaceChange per graph input or output that `keep` ({(tensor, axis): kept
    indices}) shrinks, inputs first, in declaration order."""
    out = []
    for kind, vis in (("input", graph_inputs(proto)), ("output", proto.graph.output)):
        for vi in vis:
            dims = vi.type.tensor_type.shape.dim
            kept = {a: tuple(int(i) for i in keep[(vi.name, a)]) for a in range(len(dims)) if (vi.name, a) in keep}
            if not kept:
                continue
            old = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
            new = tuple(len(kept[a]) if a in kept else d for a, d in enumerate(old))
            out.append(InterfaceChange(vi.name, kind, old, new, kept))
    return tuple(out)


def resized(changes) -> dict:
    """{(tensor, axis): new size} of every changed axis."""
    return {(c.name, a): len(idx) for c in changes for a, idx in c.kept.items()}


def with_sizes(vi, sizes: dict):
    """A declared graph input or output (ValueInfoProto) with its axes in `sizes`
    ({(tensor, axis): new size}) at their new sizes; a symbolic dim stays symbolic."""
    dims = vi.type.tensor_type.shape.dim
    if not any((vi.name, a) in sizes for a in range(len(dims))):
        return vi
    vi = copy.deepcopy(vi)
    for a, d in enumerate(vi.type.tensor_type.shape.dim):
        if (vi.name, a) in sizes and d.HasField("dim_value"):
            d.dim_value = sizes[(vi.name, a)]
    return vi


def _take(array, change):
    for axis, idx in change.kept.items():
        array = np.take(array, np.asarray(idx, dtype=np.int64), axis=axis)
    return array


def adapt_feeds(changes, feeds: dict) -> dict:
    """The original's inputs as the pruned model takes them (changed inputs sliced)."""
    cut = {c.name: c for c in changes if c.kind == "input"}
    return {k: _take(v, cut[k]) if k in cut else v for k, v in feeds.items()}


def mask_feeds(changes, feeds: dict) -> dict:
    """The original's inputs with the elements a changed input loses zeroed: what the masked
    original (spa.masked) is fed, since the pruned model never sees them."""
    out = dict(feeds)
    for c in changes:
        if c.kind != "input" or c.name not in out:
            continue
        value = np.array(out[c.name])
        for axis, idx in c.kept.items():
            index = [slice(None)] * value.ndim
            index[axis] = np.setdiff1d(np.arange(value.shape[axis]), idx)
            value[tuple(index)] = 0
        out[c.name] = value
    return out


def adapt_outputs(changes, outputs: dict) -> dict:
    """The original's outputs as the pruned model should give them (changed outputs sliced)."""
    cut = {c.name: c for c in changes if c.kind == "output"}
    return {k: _take(v, cut[k]) if k in cut and isinstance(v, np.ndarray) else v for k, v in outputs.items()}


def adapt_shapes(changes, shapes: dict) -> dict:
    """Concrete input shapes {name: shape} as the pruned model takes them."""
    sizes = resized(changes)
    return {k: tuple(sizes.get((k, a), d) for a, d in enumerate(v)) for k, v in shapes.items()}


def sidecar_path(output: str) -> str:
    """Where the interface description of a written model goes: <output stem>.interface.json."""
    stem = output[:-5] if output.lower().endswith(".onnx") else output
    return stem + ".interface.json"


def sidecar(changes) -> str:
    """The JSON a consumer of the pruned model reads: each changed input and output, its
    old and new shape, and the kept indices of each changed axis."""
    rows = {"inputs": [], "outputs": []}
    for c in changes:
        rows[c.kind + "s"].append({"name": c.name, "old_shape": list(c.old_shape), "new_shape": list(c.new_shape),
                                   "kept": {str(a): list(idx) for a, idx in c.kept.items()}})
    return json.dumps(rows, indent=1) + "\n"
