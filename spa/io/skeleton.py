"""Shape inference and the full checker without shipping the weights to C++.

onnx's shape inference and `check_model(full_check=True)` serialise the whole model and
parse it back; with hundreds of MB of weights that dominates a prune. Inference needs
only the weights' types and dims, so it runs on a skeleton: a copy in which every large
float tensor (initializer or Constant node) is a typed graph input instead.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

BIG = 1024  # elements; smaller tensors (shape constants among them) keep their data
FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _big(t: TensorProto) -> bool:
    return t.data_type in FLOATS and math.prod(t.dims) > BIG


def _big_constant(node) -> TensorProto | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    a = node.attribute[0]
    return a.t if a.name == "value" and _big(a.t) else None


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose large float tensors are graph inputs of the same type."""
    out = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, s = model.graph, out.graph
    s.name = g.name
    s.input.extend(g.input)
    s.output.extend(g.output)
    s.value_info.extend(g.value_info)
    s.sparse_initializer.extend(g.sparse_initializer)
    listed = {i.name for i in g.input}
    for t in g.initializer:
        if not _big(t):
            s.initializer.append(t)
        elif t.name not in listed:
            s.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    for node in g.node:
        t = _big_constant(node)
        if t is None:
            s.node.append(node)
        else:
            s.input.append(helper.make_tensor_value_info(node.output[0], t.data_type, t.dims))
    return out


def infer(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """onnx.shape_inference.infer_shapes on the skeleton (its value_info and outputs
    are those of the full model)."""
    return onnx.shape_inference.infer_shapes(skeleton(model), **options)


def with_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto, names=None) -> onnx.ModelProto:
    """`model` (in place) with the value_info (only of `names`, when given) and output types of `inferred`."""
    del model.graph.value_info[:]
    model.graph.value_info.extend(vi for vi in inferred.graph.value_info if names is None or vi.name in names)
    outs = {o.name: o for o in inferred.graph.output}
    for o in model.graph.output:
        if o.name in outs:
            o.CopyFrom(outs[o.name])
    return model


def full_check(model: onnx.ModelProto | str, blob: bytes | None = None, checked: bool = False):
    """What `check_model(model, full_check=True)` checks: the checker (on `blob`, the
    model serialised, when given; skipped if `checked`), then strict shape inference with
    type checks. Raises what they raise."""
    if not checked:  # a path: the checker also finds the external data files beside it
        onnx.checker.check_model(blob if blob is not None else model)
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model, load_external_data=False)
    infer(model, check_type=True, strict_mode=True)
