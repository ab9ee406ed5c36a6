"""Why a pruned file is larger than its input, in one line (issue #20: `spa prune` never
writes a larger file without saying why).

A model whose weights are ConstantOfShape fills (onnx's `light` zoo) stores no values, so
the few tensors compensation changes (a bias fold into a fill bias, a BatchNorm variance
rescaled per channel) become dense and outweigh what pruning removed; tiny files also gain
the provenance record and a shape constant per resized weight.
"""

from __future__ import annotations

import onnx

from ..report import human

NEW_BIAS = "_spa_bias"  # the suffix of biases compensation creates (edit.compensate, io.quant)


def growth_note(original: onnx.ModelProto, pruned: onnx.ModelProto, before: int, after: int) -> str | None:
    """One line naming what made `pruned` (`after` bytes) larger than `original` (`before`
    bytes), or None where it is not larger."""
    if after <= before or not before:
        return None
    fills = {o for n in original.graph.node if n.op_type == "ConstantOfShape" for o in n.output}
    dense = {}  # tensor name: bytes, for fills of the original stored with their values now
    for n in pruned.graph.node:
        if n.op_type == "Constant" and n.output and (n.output[0] in fills or n.output[0].endswith(NEW_BIAS)):
            dense[n.output[0]] = n.ByteSize()
    for t in pruned.graph.initializer:
        if t.name in fills or t.name.endswith(NEW_BIAS):
            dense[t.name] = t.ByteSize()
    made = sorted((k for k in dense if k in fills), key=lambda k: -dense[k])
    created = [k for k in dense if k not in fills]
    parts = []
    if made:
        names = ", ".join(made[:3]) + (f" and {len(made) - 3} more" if len(made) > 3 else "")
        parts.append(f"compensation stored {len(made)} weight fill(s) it changed as values ({names}: "
                     f"{human(sum(dense[k] for k in made))}B)")
    if created:
        parts.append(f"{len(created)} new bias(es) ({human(sum(dense[k] for k in created))}B)")
    rest = (after - before) - sum(dense.values())
    if rest > 0 or not parts:
        parts.append(f"the provenance record and shape constants (about {human(max(rest, 0))}B)")
    return f"the file grew by {human(after - before)}B ({human(before)}B -> {human(after)}B): " + "; ".join(parts)
