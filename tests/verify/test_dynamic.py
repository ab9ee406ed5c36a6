"""Dynamic input dims that strided layers hide: a width of 1 and of 2 both give one
time step after three stride-2 convolutions, so shape arithmetic that follows the width
must not be folded into constants at those sizes (as in OCR models: CNN, then a Reshape
to time steps)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.errors import VerifyError
from spa.runtime import random_inputs, run
from spa.verify import verify


def ocr_like(frozen=False, seed=0):
    """[1, 3, 8, W] -> three stride-(1, 2) convs -> [T, 1, 16*8] -> MatMul -> [T, 1, 10]
    with T = ceil(W / 8) read at run time; `frozen` writes the Reshape target for T = 1."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "x"
    for k, cin in enumerate((3, 16, 16)):
        inits += [numpy_helper.from_array(rng.standard_normal((16, cin, 3, 3)).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"b{k}")]
        nodes += [helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], pads=[1, 1, 1, 1], strides=[1, 2]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        x = f"r{k}"
    nodes.append(helper.make_node("Transpose", [x], ["t"], perm=[3, 0, 1, 2]))
    inits += [numpy_helper.from_array(np.array([1, -1], np.int64), "rest"),
              numpy_helper.from_array(np.array(3, np.int64), "at"),
              numpy_helper.from_array(rng.standard_normal((128, 10)).astype(np.float32), "fc")]
    if frozen:
        inits.append(numpy_helper.from_array(np.array([1, 1, -1], np.int64), "target"))
    else:
        nodes += [helper.make_node("Shape", [x], ["shape"]),
                  helper.make_node("Gather", ["shape", "at"], ["steps"], axis=0),
                  helper.make_node("Unsqueeze", ["steps", "zero"], ["steps1"]),
                  helper.make_node("Concat", ["steps1", "rest"], ["target"], axis=0)]
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    nodes += [helper.make_node("Reshape", ["t", "target"], ["flat"]),
              helper.make_node("MatMul", ["flat", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "ocr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("criterion", ["l2", "obspa"])
def test_width_hidden_by_strides_stays_dynamic(criterion):
    original = ocr_like()
    res = spa.prune(original, ratio=0.5, criterion=criterion)
    assert any(c.after < c.before for c in res.changes)
    for width in (1, 8, 24, 64, 100):
        x = np.random.default_rng(width).standard_normal((1, 3, 8, width)).astype(np.float32)
        want, got = run(original, {"x": x})["y"], run(res.model, {"x": x})["y"]
        assert got.shape == want.shape == (-(-width // 8), 1, 10)
        masked = run(spa.masked(original, res.sinks, res.updates), {"x": x})["y"]
        np.testing.assert_allclose(got, masked, rtol=1e-4, atol=1e-4 * np.abs(masked).max())


def test_verify_runs_the_pruned_model_at_other_sizes():
    original, frozen = ocr_like(), ocr_like(frozen=True)
    small = random_inputs(original, {"x": (1, 3, 8, 1)})
    verify(original, frozen, small)  # at width 1 the frozen target is right
    with pytest.raises(VerifyError, match="other input sizes"):
        verify(original, frozen, small, probe=random_inputs(original, {"x": (1, 3, 8, 65)}))
    verify(original, original, small, probe=random_inputs(original, {"x": (1, 3, 8, 65)}))


def test_a_model_that_only_takes_its_own_size_still_prunes():
    """Growing the width breaks this model (a fixed-size Reshape): the second probe is
    skipped, and the width counts as dynamic by the first alone."""
    m = ocr_like(frozen=True)
    onnx.checker.check_model(m, full_check=True)
    res = spa.prune(m, ratio=0.5)
    assert res.verdict.runs
