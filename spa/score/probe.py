"""Synthetic inputs for OBSPA where the model carries no statistics.

A network without BatchNorm or LayerNorm in front of most layers (BatchNorm folded into
the convolutions by the exporter) gives OBSPA nothing to anchor their input moments to.
There, OBSPA measures them on synthetic inputs drawn from a generic prior instead of
data: zero-mean, unit-variance Gaussian random fields whose power falls as 1/f^ALPHA over
the spatial axes (natural images and handwriting fall as 1/f^2 to 1/f^4), one field
shared by most of the channel variance (colour channels move together). Half the samples
keep only the field's excursions above one standard deviation (rectified, standardised
again): sparse shapes on a flat background, as strokes, edges and objects are, where a
Gaussian field has no background at all. Inputs without spatial axes get white Gaussian
noise, rectified the same way in half the samples; integer inputs (token ids) get no
probe. The prior assumes inputs normalised to zero mean and unit variance.
"""

from __future__ import annotations

import numpy as np
import onnx

from .calib import Measured, fixed_batch, layers
from ..errors import UsageError
from .moments import ChannelStats

ALPHA = 3.0  # spectral slope of the fields
SHARED = 0.9  # share of each channel's variance carried by the field all channels share
EXCURSION = 1.0  # the sparse half of the samples keeps the field above this many standard deviations
POSITIONS = 2 ** 18  # samples x spatial positions aimed at
MIN_SAMPLES, MAX_SAMPLES = 8, 256  # fewer than 8 only where 8 would pass 2^20 positions (large images)


def synthetic_inputs(proto: onnx.ModelProto, shapes: dict, seed: int = 0) -> dict | None:
    """{input: samples on axis 0} for every graph input, or None when an input is not float."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    layouts = {}
    for vi in inputs:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.dtype(dtype).kind != "f" or not shapes[vi.name]:
            return None
        layouts[vi.name] = (dtype, _layout(shapes[vi.name]))
    if not inputs:
        return None
    positions = max(int(np.prod([shapes[vi.name][a] for a in layouts[vi.name][1][1]] or [1])) for vi in inputs)
    n = int(np.clip(POSITIONS // positions, 1, MAX_SAMPLES))
    if n < MIN_SAMPLES:
        n = max(n, min(MIN_SAMPLES, 4 * POSITIONS // positions))
    batch = fixed_batch(proto)
    if batch:  # whole batches of a model that fixes its batch size
        n = max(batch, n - n % batch)
    rng = np.random.default_rng(seed)
    out = {}
    for vi in inputs:
        dtype, (channel, spatial) = layouts[vi.name]
        shape = (n,) + tuple(shapes[vi.name][1:])
        out[vi.name] = field(shape, channel, spatial, rng).astype(dtype)
    return out


def _layout(shape):
    """(channel axis or None, spatial axes) of an input: NCHW-like unless the last axis is
    the small one (NHWC); rank 2 or less has no spatial axes."""
    rank = len(shape)
    if rank <= 2:
        return (1 if rank == 2 else None), ()
    if rank >= 4 and shape[-1] <= 4 < min(shape[1:-1]):
        return rank - 1, tuple(range(1, rank - 1))
    return 1, tuple(range(2, rank))


def field(shape, channel, spatial, rng) -> np.ndarray:
    """Gaussian fields with power ~ 1/f^ALPHA over `spatial`, standardised per sample; the
    last half of the samples (none of a single one) rectified above EXCURSION."""
    shared = list(shape)
    if channel is not None:
        shared[channel] = 1
    z = np.sqrt(SHARED) * _coloured(tuple(shared), spatial, rng) + np.sqrt(1 - SHARED) * _coloured(shape, spatial, rng)
    z = _standard(z)
    half = (shape[0] + 1) // 2
    z[half:] = _standard(np.maximum(z[half:] - EXCURSION, 0.0))
    return z


def _standard(z):
    axes = tuple(range(1, z.ndim))
    z = z - z.mean(axis=axes, keepdims=True)
    return z / np.maximum(z.std(axis=axes, keepdims=True), 1e-12)


def _coloured(shape, spatial, rng):
    z = rng.standard_normal(shape)
    if np.prod([shape[a] for a in spatial]) < 4:  # no room for a spatial structure
        return z
    f2 = 0.0
    for a in spatial:  # the last spatial axis keeps its non-negative frequencies (a real transform)
        f = (np.fft.rfftfreq if a == spatial[-1] else np.fft.fftfreq)(shape[a])
        f = f.reshape([-1 if k == a else 1 for k in range(len(shape))])
        f2 = f2 + f * f
    amp = np.where(f2 > 0, np.maximum(f2, 1e-12) ** (-ALPHA / 4), 0.0)  # |F| ~ f^(-ALPHA/2)
    out = np.fft.irfftn(np.fft.rfftn(z, axes=spatial) * amp, s=[shape[a] for a in spatial], axes=spatial)
    std = out.std(axis=spatial, keepdims=True)
    return out / np.maximum(std, 1e-12)


class Synthetic(Measured):
    """Statistics measured on synthetic inputs: their covariances come from a prior, so
    the ranking trusts them less than measured data's (0.03) and more than moments
    propagated without an anchor (1.0); measured on the MNIST benchmark, 0.3 is stable
    across probe seeds where 0.03 and 1.0 swing by up to 25 points."""

    score_ridge = 0.3


class Probed(ChannelStats):
    """Statistics measured on synthetic inputs, and moments where those are anchored
    (Moments.known) and `anchored` is set, or where nothing was measured."""

    def __init__(self, moments, measured, anchored=True):
        self.ctx, self.moments, self.measured, self.anchored = moments.ctx, moments, measured, anchored

    def source(self, t, axis, n):
        if self.anchored:
            return self.moments if self.moments.known(t, axis, n) else self.measured
        return self.measured if self.measured.fits(t, axis, n) else self.moments

    def fits(self, t, axis, n):
        return self.source(t, axis, n).fits(t, axis, n)

    def known(self, t, axis, n):
        return self.source(t, axis, n).known(t, axis, n)

    def at(self, t, axis, n):
        return self.source(t, axis, n).at(t, axis, n)

    def cov(self, t, axis, n):
        return self.source(t, axis, n).cov(t, axis, n)

    def cov_factor(self, t, axis, n):
        return self.source(t, axis, n).cov_factor(t, axis, n)


def with_probe(cg, moments, measured=None, seed=0):
    """Statistics measured on synthetic inputs, or `moments` where the probe cannot run.

    A model that takes images (float inputs of rank 4, 8 x 8 or larger) is probed at every layer, even
    where BatchNorm statistics anchor the moments: measured, the probe's covariances rank
    and compensate better than moments propagated from the running statistics (MNIST
    `ts` nets at ratio 0.3: ResNet 88.6% -> 98.8%, ViT 67.7% -> 85.9%; ImageNet
    MobileNetV2 at --target-macs 0.2: 34% -> 58% top-1 agreement; docs/accuracy.md).
    Other models are probed only where most layers read activations that no norm
    anchors (BatchNorm folded away), and keep the anchored moments there; integer
    inputs (token ids) get no probe. `measured`: the probe of an earlier call on the
    same model, reused."""
    m, ctx = cg.model, cg.ctx
    images = _takes_images(m)
    if not images:
        inputs = {t.name for t in m.graph.inputs}
        inner = [(node, axis) for node, _, axis in layers(cg) if node.inputs[0].name not in inputs]
        loose = [(node, axis) for node, axis in inner
                 if not moments.known(node.inputs[0], axis, ctx.shape(node.inputs[0])[axis])]
        if not loose or 2 * len(loose) <= len(inner):
            return moments
    if measured is not None:
        return Probed(moments, measured, anchored=not images)
    larger = [m.probe_shapes] if m.probe_shapes and m.probe_shapes != m.input_shapes else []
    for shapes in larger + [m.input_shapes]:
        feeds = synthetic_inputs(m.proto, shapes, seed)
        if feeds is None:
            return moments
        try:
            return Probed(moments, Synthetic(cg, feeds), anchored=not images)
        except UsageError:  # onnxruntime cannot run the model at these sizes (a shape fixed inside it)
            continue
    return moments


def _takes_images(m) -> bool:
    """Every graph input is a float image: rank 4 with spatial axes of 8 or more."""
    shapes = m.probe_shapes or m.input_shapes
    inputs = list(m.graph.inputs)
    for t in inputs:
        shape = shapes.get(t.name)
        if t.dtype is None or np.dtype(t.dtype).kind != "f" or shape is None or len(shape) != 4:
            return False
        if min(shape[a] for a in _layout(shape)[1]) < 8:
            return False
    return bool(inputs)
