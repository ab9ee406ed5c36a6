"""Shared helpers for the per-rule tests: a tiny graph builder, the `sandwich`
model shape every rule test uses, the masked-equivalence oracle and accessors for
the pruned model's constants and attributes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import spa

IR = 8
OPSET = 17
IR_FOR_OPSET = {18: 8, 19: 9, 20: 9, 21: 10}


class G:
    """Accumulates nodes and seeded random float32 initializers.

    Every node and every weight gets a predictable name: weights are named by the
    caller (``w(...)``) or ``<node>_w``/``<node>_b`` for the layer helpers.
    """

    def __init__(self, seed=0, opset=OPSET, weights="init"):
        """weights: how constants are stored: "init" (initializers), "constant" (Constant
        nodes) or "fill" (float ones as ConstantOfShape of their mean; ints stay initializers)."""
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], {}
        self.opset, self.weights = opset, weights

    def name(self, prefix):
        i = self.count.get(prefix, 0)
        self.count[prefix] = i + 1
        return f"{prefix}{i}"

    # -- constants -------------------------------------------------------------
    def init(self, name, arr):
        arr = np.asarray(arr)
        if self.weights == "constant":
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_node",
                                               value=numpy_helper.from_array(arr, name)))
        elif self.weights == "fill" and arr.dtype == np.float32 and arr.ndim:
            fill = helper.make_tensor("value", TensorProto.FLOAT, [1], [float(np.abs(arr).mean())])
            self.inits.append(numpy_helper.from_array(np.asarray(arr.shape, np.int64), f"{name}_shape"))
            self.nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], name=f"{name}_node",
                                               value=fill))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def w(self, name, *shape, scale=None, lo=None, hi=None):
        """Random float32 initializer: normal (scaled by 1/sqrt(fan-in)) or uniform in [lo, hi]."""
        if lo is not None:
            arr = self.rng.uniform(lo, hi, shape)
        else:
            fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = self.rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(max(fan, 1)))
        return self.init(name, arr.astype(np.float32))

    def ints(self, name, values):
        return self.init(name, np.asarray(values, np.int64))

    def floats(self, name, values):
        return self.init(name, np.asarray(values, np.float32))

    # -- nodes -----------------------------------------------------------------
    def op(self, op_type, inputs, n_out=1, name=None, domain=None, **attrs):
        """Append a node; return its output name (or list of names if n_out > 1)."""
        name = name or self.name(op_type.lower())
        outs = [name] if n_out == 1 else [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, nd=2, group=1, bias=True, name=None, transpose=False, **attrs):
        name = name or self.name("convt" if transpose else "conv")
        shape = (cin, cout // group) if transpose else (cout, cin // group)
        ins = [x, self.w(f"{name}_w", *shape, *[k] * nd)]
        if bias:
            ins.append(self.w(f"{name}_b", cout, scale=0.1))
        if not transpose:
            attrs.setdefault("pads", [k // 2] * (2 * nd))
        return self.op("ConvTranspose" if transpose else "Conv", ins, name=name,
                       kernel_shape=[k] * nd, group=group, **attrs)

    def gemm(self, x, nin, nout, name="fc", trans_b=1, bias=True):
        wshape = (nout, nin) if trans_b else (nin, nout)
        ins = [x, self.w(f"{name}_w", *wshape)]
        if bias:
            ins.append(self.w(f"{name}_b", nout, scale=0.1))
        return self.op("Gemm", ins, name=name, transB=trans_b)

    def model(self, inputs, outputs, ir=None, out_shapes=None, domains=()):
        """inputs: {name: shape}; outputs: names (shapes are inferred, or taken from
        `out_shapes` {name: shape} where inference gives none)."""
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "rule_test", ins, outs, initializer=self.inits)
        ir = ir or IR_FOR_OPSET.get(self.opset, IR)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in domains]
        m = helper.make_model(graph, opset_imports=opsets,
                              ir_version=ir, producer_name="spa-rule-tests")
        inferred = onnx.shape_inference.infer_shapes(m)
        batch = next(iter(inputs.values()))[0]
        for o, i in zip(m.graph.output, inferred.graph.output):
            if i.type.tensor_type.HasField("shape"):
                o.CopyFrom(i)
                d0 = o.type.tensor_type.shape.dim[0] if o.type.tensor_type.shape.dim else None
                if d0 is not None and d0.dim_param.startswith("unk__"):  # inference gave up: it is the batch
                    d0.Clear()
                    if isinstance(batch, int):
                        d0.dim_value = batch
                    else:
                        d0.dim_param = batch
            elif out_shapes and o.name in out_shapes:
                o.CopyFrom(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, out_shapes[o.name]))
        return m


def sandwich(fn=None, C=8, D=6, cin=3, spatial=(8, 8), batch="N", opset=OPSET, seed=0, k1=3, k2=3,
             classes=5, tail=True, weights="init", domains=()):
    """input -> Conv(cin->C) -> fn(g, x) -> Conv(C'->D) -> GlobalAveragePool -> Flatten -> Gemm -> output.

    `fn(g, x)` appends the ops under test and returns the new tensor, or
    (tensor, channels) when it changes the channel count, or (tensor, channels, False)
    to skip the rest (the tensor is then the graph output). Names: the first conv is
    "conv0" (weights "conv0_w"/"conv0_b"), the second "tail" ("tail_w"), the Gemm "fc".
    """
    g = G(seed, opset, weights)
    nd = len(spatial)
    x = g.conv("input", cin, C, k=k1, nd=nd, name="conv0")
    c, go_on = C, tail
    if fn is not None:
        r = fn(g, x)
        if isinstance(r, tuple):
            x, c = r[0], r[1]
            go_on = go_on and (len(r) < 3 or r[2])
        else:
            x = r
    if go_on:
        x = g.conv(x, c, D, k=k2, nd=nd, name="tail")
        x = g.op("Flatten", [g.op("GlobalAveragePool", [x], name="gap")], name="flatten", axis=1)
        x = g.gemm(x, D, classes, name="fc")
    return g.model({"input": [batch, cin, *spatial]}, [x], out_shapes={"fc": [batch, classes]}, domains=domains)


# -- running -----------------------------------------------------------------------
def feeds(model, batch=2, seed=1):
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def run(model, inputs):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def check_oracle(model, ratio=0.3, rtol=1e-4, atol=1e-5, **prune_kwargs):
    """Prune, then assert the pruned model's outputs equal the masked original's (batch 2)
    and that the masking changed the original's outputs. Returns the PruneResult."""
    prune_kwargs.setdefault("seed", 0)
    prune_kwargs.setdefault("round_to", 1)  # rule tests check exact channel counts
    result = spa.prune(model, ratio=ratio, **prune_kwargs)
    assert result.changes, "nothing was pruned"
    x = feeds(model)
    pruned = run(result.model, x)
    masked = run(spa.masked(model, result.sinks, result.updates), x)
    original = run(model, x)
    changed = False
    for name, want in masked.items():
        assert np.all(np.isfinite(want)), f"{name}: masked output is not finite"
        np.testing.assert_allclose(pruned[name], want, rtol=rtol, atol=atol, err_msg=name)
        changed |= not np.allclose(original[name], want, rtol=rtol, atol=atol)
    assert changed, "masking changed no output: the oracle would pass vacuously"
    return result


# -- inspecting ----------------------------------------------------------------------
def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def attr(model, node_name, key):
    a = next(a for a in node(model, node_name).attribute if a.name == key)
    return helper.get_attribute_value(a)


def value(model, tensor):
    """The value of an initializer, a Constant node's output or a ConstantOfShape fill."""
    for t in model.graph.initializer:
        if t.name == tensor:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.output[0] != tensor:
            continue
        if n.op_type == "Constant":
            v = helper.get_attribute_value(n.attribute[0])
            return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
        if n.op_type == "ConstantOfShape":
            fill = numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0] if n.attribute else np.float32(0)
            return np.full(tuple(value(model, n.input[0])), fill)
    raise KeyError(tensor)


def producer(model, tensor):
    return next((n for n in model.graph.node if tensor in n.output), None)


def input_value(model, node_name, index):
    """The constant value of input `index` of a node (shape constants get renamed by rewrites)."""
    return value(model, node(model, node_name).input[index])


def runtime_input(model, node_name, index, batch=2):
    """Input `index` of a node as computed in a run at `batch` (constant or not)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = node(m, node_name).input[index]
    m.graph.output.append(onnx.ValueInfoProto(name=name))
    return run(m, feeds(model, batch))[name]


def shape(model, tensor):
    return value(model, tensor).shape


def group_with(analysis, member):
    """The group that has parameter slice `member` (e.g. "conv0_w[0]")."""
    hits = [g for g in analysis.groups if member in g.members]
    assert len(hits) == 1, f"{member}: in {len(hits)} groups: {[g.members for g in analysis.groups]}"
    return hits[0]
