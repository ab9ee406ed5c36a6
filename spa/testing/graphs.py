"""The one ONNX graph builder of the tests, and `sandwich`, the model shape every
rule test uses.

`Graph` accumulates nodes and seeded random float32 weights, names every node and
weight predictably, tracks channel counts, and assembles an IR 8 / opset 17 model
(the IR follows newer opsets). Two vocabularies share it:

* explicit: ``g.conv(x, cin, cout, name=...)``, ``g.gemm(x, nin, nout)``,
  ``g.op(type, inputs, name=...)``, ``g.model({input: shape}, [outputs])`` (the rule tests);
* channel-tracked layers for whole architectures (spa.testing.nets): ``Graph(cin=3)``
  declares an image input ``input`` of shape ``["N", cin, *spatial]``; ``g.conv_to(x, cout)``,
  ``g.cbr``, ``g.bn``, ``g.head``..., ``g.layer(type, inputs)``, then ``g.image_model(outputs, name)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR = 8
OPSET = 17
IR_FOR_OPSET = {18: 8, 19: 9, 20: 9, 21: 10}


class Graph:
    """An ONNX graph under construction: nodes, seeded weights, names and channel counts."""

    def __init__(self, seed=0, opset=OPSET, weights="init", cin=None, spatial=(16, 16)):
        """weights: how constants are stored: "init" (initializers), "constant" (Constant
        nodes) or "fill" (float ones as ConstantOfShape of their mean; ints stay initializers).
        cin: declare the image input ``input`` [N, cin, *spatial] of the layer vocabulary."""
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], {}
        self.opset, self.weights = opset, weights
        self.ch = {} if cin is None else {"input": cin}
        self.in_shape = None if cin is None else ["N", cin, *spatial]
        self.nd = len(spatial)

    def name(self, prefix):
        """A fresh name: the prefix and its use count (conv0, conv1...)."""
        i = self.count.get(prefix, 0)
        self.count[prefix] = i + 1
        return f"{prefix}{i}"

    # -- constants -------------------------------------------------------------
    def init(self, name, arr):
        """Store a constant under `name` as ``self.weights`` says; return the name."""
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

    def const(self, prefix, arr):
        """Store a constant under a fresh name ``<prefix>_<i>``; return the name."""
        return self.init(self.name(prefix + "_"), arr)

    def w(self, name, *shape, scale=None, lo=None, hi=None):
        """Random float32 initializer: normal (scaled by 1/sqrt(fan-in)) or uniform in [lo, hi]."""
        if lo is not None:
            arr = self.rng.uniform(lo, hi, shape)
        else:
            fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = self.rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(max(fan, 1)))
        return self.init(name, arr.astype(np.float32))

    def ints(self, name, values):
        """An int64 constant."""
        return self.init(name, np.asarray(values, np.int64))

    def floats(self, name, values):
        """A float32 constant."""
        return self.init(name, np.asarray(values, np.float32))

    def randn(self, *shape, scale=1.0):
        """Seeded standard normal float32 values times `scale` (not stored)."""
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, *shape, lo=0.5, hi=1.5):
        """Seeded uniform float32 values in [lo, hi) (not stored)."""
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    # -- nodes -----------------------------------------------------------------
    def op(self, op_type, inputs, n_out=1, name=None, domain=None, c=None, **attrs):
        """Append a node; return its output name (or list of names if n_out > 1).
        The output has `c` channels, by default those of the first input (when known)."""
        name = name or self.name(op_type.lower())
        outs = [name] if n_out == 1 else [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        channels = self.ch.get(inputs[0]) if c is None and inputs else c
        if channels is not None:
            self.ch.update((o, channels) for o in outs)
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, nd=2, group=1, bias=True, name=None, transpose=False, **attrs):
        """Conv (or ConvTranspose) with weights ``<name>_w`` and ``<name>_b``."""
        name = name or self.name("convt" if transpose else "conv")
        shape = (cin, cout // group) if transpose else (cout, cin // group)
        ins = [x, self.w(f"{name}_w", *shape, *[k] * nd)]
        if bias:
            ins.append(self.w(f"{name}_b", cout, scale=0.1))
        if not transpose:
            attrs.setdefault("pads", [k // 2] * (2 * nd))
        return self.op("ConvTranspose" if transpose else "Conv", ins, name=name, c=cout,
                       kernel_shape=[k] * nd, group=group, **attrs)

    def gemm(self, x, nin, nout, name="fc", trans_b=1, bias=True):
        """Gemm with weights ``<name>_w`` and ``<name>_b``."""
        wshape = (nout, nin) if trans_b else (nin, nout)
        ins = [x, self.w(f"{name}_w", *wshape)]
        if bias:
            ins.append(self.w(f"{name}_b", nout, scale=0.1))
        return self.op("Gemm", ins, name=name, c=nout, transB=trans_b)

    def model(self, inputs, outputs, ir=None, out_shapes=None, domains=()):
        """inputs: {name: shape}; outputs: names (shapes are inferred, or taken from
        `out_shapes` {name: shape} where inference gives none)."""
        m = self._assemble(inputs, outputs, "rule_test", ir, domains, "spa-rule-tests")
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

    def image_model(self, outputs, name):
        """The model of the layer vocabulary: input ``input``, output shapes inferred with
        batch "N" ([N, C] where inference gives up)."""
        m = self._assemble({"input": self.in_shape}, outputs, name, IR, (), "spa-tests")
        for o, i in zip(m.graph.output, onnx.shape_inference.infer_shapes(m).graph.output):
            t = i.type.tensor_type
            dims = [d.dim_value or None for d in t.shape.dim] if t.HasField("shape") else [0, self.ch[o.name]]
            o.CopyFrom(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, ["N", *dims[1:]]))
        return m

    def _assemble(self, inputs, outputs, name, ir, domains, producer):
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, name, ins, outs, initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in domains]
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir or IR_FOR_OPSET.get(self.opset, IR),
                                 producer_name=producer)

    # -- channel-tracked layers ------------------------------------------------------
    def layer(self, op_type, inputs, c=None, **attrs):
        """A single-output node named ``<op>_<i>``; channels `c` or the first input's."""
        return self.op(op_type, inputs, name=self.name(op_type.lower() + "_"), c=c, **attrs)

    def conv_to(self, x, cout, k=3, stride=1, group=1, bias=True):
        """Conv from x's channels to `cout`, He-initialised, "same" padding."""
        cin = self.ch[x]
        w = self.randn(cout, cin // group, *[k] * self.nd, scale=np.sqrt(2.0 / (cin // group * k ** self.nd)))
        ins = [x, self.const("conv_w", w)] + ([self.const("conv_b", self.randn(cout, scale=0.1))] if bias else [])
        return self.layer("Conv", ins, cout, kernel_shape=[k] * self.nd, strides=[stride] * self.nd,
                          pads=[k // 2] * (2 * self.nd), group=group)

    def convt_to(self, x, cout, k=2, stride=2, bias=True):
        """ConvTranspose from x's channels to `cout`."""
        cin = self.ch[x]
        w = self.randn(cin, cout, *[k] * self.nd, scale=np.sqrt(1.0 / (cin * k ** self.nd)))
        ins = [x, self.const("convt_w", w)] + ([self.const("convt_b", self.randn(cout, scale=0.1))] if bias else [])
        return self.layer("ConvTranspose", ins, cout, kernel_shape=[k] * self.nd, strides=[stride] * self.nd)

    def bn(self, x):
        """BatchNormalization with seeded statistics."""
        c = self.ch[x]
        p = [self.uniform(c), self.randn(c, scale=0.1), self.randn(c, scale=0.1), self.uniform(c)]
        names = [self.const(s, a) for s, a in zip(("bn_g", "bn_b", "bn_m", "bn_v"), p)]
        return self.layer("BatchNormalization", [x, *names], epsilon=1e-5)

    def relu(self, x):
        """Relu."""
        return self.layer("Relu", [x])

    def sigmoid(self, x):
        """Sigmoid."""
        return self.layer("Sigmoid", [x])

    def clip(self, x, lo=0.0, hi=6.0):
        """Clip to [lo, hi] (ReLU6 by default)."""
        return self.layer("Clip", [x, self.const("clip_min", np.float32(lo)), self.const("clip_max", np.float32(hi))])

    def add(self, a, b):
        """Add."""
        return self.layer("Add", [a, b])

    def mul(self, a, b):
        """Mul."""
        return self.layer("Mul", [a, b])

    def chan_const(self, prefix, x, lo=None):
        """Per-channel [1, C, 1, ...] constant for ``x`` (positive uniform when ``lo`` is given)."""
        shape = (1, self.ch[x]) + (1,) * self.nd
        return self.const(prefix, self.uniform(*shape, lo=lo) if lo is not None else self.randn(*shape))

    def concat(self, xs, axis=1):
        """Concat; the output has the channels of all inputs."""
        return self.layer("Concat", xs, sum(self.ch[x] for x in xs), axis=axis)

    def gap(self, x):
        """GlobalAveragePool."""
        return self.layer("GlobalAveragePool", [x])

    def flatten(self, x, features=None):
        """Flatten at axis 1 into `features` (by default x's channels)."""
        return self.layer("Flatten", [x], features or self.ch[x], axis=1)

    def pool(self, x, kind="MaxPool", k=2, stride=2):
        """MaxPool or AveragePool."""
        return self.layer(kind, [x], kernel_shape=[k] * self.nd, strides=[stride] * self.nd)

    def resize(self, x, scale=2.0):
        """Nearest Resize of the spatial axes by `scale`."""
        s = self.const("scales", np.array([1.0, 1.0] + [scale] * self.nd, np.float32))
        return self.layer("Resize", [x, "", s], mode="nearest")

    def dense(self, x, nout):
        """Gemm (transB) from x's features to `nout`."""
        nin = self.ch[x]
        w = self.const("fc_w", self.randn(nout, nin, scale=np.sqrt(1.0 / nin)))
        return self.layer("Gemm", [x, w, self.const("fc_b", self.randn(nout, scale=0.1))], nout, transB=1)

    def matmul_const(self, x, nout):
        """MatMul by a constant weight, then Add a bias."""
        nin = self.ch[x]
        y = self.layer("MatMul", [x, self.const("mm_w", self.randn(nin, nout, scale=np.sqrt(1.0 / nin)))], nout)
        return self.add(y, self.const("mm_b", self.randn(nout, scale=0.1)))

    def cbr(self, x, cout, k=3, stride=1, group=1):
        """Conv -> BatchNormalization -> Relu."""
        return self.relu(self.bn(self.conv_to(x, cout, k, stride, group)))

    def head(self, x, nout=10):
        """GlobalAveragePool -> Flatten -> Gemm."""
        return self.dense(self.flatten(self.gap(x)), nout)


def sandwich(fn=None, C=8, D=6, cin=3, spatial=(8, 8), batch="N", opset=OPSET, seed=0, k1=3, k2=3,
             classes=5, tail=True, weights="init", domains=()):
    """input -> Conv(cin->C) -> fn(g, x) -> Conv(C'->D) -> GlobalAveragePool -> Flatten -> Gemm -> output.

    `fn(g, x)` appends the ops under test and returns the new tensor, or
    (tensor, channels) when it changes the channel count, or (tensor, channels, False)
    to skip the rest (the tensor is then the graph output). Names: the first conv is
    "conv0" (weights "conv0_w"/"conv0_b"), the second "tail" ("tail_w"), the Gemm "fc".
    """
    g = Graph(seed, opset, weights)
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
