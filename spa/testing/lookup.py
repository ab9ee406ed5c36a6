"""Accessors for a model's nodes, attributes and constant values, as the rule tests
read them from a pruned model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from spa.runtime import run

from .oracle import feeds


def node(model, name):
    """The node called `name`."""
    return next(n for n in model.graph.node if n.name == name)


def attr(model, node_name, key):
    """The value of attribute `key` of node `node_name`."""
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
    """The node that outputs `tensor`, or None."""
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
    """The shape of a constant."""
    return value(model, tensor).shape


def group_with(analysis, member):
    """The group that has parameter slice `member` (e.g. "conv0_w[0]")."""
    hits = [g for g in analysis.groups if member in g.members]
    assert len(hits) == 1, f"{member}: in {len(hits)} groups: {[g.members for g in analysis.groups]}"
    return hits[0]
