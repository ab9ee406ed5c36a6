"""BatchNorm re-estimation (adaptive BatchNorm): running statistics measured on the
calibration data, for comparison with recovery (see docs/recover.md)."""

from __future__ import annotations

import copy

import numpy as np
import onnx

from .layers import Weights
from .session import batches, cpu_session, prefix


def adapt_batchnorm(model: onnx.ModelProto, calib: dict, *, samples=256, batch=16, passes=3) -> onnx.ModelProto:
    """Set every BatchNormalization's running mean and variance to the statistics of its
    input on the calibration data.

    All layers are measured in one run, so a run measures each BatchNorm under its
    predecessors' old statistics; `passes` runs let the updates settle.

    Args:
        model: a model; not modified.
        calib: {input name: array}, samples on axis 0.
        samples: use at most this many samples.
        batch: samples per onnxruntime run.
        passes: measurement runs.

    Returns:
        A copy of `model` with new running statistics.
    """
    model = copy.deepcopy(model)
    w = Weights(model)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"
           and w.owned(n.input[3]) and w.owned(n.input[4])]
    if not bns:
        return model
    calib = {k: np.asarray(v)[:samples] for k, v in calib.items()}
    names = list(dict.fromkeys(n.input[0] for n in bns))
    for _ in range(passes):
        sess = cpu_session(prefix(model, names))
        feeds = [i.name for i in sess.get_inputs()]
        sums = {}
        for _, feed in batches(calib, batch):
            for name, x in zip(names, sess.run(names, {k: feed[k] for k in feeds})):
                x = np.moveaxis(x.astype(np.float64), 1, 0).reshape(x.shape[1], -1)
                s = sums.setdefault(name, np.zeros((3, x.shape[0])))
                s += [x.sum(1), (x * x).sum(1), np.full(x.shape[0], x.shape[1])]
        for n in bns:
            s = sums[n.input[0]]
            mean = s[0] / s[2]
            w.set(n.input[3], mean)
            w.set(n.input[4], np.maximum(s[1] / s[2] - mean * mean, 0.0))
    return model
