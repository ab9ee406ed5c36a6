"""Values known before run time: initializers, `Constant` nodes, `ConstantOfShape` fills."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .external import ExternalValues

MAX_ELEMENTS = 2 ** 28  # a run-time tensor larger than this (1 GiB of float32) is refused


def const_value(tensor) -> np.ndarray | None:
    """The value of a tensor known before run time, or None.

    Handles initializers, `Constant` node outputs and `ConstantOfShape` with a constant shape.
    """
    if isinstance(tensor, gs.Constant):
        return values_of(tensor)
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Constant":
        return constant_attr(node)
    if node.op == "ConstantOfShape" and isinstance(node.inputs[0], gs.Constant):
        fill = node.attrs.get("value")
        value = values_of(fill).reshape(-1)[0] if fill is not None else np.float32(0)
        shape = tuple(int(d) for d in values_of(node.inputs[0]).reshape(-1))
        if min(shape, default=0) < 0 or np.prod(shape, dtype=np.float64) > MAX_ELEMENTS:
            return None
        return np.full(shape, value, dtype=np.asarray(value).dtype)
    return None


def values_of(c: gs.Constant) -> np.ndarray:
    """A constant's values; external data comes as a fresh read-only memory map each time,
    so graphsurgeon keeps the lazy reference and the pages can be released."""
    v = c._values
    return v.load() if isinstance(v, ExternalValues) else c.values


def constant_attr(node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        return values_of(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None
