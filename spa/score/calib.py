"""Calibration data: read it, run the model on it, and measure what the data-using
criteria need at every Conv, Gemm and MatMul that reads a weight:

- the mean and variance of each input channel (obs, hessian, and the bias fold);
- for taylor, E[x_c * g_c] per input channel, g = d(||y||^2 / 2)/dx the gradient of
  the layer's output energy with respect to its input (a transposed convolution or a
  matrix product of the measured output y with the weight).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import onnx

from ..errors import UsageError, first_line
from ..rules import data_axis
from ..runtime import session
from .moments import ChannelStats
from .weights import weight

CHUNK = 16  # samples per onnxruntime run, at most
RUN_BYTES = 64 << 20  # layer inputs one run returns, about: fewer samples per run where they are large
MAX_COV = 4096  # channels up to which the full input covariance is measured


def read(src, proto) -> dict:
    """{input name: array} from an .npz file, a folder of <input name>.npy files or a dict,
    checked against the model's inputs (names, ranks, fixed dims) and cast to their types."""
    if isinstance(src, dict):
        return _checked({k: np.asarray(v) for k, v in src.items()}, proto, "<calib>")
    path = os.fspath(src)
    try:
        if os.path.isdir(path):
            data = {f[:-4]: np.load(os.path.join(path, f), allow_pickle=False)
                    for f in sorted(os.listdir(path)) if f.endswith(".npy")}
        else:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"--calib {path}: cannot read calibration data ({first_line(exc, 120)})") from None
    return _checked(data, proto, path)


def _checked(data, proto, path):
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    names = {vi.name for vi in inputs}
    if set(data) - names:
        raise UsageError(f"--calib {path}: unknown input(s) {', '.join(sorted(set(data) - names))}")
    if names - set(data):
        raise UsageError(f"--calib {path}: no data for input(s) {', '.join(sorted(names - set(data)))}")
    out, batch = {}, None
    for vi in inputs:
        a = data[vi.name]
        dims = vi.type.tensor_type.shape.dim
        if a.ndim != len(dims) or any(d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != n
                                      for d, n in zip(dims[1:], a.shape[1:])):
            want = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise UsageError(f"--calib {path}: input {vi.name!r} has shape {list(a.shape)}, the model wants {want}")
        if a.ndim == 0 or (batch is not None and a.shape[0] != batch):
            raise UsageError(f"--calib {path}: every input needs the same number of samples on axis 0")
        batch = a.shape[0]
        out[vi.name] = a.astype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    if not batch:
        raise UsageError(f"--calib {path}: the calibration data has no samples")
    return out


def layers(cg):
    """(node, weight, input axis) of every Conv, Gemm and MatMul whose input 1 is a weight."""
    ctx, out = cg.ctx, []
    for node in cg.model.graph.nodes:
        axis = data_axis(node)
        if axis is None or len(node.inputs) < 2:
            continue
        w = weight(ctx, node.inputs[1])
        x = node.inputs[0]
        if w is None or w.dtype.kind != "f" or ctx.rank(x) is None:
            continue
        out.append((node, w, axis % ctx.rank(x)))
    return out


def fixed_batch(proto) -> int | None:
    """The batch size every graph input fixes on axis 0, or None."""
    inits = {t.name for t in proto.graph.initializer}
    dims = {vi.type.tensor_type.shape.dim[0].dim_value if vi.type.tensor_type.shape.dim else 0
            for vi in proto.graph.input if vi.name not in inits}
    return dims.pop() if len(dims) == 1 and min(dims) > 0 else None


def _samples_per_run(ctx, tensors) -> int:
    """Samples per run that keep the layer inputs one run returns near RUN_BYTES (at the
    shapes load fixed, batch 1 where it was free): ResNet-50 at 224 x 224 returns 48 MB a
    sample, so 16 a run held 780 MB at once."""
    size = sum(int(np.prod(ctx.shape(t))) * np.dtype(t.dtype or np.float32).itemsize for t in tensors
               if ctx.shape(t) is not None and all(isinstance(d, int) for d in ctx.shape(t)))
    return int(np.clip(RUN_BYTES // max(size, 1), 1, CHUNK))


def _grad_model(layers, opset):
    """One model computing g = d(||y||^2/2)/dx for every Conv (ConvTranspose of y with W)."""
    nodes, inputs, outputs, inits = [], [], [], []
    for k, (node, w, _) in enumerate(layers):
        if node.op != "Conv":
            continue
        a = node.attrs
        nd = w.ndim - 2
        attrs = {"group": int(a.get("group", 1)), "strides": list(a.get("strides", [1] * nd)),
                 "dilations": list(a.get("dilations", [1] * nd)), "pads": list(a.get("pads", [0] * 2 * nd))}
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            continue
        y = f"y{k}"
        inits.append(onnx.numpy_helper.from_array(np.asarray(w, np.float32), f"w{k}"))
        nodes.append(onnx.helper.make_node("ConvTranspose", [y, f"w{k}"], [f"t{k}"], **attrs))
        inputs.append(onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, None))
        outputs.append(onnx.ValueInfoProto(name=f"t{k}"))
    if not nodes:
        return None
    graph = onnx.helper.make_graph(nodes, "grads", inputs, outputs, inits)
    ids = [onnx.helper.make_opsetid("", max(opset, 11))]
    return onnx.helper.make_model(graph, opset_imports=ids, ir_version=onnx.helper.find_min_ir_version_for(ids))


def _beside_data(proto, m, tmp):
    """A path to `proto` in folder `tmp`, with the model's external data files at the same
    relative places (onnxruntime reads external data relative to the model): hard links,
    or copies across file systems. Not symbolic links: onnxruntime 1.31 resolves them and
    refuses data outside the model's folder."""
    for path in m.store.paths:
        dest = os.path.join(tmp, os.path.relpath(path, m.store.base))
        os.makedirs(os.path.dirname(dest) or tmp, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)
    out = os.path.join(tmp, "model.onnx")
    onnx.save(proto, out)
    return out


def _with_outputs(proto, outputs):
    """A copy of `proto` with `outputs` added to the graph's outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.output.extend(outputs)
    return out


def _serialised_with_outputs(proto, outputs) -> bytes:
    """The bytes of `proto` with `outputs` added to the graph's outputs, without copying the
    proto first: a serialised message followed by another parses as their merge, and a
    repeated field merges by appending (ViT-B/16: one 346 MB copy less)."""
    return proto.SerializeToString() + onnx.ModelProto(graph=onnx.GraphProto(output=outputs)).SerializeToString()


def _fit(t, shape):
    """Crop or zero-pad a transposed convolution's output to the input's spatial shape."""
    out = np.zeros(shape, np.float64)
    idx = tuple(slice(0, min(a, b)) for a, b in zip(shape, t.shape))
    out[idx] = t[idx]
    return out


class Measured(ChannelStats):
    """Channel statistics of every layer input, measured on calibration data; `xg(node)`
    gives taylor's E[x_c * g_c] per input channel of a layer, or None."""

    def __init__(self, cg, feeds, grads=False):
        m = cg.model
        self.ctx = cg.ctx
        found = layers(cg)
        want = {node.inputs[0].name for node, _, _ in found}
        if grads:
            want |= {node.outputs[0].name for node, _, _ in found}
        have = {o.name for o in m.runnable.graph.output}  # the lifted proto where onnxruntime runs it
        extra = [onnx.ValueInfoProto(name=n) for n in sorted(want - have)]
        with tempfile.TemporaryDirectory(prefix="spa-calib-") as tmp:
            try:
                sess = session(_beside_data(_with_outputs(m.runnable, extra), m, tmp) if m.external
                               else _serialised_with_outputs(m.runnable, extra))
            except Exception as exc:  # onnxruntime errors have no common base class
                raise UsageError(f"--calib: onnxruntime cannot load the model with its layer inputs as outputs "
                                 f"({first_line(exc, 160)})") from None
        names = [o.name for o in sess.get_outputs()]
        gsess = None
        if grads:
            gm = _grad_model(found, m.opset)
            gsess = session(gm) if gm is not None else None
        sums, self._xg, self._cross, self._rows, self._shift = {}, {}, {}, {}, {}
        fixed = fixed_batch(m.proto)
        step = fixed or _samples_per_run(cg.ctx, {node.inputs[0].name: node.inputs[0] for node, _, _ in found}.values())
        n = len(next(iter(feeds.values())))
        if fixed and n >= fixed:  # whole batches only
            n -= n % fixed
        for start in range(0, n, step):
            chunk = {k: v[start:start + step] for k, v in feeds.items()}
            try:
                acts = dict(zip(names, sess.run(names, chunk)))
            except Exception as exc:  # onnxruntime errors have no common base class
                raise UsageError(f"--calib: onnxruntime cannot run the model on the calibration data "
                                 f"({first_line(exc, 160)})") from None
            conv_ys, seen = {}, set()
            for k, (node, w, axis) in enumerate(found):
                x = acts[node.inputs[0].name]
                key = (node.inputs[0].name, axis)
                if key not in seen:  # several layers may read one tensor
                    seen.add(key)
                    # products in float32 (twice as fast, no float64 copy), sums in float64
                    flat = np.moveaxis(x.astype(np.float32, copy=False), axis, -1).reshape(-1, x.shape[axis])
                    s = sums.setdefault(key, np.zeros((3, flat.shape[1])))
                    s1 = flat.sum(0, dtype=np.float64)
                    with np.errstate(over="ignore"):  # huge activations: inf, their statistics unused
                        s += [s1, np.square(flat).sum(0, dtype=np.float64), np.full(flat.shape[1], len(flat))]
                    if flat.shape[1] <= MAX_COV:
                        # float32 products of rows centred on the first chunk's mean: uncentred, the
                        # mean's share cancels out of E[x x^T] - mean mean^T with the float32 sums'
                        # rounding error (ResNet-18 with random weights: cosine 0.9995 -> 0.936)
                        self._shift.setdefault(key, (s1 / len(flat)).astype(np.float32))
                        self._gram(key, flat)
                if grads and node.op == "Conv":
                    conv_ys[f"y{k}"] = acts[node.outputs[0].name].astype(np.float32)
                elif grads:
                    self._add_xg(node, x.astype(np.float64), self._linear_grad(node, w, acts[node.outputs[0].name]),
                                 axis)
            if conv_ys and gsess is not None:
                feed = {i.name: conv_ys[i.name] for i in gsess.get_inputs()}
                for o, t in zip(gsess.get_outputs(), gsess.run(None, feed)):
                    k = int(o.name[1:])
                    node, _, axis = found[k]
                    x = acts[node.inputs[0].name].astype(np.float64)
                    self._add_xg(node, x, _fit(t, x.shape), axis)
        low = {}  # rows of the tensors measured on fewer samples than channels: no Gram product
        for key in list(self._rows):
            held = self._rows.pop(key)
            if key not in self._cross and sum(len(h) for h in held) < held[0].shape[1]:
                low[key] = np.concatenate(held)
            else:
                self._rows[key] = held
                self._gram(key, None)
        self.map = {}
        for (name, axis), (s1, s2, cnt) in sums.items():
            mean = s1 / cnt
            self.map[name] = (axis, mean, np.maximum(s2 / cnt - mean * mean, 0))
        self._xg = {k: v[0] / v[1] for k, v in self._xg.items()}
        self._cov, self._factor = {}, {}
        for key, rows in low.items():  # centred and scaled in place, kept in float32 (ViT-B/16: 12 x 19 MB)
            s1, _, cnt = sums[key]
            rows -= (s1 / cnt).astype(rows.dtype)
            rows *= rows.dtype.type(1 / np.sqrt(cnt[0]))
            if np.all(np.isfinite(rows)):  # data with inf or NaN: no regression on it
                self._factor[key] = rows
        for key, cross in self._cross.items():
            s1, _, cnt = sums[key]
            mean = s1 / cnt - self._shift[key]  # of the centred rows
            cov = cross  # in place, by row blocks: no temporary as large as the matrix
            cov /= cnt[0]
            for i in range(0, len(cov), 256):
                cov[i:i + 256] -= np.outer(mean[i:i + 256], mean)
            if np.all(np.isfinite(cov)):  # data with inf or NaN: no regression on it
                self._cov[key] = cov
        del self._cross

    def _gram(self, key, flat):
        """Add (flat - shift)^T (flat - shift) to the key's cross products. Rows are held back until there are
        as many as columns (or until flat is None): one product then, not one wide output
        per chunk (a Gemm reading 3136 features from 16 samples a chunk)."""
        held = self._rows.pop(key, [])
        if flat is not None:
            held.append(flat)
        rows = sum(len(h) for h in held)
        if flat is not None and rows < flat.shape[1]:
            self._rows[key] = held
            return
        block = (held[0] if len(held) == 1 else np.concatenate(held)) - self._shift[key]
        with np.errstate(over="ignore", invalid="ignore"):  # huge activations: inf, dropped below
            prod = block.T @ block
        if key in self._cross:
            self._cross[key] += prod  # in place: a fresh wide float64 matrix costs its page faults
        else:
            self._cross[key] = prod.astype(np.float64)

    def cov(self, t, axis, n):
        """The covariance; where fewer samples than channels measured it, F^T F computed
        now (not kept: callers that can work through cov_factor do)."""
        key = (t.name, axis % (self.ctx.rank(t) or 1))
        c = self._cov.get(key)
        if c is None and key in self._factor:
            f = self._factor[key].astype(np.float64)
            c = f.T @ f
        return c if c is not None and len(c) == n else None

    def cov_factor(self, t, axis, n):
        """F (float32) with cov = F^T F where fewer samples than channels measured it."""
        f = self._factor.get((t.name, axis % (self.ctx.rank(t) or 1)))
        return f if f is not None and f.shape[1] == n else None

    @staticmethod
    def _linear_grad(node, w, y):
        """d(||y||^2/2)/dx for y = x @ W (MatMul) or Gemm's alpha * A @ op(B)."""
        y = y.astype(np.float64)
        w = w.astype(np.float64)
        if node.op == "MatMul":
            return y @ w.T if w.ndim == 2 else None
        b = w.T if node.attrs.get("transB", 0) else w  # A @ b
        g = float(node.attrs.get("alpha", 1.0)) * (y @ b.T)
        return g.T if node.attrs.get("transA", 0) else g

    def _add_xg(self, node, x, g, axis):
        if g is None or g.shape != x.shape:
            return
        prod = np.moveaxis(x * g, axis, -1).reshape(-1, x.shape[axis])
        acc = self._xg.setdefault(node.name, [np.zeros(x.shape[axis]), 0])
        acc[0] += prod.sum(0)
        acc[1] += len(prod)

    def xg(self, node):
        return self._xg.get(node.name)
