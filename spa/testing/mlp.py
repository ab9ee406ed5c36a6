"""A Llama-style stack of MLP blocks, x + W_down(Relu(x W_gate) * (x W_up)), with its
float32 weights in one external data file (aligned to 4 KiB): the large model of
tools/memory_bench.py, and a small one for the tests of external data."""

from __future__ import annotations

import os

import numpy as np
from onnx import TensorProto, helper

ALIGN = 4096


def build(folder, blocks=6, hidden=4096, inter=11008, seq=8, seed=0) -> str:
    """Write llama_mlp.onnx and llama_mlp.onnx.data into `folder`, one tensor at a time."""
    path = os.path.join(folder, "llama_mlp.onnx")
    rng = np.random.default_rng(seed)
    nodes, inits, h = [], [], "x"
    with open(path + ".data", "wb") as f:
        for i in range(blocks):
            for name, shape in (("gate", (hidden, inter)), ("up", (hidden, inter)), ("down", (inter, hidden))):
                w = rng.standard_normal(shape, dtype=np.float32)
                w *= np.float32(1 / np.sqrt(shape[0]))
                f.write(b"\0" * (-f.tell() % ALIGN))
                t = TensorProto(name=f"b{i}.{name}", data_type=TensorProto.FLOAT, dims=shape,
                                data_location=TensorProto.EXTERNAL)
                for key, value in (("location", os.path.basename(f.name)), ("offset", str(f.tell())),
                                   ("length", str(w.nbytes))):
                    e = t.external_data.add()
                    e.key, e.value = key, value
                f.write(w.data)
                inits.append(t)
            p = f"b{i}."
            nodes += [helper.make_node("MatMul", [h, p + "gate"], [p + "g"], name=p + "gate_mm"),
                      helper.make_node("Relu", [p + "g"], [p + "a"], name=p + "relu"),
                      helper.make_node("MatMul", [h, p + "up"], [p + "u"], name=p + "up_mm"),
                      helper.make_node("Mul", [p + "a", p + "u"], [p + "m"], name=p + "mul"),
                      helper.make_node("MatMul", [p + "m", p + "down"], [p + "d"], name=p + "down_mm"),
                      helper.make_node("Add", [h, p + "d"], [p + "h"], name=p + "residual")]
            h = p + "h"
    graph = helper.make_graph(nodes, "llama_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, seq, hidden])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="spa-memory-bench")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path
