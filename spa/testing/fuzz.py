"""The fuzz case generator: seed models and their mutations.

Seeds are the test architectures of spa.testing.nets, quantized forms of three of them
(QDQ, QOperator and dynamic, by onnxruntime's quantizer), a 4-bit MatMulNBits MLP
(MatMulNBitsQuantizer), models/mnist_cnn.onnx, and an
external-data model. Each case applies one to three mutations, at byte level (bit
flips, overwrites, truncation, insertion, deletion, splicing) or field level (op
types, attributes, inputs, initializer dims/types/data, graph inputs and outputs,
opsets, external-data locations). Case i is reproducible from (seed, i).
Running and checking cases: spa.testing.fuzz_run; the command line: tools/fuzz.py.
"""

from __future__ import annotations

import os
import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import REPO
from .nets import ALL
from .quant import matmul_mlp, quantize, quantize_nbits

ARGS = [["--ratio", "0.3"], ["--ratio", "0.5", "--global"], ["--target-macs", "0.3"],
        ["--ratio", "0.3", "--round-to", "4"], ["--ratio", "0.3", "--external-data"]]
OPS = ["Relu", "Conv", "Add", "Mul", "Gemm", "MatMul", "Reshape", "Concat", "Split", "Slice", "Flatten",
       "Transpose", "BatchNormalization", "Identity", "Foo", "If", "Loop", "QuantizeLinear", "Resize", "Pad"]
INTS = [0, 1, -1, 2, 3, 7, 64, -2 ** 31, 2 ** 31 - 1, 2 ** 40, -(2 ** 63), 2 ** 63 - 1]
FLOATS = [0.0, -1.0, 1e30, float("nan"), float("inf"), -float("inf")]
QUANTIZED = [("resnet", "qdq"), ("mobilenetv2", "qop"), ("conv_bn_relu", "dynamic")]
LOCATIONS = ["../escape.data", "/etc/passwd", "/dev/zero", "missing.data", "model.onnx", "sub/../../x.data",
             "link.data", ".", "", "data.bin"]


# -- seeds ------------------------------------------------------------------------
def seeds(folder) -> list[tuple[str, bytes, bytes | None]]:
    """(name, model bytes, data-file bytes or None) for every seed model."""
    out = [(name, fn().SerializeToString(), None) for name, fn in sorted(ALL.items())]
    for name, fmt in QUANTIZED:  # quantized mutants: QDQ and QOperator forms of two nets
        out.append((f"{name}_{fmt}", quantize(ALL[name](), fmt).SerializeToString(), None))
    out.append(("mlp_nbits", quantize_nbits(matmul_mlp((64, 96, 32))).SerializeToString(), None))  # MatMulNBits
    with open(os.path.join(REPO, "models", "mnist_cnn.onnx"), "rb") as f:
        out.append(("mnist_cnn", f.read(), None))
    path = os.path.join(folder, "model.onnx")
    onnx.save(ALL["reshape_head"](), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="data.bin", size_threshold=0)
    with open(path, "rb") as f, open(os.path.join(folder, "data.bin"), "rb") as d:
        out.append(("external", f.read(), d.read()))
    return out


# -- byte-level mutations -----------------------------------------------------------
def flip_bits(rng, b, _):
    """Flip one to eight random bits."""
    b = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def set_bytes(rng, b, _):
    """Overwrite up to 16 bytes with edge values."""
    b = bytearray(b)
    for _ in range(rng.randint(1, 16)):
        b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(b)


def truncate(rng, b, _):
    """Cut the bytes short."""
    return b[:rng.randrange(len(b))]


def insert(rng, b, _):
    """Insert up to 32 random bytes."""
    i = rng.randrange(len(b) + 1)
    return b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + b[i:]


def delete(rng, b, _):
    """Delete up to 64 bytes."""
    i = rng.randrange(len(b))
    return b[:i] + b[i + rng.randint(1, 64):]


def splice(rng, b, other):
    """Insert a piece of another seed model."""
    i, j = rng.randrange(len(b)), rng.randrange(len(other))
    return b[:i] + other[j:j + rng.randint(1, 4096)] + b[i:]


BYTE_MUTATIONS = [flip_bits, set_bytes, truncate, insert, delete, splice]


# -- field-level mutations ------------------------------------------------------------
def _names(m):
    names = [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer]
    return names + [o for n in m.graph.node for o in n.output]


def op_type(rng, m):
    """Change a node's op type."""
    if m.graph.node:
        rng.choice(m.graph.node).op_type = rng.choice(OPS)


def attribute(rng, m):
    """Set an attribute to an edge value, or change its type."""
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return
    a = rng.choice(rng.choice(nodes).attribute)
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(INTS)
    elif a.type == onnx.AttributeProto.INTS and len(a.ints):
        a.ints[rng.randrange(len(a.ints))] = rng.choice(INTS)
        if rng.random() < 0.3:
            a.ints.append(rng.choice(INTS))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice(FLOATS)
    elif a.type == onnx.AttributeProto.TENSOR:
        a.t.dims.append(rng.choice([0, 2, 3]))
    else:
        a.type = rng.choice([onnx.AttributeProto.INT, onnx.AttributeProto.FLOATS, onnx.AttributeProto.GRAPH])


def rewire(rng, m):
    """Point a node input at another tensor, an empty name or nothing."""
    if m.graph.node:
        n = rng.choice(m.graph.node)
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(_names(m) + ["", "nowhere"])


def drop_node(rng, m):
    """Remove a node."""
    if m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]


def duplicate_output(rng, m):
    """Give two nodes the same output."""
    if len(m.graph.node) > 1:
        a, b = rng.sample(list(m.graph.node), 2)
        a.output[0] = b.output[0]


def init_dims(rng, m):
    """Change or add an initializer dim."""
    if m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        if t.dims and rng.random() < 0.7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, 10 ** 6, 2 ** 40, -1])
        else:
            t.dims.append(rng.choice([1, 2, 10 ** 9]))


def init_data(rng, m):
    """Change an initializer's data type, or cut, replace or pad its data."""
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    choice = rng.randrange(4)
    if choice == 0:
        t.data_type = rng.choice([0, 2, 8, 16, 22, 55, rng.randrange(30)])
    elif choice == 1 and t.raw_data:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)]
    elif choice == 2:
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.randint(0, 8))
    else:
        t.raw_data = t.raw_data + b"\0" * rng.randint(1, 64)


def graph_input(rng, m):
    """Change a graph input's dim or element type."""
    vi = rng.choice(list(m.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims and rng.random() < 0.7:
        d = dims[rng.randrange(len(dims))]
        d.Clear()
        if rng.random() < 0.8:
            d.dim_value = rng.choice([0, 1, 2, 10 ** 5, 10 ** 9, 2 ** 40])
        else:
            d.dim_param = rng.choice(["N", "M", ""])
    else:
        vi.type.tensor_type.elem_type = rng.choice([0, 2, 7, 8, 10, 11, 16, 99])


def graph_output(rng, m):
    """Remove, duplicate or rename a graph output."""
    choice = rng.randrange(3)
    if choice == 0 and len(m.graph.output) > 0:
        del m.graph.output[rng.randrange(len(m.graph.output))]
    elif choice == 1:
        m.graph.output.add().CopyFrom(m.graph.output[0] if m.graph.output else onnx.ValueInfoProto(name="y"))
    else:
        out = rng.choice(list(m.graph.output)) if m.graph.output else m.graph.output.add()
        out.name = rng.choice(_names(m) + ["nowhere"])


def opset(rng, m):
    """Change the opset, the IR version or a node's domain, or drop the opsets."""
    choice = rng.randrange(4)
    if choice == 0 and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 6, 9, 11, 13, 21, 23, 30, 999])
    elif choice == 1:
        m.ir_version = rng.choice([0, 1, 3, 4, 7, 10, 11, 99])
    elif choice == 2 and m.graph.node:
        rng.choice(m.graph.node).domain = rng.choice(["com.microsoft", "ai.onnx.ml", "com.evil", "ai.onnx"])
        if rng.random() < 0.5:
            m.opset_import.append(helper.make_opsetid("com.evil", 1))
    else:
        del m.opset_import[:]


def external(rng, m):
    """Move an initializer to external data, with an odd location, offset or length."""
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    if t.data_location != TensorProto.EXTERNAL:
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
        t.external_data.add(key="location", value="data.bin")
    entries = {e.key: e for e in t.external_data}
    choice = rng.randrange(3)
    if choice == 0 and "location" in entries:
        entries["location"].value = rng.choice(LOCATIONS)
    elif choice == 1:
        t.external_data.add(key="offset", value=str(rng.choice([-1, 0, 3, 10 ** 12, 4096])))
    else:
        t.external_data.add(key="length", value=rng.choice(["-5", "0", "1", "x", str(10 ** 12)]))


def subgraph(rng, m):
    """Wrap one node in the then-branch of an If on a constant condition."""
    if not m.graph.node:
        return
    i = rng.randrange(len(m.graph.node))
    n = m.graph.node[i]
    body = helper.make_graph([n], "then", [], [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", [n.input[0] if n.input else "x"], [n.output[0] + "_e"])],
                              "else", [], [helper.make_tensor_value_info(n.output[0] + "_e", TensorProto.FLOAT, None)])
    cond = f"cond_{i}"
    m.graph.initializer.append(numpy_helper.from_array(np.array(True), cond))
    node = helper.make_node("If", [cond], [n.output[0]], then_branch=body, else_branch=other)
    del m.graph.node[i]
    m.graph.node.insert(i, node)


def weights(rng, m):
    """Valid but odd weights: NaN, inf, zeros, huge values, a zeroed channel."""
    floats = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT and t.dims
              and t.data_location != TensorProto.EXTERNAL]
    if not floats:
        return
    t = rng.choice(floats)
    try:
        a = numpy_helper.to_array(t).copy()
    except Exception:  # an earlier mutation broke this tensor
        return
    choice = rng.randrange(3)
    if choice == 0:
        a.reshape(-1)[rng.randrange(a.size)] = rng.choice(FLOATS)
    elif choice == 1:
        a[rng.randrange(a.shape[0])] = 0
    else:
        a[...] = rng.choice([0.0, 1.0, 1e-30])
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def spatial(rng, m):
    """Small valid-looking changes: input sizes, small attribute values."""
    if rng.random() < 0.5 and m.graph.input:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        if len(dims) > 2:
            dims[rng.randrange(2, len(dims))].dim_value = rng.randint(1, 40)
        return
    nodes = [n for n in m.graph.node if any(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)
                                            for a in n.attribute)]
    if nodes:
        a = rng.choice([a for a in rng.choice(nodes).attribute
                        if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)])
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.randint(0, 3)
        elif len(a.ints):
            a.ints[rng.randrange(len(a.ints))] = rng.randint(0, 3)


BENIGN = [weights, spatial]
FIELD_MUTATIONS = [op_type, attribute, rewire, drop_node, duplicate_output, init_dims, init_data,
                   graph_input, graph_output, opset, external, subgraph] + BENIGN * 3


def mutate(rng, data, others):
    """One to three mutations; field-level ones parse, change and re-serialise."""
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.4 or not data:
            fn = rng.choice(BYTE_MUTATIONS)
            data = fn(rng, data or b"\0", rng.choice(others)) if data else data
            continue
        m = onnx.ModelProto()
        try:
            m.ParseFromString(data)
        except Exception:  # already broken bytes: mutate them at byte level instead
            data = rng.choice(BYTE_MUTATIONS)(rng, data, rng.choice(others))
            continue
        if not m.graph.input:
            continue
        rng.choice(FIELD_MUTATIONS)(rng, m)
        try:
            data = m.SerializeToString()
        except Exception:  # a field made the message unserialisable; keep the last bytes
            pass
    return data


def make_case(seed, index, seed_models, folder, command="prune"):
    """Write case `index` into `folder`; returns (args, label)."""
    rng = random.Random(f"{seed}:{index}")
    name, data, ext = rng.choice(seed_models)
    data = mutate(rng, data, [s[1] for s in seed_models])
    with open(os.path.join(folder, "model.onnx"), "wb") as f:
        f.write(data)
    if ext is not None:
        cut = len(ext) if rng.random() < 0.8 else rng.randrange(len(ext))
        with open(os.path.join(folder, "data.bin"), "wb") as f:
            f.write(ext[:cut])
    if rng.random() < 0.05:  # a link out of the folder, for locations that name it
        os.symlink("/etc/hostname", os.path.join(folder, "link.data"))
    args = rng.choice(ARGS)
    if command == "analyze":
        return ["analyze", os.path.join(folder, "model.onnx"), "--json"], name
    return ["prune", os.path.join(folder, "model.onnx"), os.path.join(folder, "out.onnx")] + args, name
