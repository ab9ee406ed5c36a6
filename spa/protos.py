"""Plain ModelProto helpers every stage may use: walking tensors, element types, the
declared interface."""

from __future__ import annotations

import numpy as np
import onnx

# ONNX element types SPA can feed, as numpy types; onnxruntime's "tensor(float)" names too.
NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
            onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
            onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_,
            onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8}
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def walk_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph and its subgraphs: initializers, sparse parts, attributes."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        yield from attr_tensors(node.attribute)


def attr_tensors(attrs):
    """Every TensorProto held by these node attributes, subgraphs included."""
    for a in attrs:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        if a.HasField("sparse_tensor"):
            yield a.sparse_tensor.values
            yield a.sparse_tensor.indices
        if a.HasField("g"):
            yield from walk_tensors(a.g)
        for g in a.graphs:
            yield from walk_tensors(g)


def model_tensors(model: onnx.ModelProto):
    """Every TensorProto of a model, its local functions included."""
    yield from walk_tensors(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield from attr_tensors(node.attribute)


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model_tensors(model))


def value_infos(vis, unknown=None) -> list:
    """(name, element type, dims) of value infos; a symbolic dim is its name, or `unknown`."""
    out = []
    for vi in vis:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param if unknown is None else unknown)
                     for d in tt.shape.dim)
        out.append((vi.name, tt.elem_type, dims))
    return out


def graph_inputs(proto: onnx.ModelProto) -> list:
    """The graph inputs that are fed at run time (not initializers)."""
    inits = {t.name for t in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in inits]
