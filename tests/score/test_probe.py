"""Synthetic probe inputs (spa.probe): their layout and spectrum, and when OBSPA uses them."""

import os

import numpy as np
from onnx import TensorProto, helper

from spa.testing.nets import ALL
from spa.graph import build
from spa.io import load
from spa.score.criteria.obs import _inverse_diag
from spa.score.moments import Moments
from spa.score.probe import ALPHA, Probed, synthetic_inputs, with_probe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _proto(*inputs):
    vis = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n, _, _ in inputs]
    outs = [helper.make_tensor_value_info(n + "_out", t, s) for n, t, s in inputs]
    return helper.make_model(helper.make_graph(nodes, "g", vis, outs))


def _slope(x, axes):
    """Fitted log-log slope of power against spatial frequency."""
    p = np.abs(np.fft.fftn(x, axes=axes)) ** 2
    p = p.mean(axis=tuple(a for a in range(x.ndim) if a not in axes))
    f = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(x.shape[a]) ** 2 for a in axes], indexing="ij")))
    keep = (f > 0.05) & (f < 0.4)
    return np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)[0]


def test_images_get_standardised_smooth_fields_and_sparse_excursions_with_correlated_channels():
    proto = _proto(("x", TensorProto.FLOAT, ["N", 3, 32, 32]))
    x = synthetic_inputs(proto, {"x": (1, 3, 32, 32)})["x"]
    assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and 8 <= len(x) <= 256
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-4)
    half = (len(x) + 1) // 2
    assert abs(_slope(x[:half], (2, 3)) + ALPHA) < 0.5
    sparse = x[half:]  # excursions of the field: a flat background under most positions
    background = (sparse == sparse.min(axis=(1, 2, 3), keepdims=True)).mean(axis=(1, 2, 3))
    assert 0.6 < background.min() and background.max() < 0.98
    assert (np.abs(x[:half]) > 0).mean() > 0.99
    r = np.corrcoef(x[:, 0].ravel(), x[:, 1].ravel())[0, 1]
    assert 0.7 < r < 0.99
    again = synthetic_inputs(proto, {"x": (1, 3, 32, 32)})["x"]
    np.testing.assert_array_equal(x, again)


def test_channels_last_and_plain_vectors():
    proto = _proto(("img", TensorProto.FLOAT, ["N", 32, 32, 3]), ("vec", TensorProto.FLOAT, ["N", 20]))
    feeds = synthetic_inputs(proto, {"img": (1, 32, 32, 3), "vec": (1, 20)})
    assert abs(_slope(feeds["img"], (1, 2)) + ALPHA) < 0.5
    assert len(feeds["vec"]) == len(feeds["img"])
    assert abs(np.corrcoef(feeds["vec"][:, 0], feeds["vec"][:, 1])[0, 1]) < 0.5


def test_a_fixed_batch_gets_whole_batches():
    proto = _proto(("x", TensorProto.FLOAT, [12, 3, 224, 224]))
    x = synthetic_inputs(proto, {"x": (12, 3, 224, 224)})["x"]
    assert len(x) == 12


def test_integer_inputs_get_no_probe():
    proto = _proto(("ids", TensorProto.INT64, ["N", 16]), ("x", TensorProto.FLOAT, ["N", 16]))
    assert synthetic_inputs(proto, {"ids": (1, 16), "x": (1, 16)}) is None


def test_images_are_probed_everywhere_other_inputs_only_where_most_layers_are_unanchored():
    with_bn = load(ALL["resnet"]())  # images, BatchNorm after every convolution
    cg = build(with_bn)
    stats = with_probe(cg, Moments(cg))
    assert isinstance(stats, Probed) and not stats.anchored
    conv = [n for n in with_bn.graph.nodes if n.op == "Conv"][1]  # reads a BatchNorm's output
    n = cg.ctx.shape(conv.inputs[0])[1]
    assert stats.moments.known(conv.inputs[0], 1, n) and stats.source(conv.inputs[0], 1, n) is stats.measured
    sequence = load(ALL["conv1d"]())  # [N, 4, 32] with BatchNorm: the anchored moments
    cg = build(sequence)
    assert type(with_probe(cg, Moments(cg))) is Moments
    folded = load(os.path.join(ROOT, "models", "mnist_cnn.onnx"))  # BatchNorm folded by the exporter
    cg = build(folded)
    stats = with_probe(cg, Moments(cg))
    assert isinstance(stats, Probed)
    x = next(n for n in folded.graph.nodes if n.op == "Gemm").inputs[0]
    mean, var = stats.at(x, 1, cg.ctx.shape(x)[1])
    assert stats.known(x, 1, len(mean)) and (var > 0).any() and (mean >= 0).all()  # after a Relu


def test_covariances_from_fewer_samples_than_channels_keep_their_factor():
    """The MNIST CNN's classifier reads 3136 features from the probe's samples: its
    covariance is F^T F with F one row per sample, and the OBS ranking inverts it through F.
    Both give the diagonal of the regularised inverse."""
    m = load(os.path.join(os.path.dirname(__file__), "..", "..", "models", "mnist_cnn.onnx"))
    cg = build(m)
    stats = with_probe(cg, Moments(cg))
    assert isinstance(stats, Probed)
    fc = next(n for n in m.graph.nodes if n.op in ("Gemm", "MatMul") and stats.cov_factor(n.inputs[0], 1, 3136)
              is not None)
    f, cov = stats.cov_factor(fc.inputs[0], 1, 3136), stats.cov(fc.inputs[0], 1, 3136)
    assert f.shape[0] < f.shape[1] == 3136
    assert np.allclose(f.T @ f, cov, atol=1e-6 * np.abs(cov).max())
    lam = 0.3 * np.trace(cov) / len(cov)
    assert np.allclose(_inverse_diag(cov, lam, f), _inverse_diag(cov, lam), rtol=1e-4)  # cov: float32 products
    conv = next(n for n in m.graph.nodes if n.op == "Conv" and n.inputs[0].name != m.graph.inputs[0].name)
    n = cg.ctx.shape(conv.inputs[0])[1]
    assert stats.cov_factor(conv.inputs[0], 1, n) is None  # many positions per sample: the full covariance
