"""MatMulNBits (com.microsoft): lifted to a blocked DequantizeLinear -> MatMul on load,
lowered back on export.

MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?) with attributes K, N, bits and
block_size is A @ W (+ bias), W [K, N] quantized per block of `block_size` along K:
B [N, k_blocks, blob] holds W^T's integers packed lowest bits first, scales are
[N * k_blocks] or [N, k_blocks], zero points are packed like B (default 2^(bits-1)).
The lifted form is the one onnxruntime's MatMulNBitsQuantizer writes for QuantFormat.QDQ:
DequantizeLinear(q [K, N], scale [k_blocks, N], zero point [k_blocks, N], axis 0,
block_size) -> MatMul (-> Add bias), so the rules, scores and requantization of blocked
QDQ weights apply (spa.io.quant): N prunes channel by channel, K in whole blocks.

Below opset 21 onnxruntime cannot run the lifted form (onnx's shape inference can):
onnxruntime then runs the original (load.Model.runnable). The last node of each lifted
form is named `<node>` MARK `s<scale rank>z<zero point rank>a<accuracy_level>`, then
`g:<g_idx name>` where a trivial g_idx was dropped.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from .constants import const_value

MARK = "__spa_nbits__"
MS = "com.microsoft"
SUFFIX = "__spa_nbits"  # ends the name of a lifted constant; the original name is the rest
DEFAULT_ZP = "__spa_nbits_zp"  # a zero point the original leaves out (its default)
DQ = "__spa_nbits_dq"  # ends the name of a lifted DequantizeLinear
TYPES = {4: ml_dtypes.uint4, 8: np.uint8}


def unpack(packed, bits, count):
    """[..., n bytes] of `bits`-bit values, lowest bits first -> [..., count] uint8."""
    per = 8 // bits
    shifts = (np.arange(per) * bits).astype(np.uint8)
    vals = (np.asarray(packed, np.uint8)[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(*vals.shape[:-2], -1)[..., :count]


def pack(values, bits, nbytes, fill=0):
    """[..., count] values of `bits` bits -> [..., nbytes] uint8, lowest bits first, the
    slots past `count` holding `fill`."""
    per = 8 // bits
    v = np.asarray(values).astype(np.uint16)
    v = np.concatenate([v, np.full(v.shape[:-1] + (nbytes * per - v.shape[-1],), fill, np.uint16)], axis=-1)
    v = v.reshape(*v.shape[:-1], nbytes, per)
    return (v << (np.arange(per) * bits).astype(np.uint16)).sum(-1).astype(np.uint8)


def why_not(node, inits, users, read=numpy_helper.to_array) -> str | None:
    """Why a MatMulNBits node (onnx NodeProto) cannot be lifted, or None. `inits`: {name:
    TensorProto} of the initializers, `users`: {tensor name: nodes reading it}, `read`: see lift."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ins = list(node.input) + [""] * (6 - len(node.input))
    where = f"MatMulNBits '{node.name or node.output[0]}'"
    if int(attrs.get("bits", 4)) not in TYPES:
        return f"{where}: {attrs.get('bits')}-bit weights have no ONNX integer type to prune them in"
    if any(i and i not in inits for i in ins[1:5]):
        return f"{where}: its weights are not constants"
    if any(i and users.get(i, 0) > 1 for i in ins[1:5]):
        return f"{where}: its weights are shared with another node"
    if ins[3] and inits[ins[3]].data_type != onnx.TensorProto.UINT8:
        return f"{where}: float zero points are not supported"
    if attrs.get("weight_prepacked", 0):
        return f"{where}: its B is prepacked for one execution provider"
    return _bad_shapes(where, attrs, [inits[i] if i else None for i in ins[1:4]]) or (
        _bad_g_idx(where, attrs, inits[ins[4]], ins[3], read) if ins[4] else None)


def _bad_g_idx(where, attrs, g_idx, zero_points, read):
    """Why a g_idx cannot be dropped, or None: only the trivial one (i // block_size) can,
    and only without zero points (onnxruntime's CPU kernel reads uint8 zero points as
    2^(bits-1) when g_idx is given, and as they are without it)."""
    k, block = int(attrs["K"]), int(attrs["block_size"])
    if list(g_idx.dims) != [k] or g_idx.data_type != onnx.TensorProto.INT32 \
            or not np.array_equal(read(g_idx), np.arange(k) // block):
        return f"{where}: its g_idx (act-order) is not i // block_size: its blocks are not contiguous along K"
    if zero_points:
        return (f"{where}: g_idx with uint8 zero points (onnxruntime's CPU kernel then reads every zero "
                f"point as {1 << (int(attrs['bits']) - 1)}, other kernels as stored)")
    return None


def blocked(node) -> str:
    """Why a MatMulNBits node of a graphsurgeon graph was left as it is (load lifts every
    other one): why_not's answer for the constants the node reads."""
    inits, users = {}, {}
    for i, t in enumerate(node.inputs):
        if isinstance(t, gs.Constant):
            try:
                dtype = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
            except (KeyError, TypeError, ValueError):  # a type onnx has no number for
                dtype = onnx.TensorProto.UNDEFINED
            inits[t.name] = numpy_helper.from_array(np.asarray(const_value(t)), t.name) if i == 4 else \
                onnx.TensorProto(name=t.name, dims=list(t.shape), data_type=dtype)
            users[t.name] = len({id(u) for u in t.outputs})
    attrs = {k: v for k, v in node.attrs.items() if isinstance(v, (int, float, str))}
    proto = helper.make_node(node.op, [t.name for t in node.inputs], [t.name for t in node.outputs],
                             name=node.name, domain=node.domain, **attrs)
    return why_not(proto, inits, users) or f"MatMulNBits '{node.name}' was not lifted to a form SPA can prune"


def _bad_shapes(where, attrs, tensors):
    """Why B, scales and zero points do not fit K, N, bits and block_size, or None."""
    try:
        k, n, bits, block = (int(attrs[a]) for a in ("K", "N", "bits", "block_size"))
    except KeyError:
        return f"{where}: attributes K, N and block_size are required"
    if k < 1 or n < 1 or block < 16 or block & (block - 1):
        return f"{where}: K {k}, N {n} and block_size {block} are not valid"
    blocks = (k + block - 1) // block
    b, scales, zp = tensors
    want = [(b, onnx.TensorProto.UINT8, n * blocks * block * bits // 8),
            (scales, None, n * blocks), (zp, onnx.TensorProto.UINT8, n * ((blocks * bits + 7) // 8))]
    for t, dtype, size in want:
        if t is not None and (int(np.prod(t.dims)) != size or dtype is not None and t.data_type != dtype):
            return f"{where}: its {t.name!r} does not hold {size} values for K {k}, N {n}, bits {bits}"
    if scales.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        return f"{where}: its scales are neither float nor float16"
    return None


def lift(proto: onnx.ModelProto, read=numpy_helper.to_array) -> tuple:
    """(model, lifted?): the model with its MatMulNBits nodes in QDQ form, or itself.
    `read(tensor proto) -> array` reads a weight (load passes one that reads external data)."""
    found = [n for n in proto.graph.node if n.op_type == "MatMulNBits" and n.domain == MS]
    if not found:
        return proto, False
    inits = {t.name: t for t in proto.graph.initializer}
    users: dict = {}
    for n in proto.graph.node:
        for i in set(n.input):
            users[i] = users.get(i, 0) + 1
    nodes, added, dropped = [], [], set()
    for node in proto.graph.node:
        if node.op_type != "MatMulNBits" or node.domain != MS or why_not(node, inits, users, read):
            nodes.append(node)
            continue
        made, new = _lift(node, inits, read)
        nodes.extend(made)
        added.extend(new)
        dropped.update(i for i in node.input[1:5] if i)
    if not added:
        return proto, False
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [t for t in out.graph.initializer if t.name not in dropped]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + added)
    return out, True


def _lift(node, inits, read):
    """([nodes], [initializers]) of one MatMulNBits node's lifted form."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = (int(attrs[a]) for a in ("K", "N", "bits", "block_size"))
    ins = list(node.input) + [""] * (6 - len(node.input))
    name = node.name or node.output[0]
    blocks = (k + block - 1) // block
    b = read(inits[ins[1]]).reshape(n, blocks, -1)
    q = unpack(b, bits, block).reshape(n, blocks * block)[:, :k].T
    scale = read(inits[ins[2]]).reshape(n, blocks).T
    if ins[3]:
        zp = unpack(read(inits[ins[3]]).reshape(n, -1), bits, blocks).T
        zname, zrank = ins[3] + SUFFIX, len(inits[ins[3]].dims)
    else:
        zp, zname, zrank = np.full((blocks, n), 1 << (bits - 1), np.uint8), name + DEFAULT_ZP, 0
    dtype = TYPES[bits]
    new = [numpy_helper.from_array(np.ascontiguousarray(q.astype(dtype)), ins[1] + SUFFIX),
           numpy_helper.from_array(np.ascontiguousarray(scale), ins[2] + SUFFIX),
           numpy_helper.from_array(np.ascontiguousarray(zp.astype(dtype)), zname)]
    w, y = f"{name}__spa_nbits_w", node.output[0]
    last = f"{name}{MARK}s{len(inits[ins[2]].dims)}z{zrank}a{int(attrs.get('accuracy_level', -1))}"
    if ins[4]:  # a trivial g_idx (why_not): dropped, written again for the new K on export
        last += f"g:{ins[4]}"
    made = [helper.make_node("DequantizeLinear", [t.name for t in new], [w], name=name + DQ,
                             axis=0, block_size=block)]
    if ins[5]:
        made += [helper.make_node("MatMul", [ins[0], w], [f"{name}__spa_nbits_y"], name=name),
                 helper.make_node("Add", [f"{name}__spa_nbits_y", ins[5]], [y], name=last)]
    else:
        made.append(helper.make_node("MatMul", [ins[0], w], [y], name=last))
    return made, new


def lifted(t) -> bool:
    """A weight tensor that a lifted MatMulNBits form dequantizes."""
    return len(t.inputs) == 1 and (t.inputs[0].name or "").endswith(DQ)


def lifted_part(t) -> bool:
    """The integers, scale or zero point that a lifted MatMulNBits form dequantizes."""
    return any((n.name or "").endswith(DQ) for n in t.outputs)


def lower(graph: gs.Graph) -> int:
    """Put the MatMulNBits nodes of lifted forms back in a graphsurgeon graph; returns how many."""
    done = 0
    for last in [n for n in graph.nodes if MARK in (n.name or "")]:
        name, spec = last.name.split(MARK, 1)
        srank, zrank, acc, g_idx = re.fullmatch(r"s(\d)z(\d)a(-?\d+)(?:g:(.*))?", spec, re.S).groups()
        srank, zrank, acc = int(srank), int(zrank), int(acc)
        mm = last if last.op == "MatMul" else last.inputs[0].inputs[0]
        dq = mm.inputs[1].inputs[0]
        q, scale, zp = (const_value(t) for t in dq.inputs[:3])
        k, n = q.shape
        block, blocks = int(dq.attrs["block_size"]), scale.shape[0]
        bits = 4 if q.dtype.name == "uint4" else 8
        z = zp.astype(np.uint8).T  # [N, k_blocks]
        ints = np.zeros((n, blocks * block), np.uint8)  # a short last block is padded with 0, as the quantizer does
        ints[:, :k] = q.astype(np.uint8).T
        b = pack(ints.reshape(n, blocks, block), bits, block * bits // 8)
        s = np.ascontiguousarray(scale.T)
        ins = [mm.inputs[0], gs.Constant(_orig(dq.inputs[0].name), b),
               gs.Constant(_orig(dq.inputs[1].name), s.reshape(-1) if srank == 1 else s)]
        if zrank:
            zb = pack(z, bits, (blocks * bits + 7) // 8, fill=1 << (bits - 1))  # padded as the quantizer does
            ins.append(gs.Constant(_orig(dq.inputs[2].name), zb.reshape(-1) if zrank == 1 else zb))
        if g_idx is not None:
            ins += [gs.Variable.empty()] * (4 - len(ins)) + [gs.Constant(g_idx, (np.arange(k) // block).astype(np.int32))]
        if last.op == "Add":
            ins += [gs.Variable.empty()] * (5 - len(ins)) + [last.inputs[1]]
        attrs = {"K": k, "N": n, "bits": bits, "block_size": block}
        if acc >= 0:
            attrs["accuracy_level"] = acc
        graph.nodes.append(gs.Node("MatMulNBits", name, attrs, ins, [last.outputs[0]], domain=MS))
        last.outputs.clear()
        done += 1
    if done:
        graph.cleanup().toposort()
    return done


def _orig(name):
    return name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
