"""Sanity checks for the tiny ONNX test models in spa.testing.nets."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from spa.testing.nets import ALL


def _input(m, batch=2, seed=0):
    dims = [batch if d.dim_param else d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ALL))
def test_model_valid_and_runs(name):
    m = ALL[name]()
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version == 8
    assert [i.name for i in m.graph.input] == ["input"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": _input(m)})
    assert len(outs) == len(m.graph.output) >= 1
    for o, vi in zip(outs, m.graph.output):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert dims[0] == "N" and list(o.shape[1:]) == dims[1:]
        assert o.dtype == np.float32 and o.shape[0] == 2
        assert np.isfinite(o).all()
        assert np.ptp(o) > 1e-6, "output is constant"
        assert not np.allclose(o[0], o[1]), "output does not depend on the input"


@pytest.mark.parametrize("name", sorted(ALL))
def test_seeded(name):
    fn = ALL[name]
    assert fn(0).SerializeToString() == fn(0).SerializeToString()
    assert fn(0).SerializeToString() != fn(1).SerializeToString()
