"""QOperator models: lifted to QDQ on load, lowered back on export.

A QLinearConv (QLinearMatMul, QGemm, QLinearAdd, QLinearMul, QLinearConcat,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu,
QLinearSoftmax) is the float op between DequantizeLinear of each input and a
QuantizeLinear of its output; ConvInteger and MatMulInteger are the float op over
inputs dequantized with scale 1, then a Cast to int32. `lift` rewrites a model's nodes
that way, so the rules, scores, compensation and requantization of QDQ models apply
(spa.io.quant); `lower` puts the QOperator nodes back, with whatever the prune cut.
The last node of each lifted form is named `<node>` MARK `<op type>`.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from .constants import const_value
from .quant import FIXED

MARK = "__spa_lift__"
MS = "com.microsoft"
LIFTED = {("", "QLinearConv"), ("", "QLinearMatMul"), ("", "ConvInteger"), ("", "MatMulInteger"), (MS, "QGemm"),
          (MS, "QLinearAdd"), (MS, "QLinearMul"), (MS, "QLinearConcat"), (MS, "QLinearGlobalAveragePool"),
          (MS, "QLinearAveragePool"), (MS, "QLinearSigmoid"), (MS, "QLinearLeakyRelu"), (MS, "QLinearSoftmax")}
UNARY = {"QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
         "QLinearSoftmax"}  # X, xs, xz, ys, yz
CORE = {"QLinearConv": "Conv", "QGemm": "Gemm", "QLinearMatMul": "MatMul", "QLinearAdd": "Add", "QLinearMul": "Mul",
        "QLinearConcat": "Concat", "QLinearGlobalAveragePool": "GlobalAveragePool", "ConvInteger": "Conv",
        "QLinearAveragePool": "AveragePool", "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu",
        "QLinearSoftmax": "Softmax",
        "MatMulInteger": "MatMul"}


def lift(proto: onnx.ModelProto) -> tuple:
    """(model, lifted?): the model with its QOperator nodes in QDQ form, or itself."""
    if not any(((n.domain if n.domain != "ai.onnx" else ""), n.op_type) in LIFTED for n in proto.graph.node):
        return proto, False
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    inits = {t.name: t for t in proto.graph.initializer}
    nodes, added = [], []
    for node in proto.graph.node:
        form = _lift(node, inits, opset) if (node.domain if node.domain != "ai.onnx" else "", node.op_type) in LIFTED \
            else None
        if form is None:
            nodes.append(node)
        else:
            nodes.extend(form[0])
            added.extend(form[1])
    if len(nodes) == len(proto.graph.node):
        return proto, False
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added)
    return out, True


def _value(inits, name):
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _lift(node, inits, opset):
    """([nodes], [initializers]) of the QDQ form of one node, or None to keep it."""
    op, n, ins = node.op_type, node.name or node.output[0], list(node.input)
    made, new = [], []

    def dq(x, scale, zp, tag, axis=None):
        s = _value(inits, scale) if scale in inits else next(
            (numpy_helper.to_array(t) for t in new if t.name == scale), None)
        if s is None or (s.size > 1 and (opset < 13 or axis is None)):
            raise _Skip
        out = f"{n}__spa_{tag}"
        attrs = {"axis": axis} if s.size > 1 else {}
        made.append(helper.make_node("DequantizeLinear", [x, scale, zp or ""], [out], name=f"{out}_dq", **attrs))
        return out

    def const(tag, value):
        new.append(numpy_helper.from_array(value, f"{n}__spa_{tag}"))
        return new[-1].name

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    y, core_out = node.output[0], f"{n}__spa_y"
    try:
        if op == "QLinearConv":
            x, w = dq(ins[0], ins[1], ins[2], "x"), dq(ins[3], ins[4], ins[5], "w", axis=0)
            core_ins = [x, w]
            if len(ins) > 8 and ins[8]:
                xs, ws = _value(inits, ins[1]), _value(inits, ins[4])
                bs = (ws.astype(np.float32) * xs.reshape(-1)[0]).astype(np.float32)
                bz = np.zeros(bs.shape, np.int32)
                core_ins.append(dq(ins[8], const("bs", bs), const("bz", bz), "b", axis=0))
            out_ins = [ins[6], ins[7]]
        elif op == "QGemm":  # C: int32 at scale a x b; no y_scale: a float output
            core_ins = [dq(ins[0], ins[1], ins[2], "a"),
                        dq(ins[3], ins[4], ins[5], "b", axis=0 if attrs.get("transB", 0) else 1)]
            if len(ins) > 6 and ins[6]:
                bs = (_value(inits, ins[4]).astype(np.float32) * _value(inits, ins[1]).reshape(-1)[0]).astype(np.float32)
                core_ins.append(dq(ins[6], const("bs", bs), const("bz", np.zeros(bs.shape, np.int32)), "c", axis=0))
            out_ins = [ins[7], ins[8] if len(ins) > 8 else ""] if len(ins) > 7 and ins[7] else []
        elif op == "QLinearMatMul":
            rank = len(inits[ins[3]].dims) if ins[3] in inits else 2
            core_ins = [dq(ins[0], ins[1], ins[2], "a"), dq(ins[3], ins[4], ins[5], "b", axis=rank - 1)]
            out_ins = [ins[6], ins[7]]
        elif op in ("QLinearAdd", "QLinearMul"):
            core_ins = [dq(ins[0], ins[1], ins[2], "a"), dq(ins[3], ins[4], ins[5], "b")]
            out_ins = [ins[6], ins[7]]
        elif op == "QLinearConcat":
            core_ins = [dq(ins[k], ins[k + 1], ins[k + 2], f"in{k}") for k in range(2, len(ins), 3)]
            out_ins = [ins[0], ins[1]]
        elif op in UNARY:
            if attrs.pop("channels_last", 0) or (op == "QLinearSoftmax" and (attrs.pop("opset") >= 13) != (opset >= 13)):
                return None  # NHWC, or a Softmax whose axis means what the model's opset would not
            core_ins = [dq(ins[0], ins[1], ins[2], "x")]
            out_ins = [ins[3], ins[4]]
        else:  # ConvInteger, MatMulInteger: scale 1, integers in float
            one = const("one", np.float32(1))
            wz = _value(inits, ins[3]) if len(ins) > 3 and ins[3] else None
            ones = const("w_scale" + FIXED, np.ones(wz.shape, np.float32)) if wz is not None and wz.size > 1 else \
                const("w_scale" + FIXED, np.float32(1))
            rank = len(inits[ins[1]].dims) if ins[1] in inits else 2
            core_ins = [dq(ins[0], one, ins[2] if len(ins) > 2 else "", "x"),
                        dq(ins[1], ones, ins[3] if len(ins) > 3 else "", "w", axis=0 if op == "ConvInteger" else rank - 1)]
            out_ins = None
    except _Skip:
        return None
    last = f"{n}{MARK}{op}"
    if out_ins == []:  # the op itself ends the form
        made.append(helper.make_node(CORE[op], core_ins, [y], name=last, **attrs))
        return made, new
    made.append(helper.make_node(CORE[op], core_ins, [core_out], name=n, **attrs))  # analyze shows its name
    if out_ins is None:
        made.append(helper.make_node("Cast", [core_out], [y], name=last, to=TensorProto.INT32))
    else:
        made.append(helper.make_node("QuantizeLinear", [core_out, *out_ins], [y], name=last))
    return made, new


class _Skip(Exception):
    """A lifted form onnx cannot express at this opset (or scales that are not constants)."""


def lower(graph: gs.Graph) -> int:
    """Put the QOperator nodes of lifted forms back in a graphsurgeon graph; returns how many."""
    done = 0
    for last in [n for n in graph.nodes if MARK in (n.name or "")]:
        name, op = last.name.split(MARK)
        core = last if last.op == CORE[op] else last.inputs[0].inputs[0]
        parts = [t.inputs[0] for t in core.inputs if t.name]  # the DequantizeLinear of each input
        trip = [list(p.inputs) + [gs.Variable.empty()] * (3 - len(p.inputs)) for p in parts]
        attrs = dict(core.attrs)
        domain = MS if op in UNARY or op in ("QLinearAdd", "QLinearMul", "QLinearConcat", "QGemm") else None
        if op in ("ConvInteger", "MatMulInteger"):
            ins = [trip[0][0], trip[1][0], trip[0][2], trip[1][2]]
            while ins and not ins[-1].name:
                ins.pop()
        elif op == "QLinearConcat":
            ins = list(last.inputs[1:3]) + [t for tr in trip for t in tr]
        elif op == "QGemm":
            ins = trip[0] + trip[1]
            ins.append(_bias(trip[0][1], trip[1][1], parts[2], name) if len(trip) > 2 else gs.Variable.empty())
            ins += list(last.inputs[1:3]) if last is not core else []
            while ins and not ins[-1].name:
                ins.pop()
        elif op in UNARY:
            ins = trip[0] + list(last.inputs[1:3])
            if "Pool" in op:
                attrs["channels_last"] = 0
            if op == "QLinearSoftmax":
                attrs["opset"] = 13 if graph.opset >= 13 else graph.opset
        else:
            ins = trip[0] + trip[1] + list(last.inputs[1:3])
            if op == "QLinearConv" and len(trip) > 2:
                ins.append(_bias(trip[0][1], trip[1][1], parts[2], name))
        node = gs.Node(op, name, attrs, ins, [last.outputs[0]], domain=domain)
        last.outputs.clear()
        graph.nodes.append(node)
        done += 1
    if done:
        graph.cleanup().toposort()
    return done


def _bias(x_scale, w_scale, bias_dq, name):
    """The int32 bias of a QLinearConv: its float value at scale input x weight scale."""
    value = (const_value(bias_dq.inputs[0]).astype(np.float64) - const_value(bias_dq.inputs[2]).astype(np.float64)) \
        * const_value(bias_dq.inputs[1]).astype(np.float64)
    scale = const_value(w_scale).astype(np.float64).reshape(-1) * float(const_value(x_scale).reshape(-1)[0])
    q = np.clip(np.rint(value / np.broadcast_to(scale, value.shape)), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    return gs.Constant(f"{name}_bias_int32", q)
