"""The masked-equivalence oracle: a pruned model's outputs equal those of the original
with the removed channels zeroed (spa.masked), and the masking changed something.
"""

from __future__ import annotations

import numpy as np

import spa
from spa.edit import adapt_feeds, adapt_outputs, mask_feeds
from spa.runtime import random_inputs, run


def feeds(model, batch=2, seed=1):
    """Seeded inputs for every graph input; symbolic dims take `batch`."""
    shapes = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else batch for d in dims)
    return random_inputs(model, shapes, seed)


def assert_oracle(model, result, rtol=1e-4, atol=1e-5, scaled=True):
    """Pruned outputs equal the masked original's, and differ from the unmasked original's;
    `scaled`: atol is relative to the largest masked output (else absolute). Where the
    prune changed the interface, the pruned model is fed the inputs with the removed elements
    dropped (the masked original: with them zeroed), and both originals' changed outputs
    are compared at the kept elements."""
    x = feeds(model)
    masked_x = mask_feeds(result.interface, x)
    masked = adapt_outputs(result.interface, run(spa.masked(model, result.sinks, result.updates), masked_x))
    pruned = run(result.model, adapt_feeds(result.interface, x))
    original = adapt_outputs(result.interface, run(model, x))
    changed = False
    for name, want in masked.items():
        assert np.all(np.isfinite(want)), f"{name}: non-finite outputs make the comparison meaningless"
        scale = (float(np.max(np.abs(want))) or 1.0) if scaled else 1.0
        np.testing.assert_allclose(pruned[name], want, rtol=rtol, atol=atol * scale, err_msg=name)
        changed |= not np.allclose(original[name], want, rtol=rtol, atol=atol * scale)
    assert changed, "masking changed no output: the oracle would pass vacuously"


def check_oracle(model, ratio=0.3, rtol=1e-4, atol=1e-5, **prune_kwargs):
    """Prune (seed 0, round_to 1 unless given), assert the oracle with an absolute atol (as
    the rule tests always did), return the PruneResult."""
    prune_kwargs.setdefault("seed", 0)
    prune_kwargs.setdefault("round_to", 1)  # rule tests check exact channel counts
    result = spa.prune(model, ratio=ratio, **prune_kwargs)
    assert result.changes, "nothing was pruned"
    assert_oracle(model, result, rtol, atol, scaled=False)
    return result
