"""The masked-equivalence oracle, shared by tests."""

import numpy as np

import spa
from spa.runtime import random_inputs, run


def feeds_for(model, batch=2, seed=1):
    shapes = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else batch for d in dims)
    return random_inputs(model, shapes, seed)


def assert_oracle(model, result, rtol=1e-4, atol=1e-5):
    """Pruned outputs equal the masked original's, and differ from the unmasked original's."""
    feeds = feeds_for(model)
    masked = run(spa.masked(model, result.sinks, result.updates), feeds)
    pruned = run(result.model, feeds)
    original = run(model, feeds)
    changed = False
    for name, want in masked.items():
        assert np.all(np.isfinite(want)), f"{name}: non-finite outputs make the comparison meaningless"
        scale = float(np.max(np.abs(want))) or 1.0
        np.testing.assert_allclose(pruned[name], want, rtol=rtol, atol=atol * scale, err_msg=name)
        changed |= not np.allclose(original[name], want, rtol=rtol, atol=atol * scale)
    assert changed, "masking changed no output: the oracle would pass vacuously"
