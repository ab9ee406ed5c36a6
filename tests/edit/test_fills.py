"""A weightless model (every weight a ConstantOfShape fill, as in onnx's `light` zoo models)
stays small after a compensating prune: fills are not turned into dense tensors (#20)."""

import spa
from spa.testing import nets
from spa.testing.oracle import assert_oracle


def test_compensation_keeps_fills_small():
    model = nets.fill_style(0)
    r = spa.prune(model, ratio=0.3, criterion="obspa")
    assert r.updates and r.macs_reduction > 0.2  # the bias fold still runs
    assert all(kind != "weight" for kind, _, _ in r.updates)
    assert r.model.ByteSize() < 2 * model.ByteSize()
    assert_oracle(model, r)
