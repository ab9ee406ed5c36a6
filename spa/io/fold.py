"""Fold shape arithmetic that does not follow a dynamic input dim into constants.

The TorchScript exporter computes Reshape targets, head counts and attention scales at
run time from Shape nodes; the dynamo exporter writes the same values as constants.
Folding makes both look alike to the channel rules: a value computed from shapes alone
becomes a constant where it is the same at two input sizes, and a Reshape target with one
entry that follows a dynamic dim gets -1 there. Other mixed vectors are rebuilt as a Concat
of constants and Gathers of the run-time entries.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..runtime import session
from .constants import const_value

SMALL = 4096  # elements: larger values are data, not shape arithmetic
NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty"}


def _small(shape):
    return shape is not None and all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= SMALL


# inputs whose values set the output shape; other ops' output shapes follow input shapes
VALUE_SHAPED = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
                "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Resize": (2, 3), "Upsample": (1,), "OneHot": (1,),
                "Split": (1,), "TopK": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "CenterCropPad": (1,),
                "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
                "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
                "ReduceSumSquare": (1,)}
DATA_SHAPED = {"NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop", "Scan", "If", "StringSplit",
               "RegexFullMatch", "Optional", "OptionalGetElement"}


def _domain(graph, shapes):
    """Nodes that compute from shapes and small constants alone, in graph order; the
    names of their outputs, and of those among them that read a shape.

    A Shape node counts unless its input's shape may depend on data: it descends from an
    op like NonZero, from an op outside the default domain, or from a Reshape-like op
    whose target is computed from data.
    """
    derived, shaped, data_shaped, nodes = set(), set(), set(), []
    for node in graph.nodes:
        ins = [t for t in node.inputs if t.name]
        std = (node.domain or "") in ("", "ai.onnx")
        if not std or node.op in DATA_SHAPED or any(t.name in data_shaped for t in ins) or any(
                k < len(node.inputs) and node.inputs[k].name and node.inputs[k].name not in derived
                and const_value(node.inputs[k]) is None for k in VALUE_SHAPED.get(node.op, ())):
            data_shaped.update(o.name for o in node.outputs)
        if not std or node.op in NOT_FOLDED or not node.outputs:
            continue
        if not all(_small(shapes.get(o.name)) for o in node.outputs):
            continue
        if node.op in ("Shape", "Size"):
            x = node.inputs[0]
            if x.name in data_shaped or not all(isinstance(d, int) for d in shapes.get(x.name) or (None,)):
                continue
        elif not ins or not all(
                t.name in derived or _small(shapes.get(t.name)) and const_value(t) is not None for t in ins):
            continue
        nodes.append(node)
        derived.update(o.name for o in node.outputs)
        if node.op in ("Shape", "Size") or any(t.name in shaped for t in ins):
            shaped.update(o.name for o in node.outputs)
    return nodes, derived, shaped


def _evaluate(nodes, shapes, opset):
    """Values of every output of `nodes` at the given tensor shapes, or None."""
    feeds, inits, outputs = {}, [], []
    produced = {o.name for n in nodes for o in n.outputs}
    protos = []
    for n in nodes:
        if n.op in ("Shape", "Size"):
            dims = shapes.get(n.inputs[0].name)
            if dims is None or not all(isinstance(d, int) for d in dims):
                return None  # not known at these input sizes
            dims = np.array(dims, dtype=np.int64)
            if n.op == "Size":
                value = np.array(np.prod(dims), dtype=np.int64)
            else:
                rank = len(dims)
                start = int(n.attrs.get("start", 0))
                end = int(n.attrs.get("end", rank))
                value = dims[slice(max(start + rank, 0) if start < 0 else start,
                                   max(end + rank, 0) if end < 0 else end)]
            feeds[n.outputs[0].name] = value
            continue
        for t in n.inputs:
            if t.name and t.name not in produced and t.name not in {i.name for i in inits}:
                inits.append(onnx.numpy_helper.from_array(np.asarray(const_value(t)), t.name))
        attrs = {k: onnx.numpy_helper.from_array(np.asarray(v.values)) if isinstance(v, gs.Constant) else v
                 for k, v in n.attrs.items()}
        protos.append(onnx.helper.make_node(n.op, [t.name for t in n.inputs], [o.name for o in n.outputs],
                                            name=n.name, **attrs))
        outputs.extend(o.name for o in n.outputs)
    if not protos:
        return dict(feeds)
    graph = onnx.helper.make_graph(
        protos, "fold",
        [onnx.helper.make_tensor_value_info(k, onnx.TensorProto.INT64, v.shape) for k, v in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    ids = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=ids, ir_version=onnx.helper.find_min_ir_version_for(ids))
    try:
        sess = session(model.SerializeToString())
        values = dict(zip(outputs, sess.run(outputs, {k: v for k, v in feeds.items()
                                                       if k in {i.name for i in sess.get_inputs()}})))
    except Exception:  # a subgraph onnxruntime cannot run is left as it is
        return None
    values.update(feeds)
    return values


def evaluates(graph: gs.Graph, shapes: dict, other: dict, opset: int) -> bool:
    """Whether the shape arithmetic of `graph` (at load's `shapes`) can be worked out at the
    tensor shapes `other` of another input size: where it cannot, fold learns nothing there."""
    nodes, _, _ = _domain(graph, shapes)
    return not nodes or _evaluate(nodes, other, opset) is not None


def fold(graph: gs.Graph, shapes: dict, others: list, opset: int) -> int:
    """Replace shape arithmetic in `graph` by constants where it is static; returns how
    many consumer inputs changed. `others` holds the tensor shapes at other input sizes
    (load._bumped_shapes): a value is static when it is the same at all of them."""
    nodes, derived, shaped = _domain(graph, shapes)
    if not nodes:
        return 0
    a = _evaluate(nodes, shapes, opset)
    bs = [_evaluate(nodes, other, opset) for other in others] if a is not None else []
    if a is None or (bs and bs[0] is None):  # the +1 probe is required
        return 0
    bs = [b for b in bs if b is not None]  # the second probe only where it evaluates
    outputs = {t.name for t in graph.outputs}
    tensors = graph.tensors()
    changed, made = 0, {}
    for name in sorted((shaped | _shape_args(nodes, derived)) - outputs):
        t = tensors[name]
        users = [n for n in t.outputs if not all(o.name in derived for o in n.outputs)]
        va, vbs = a.get(name), [b.get(name) for b in bs]
        if _gather_as_reshape(t, users, va, vbs, shapes):
            changed += 1
            continue
        if not users or va is None or any(vb is None or va.shape != vb.shape for vb in vbs):
            continue
        static = np.ones(va.shape, bool)
        for vb in vbs:
            static &= (va == vb) | (np.isnan(va) & np.isnan(vb)) if va.dtype.kind == "f" else va == vb
        if static.all():  # the tensor becomes a constant under its own name
            t.to_constant(np.array(va))
            t.inputs.clear()
            changed += 1
            continue
        for user in users:
            slot = [k for k, t in enumerate(user.inputs) if t.name == name]
            key = (name, _kind(va, static, user, slot))
            if key not in made:
                made[key] = _replacement(graph, tensors[name], va, static, key[1])
            if made[key] is not None:
                for k in slot:
                    user.inputs[k] = made[key]
                changed += 1
    if changed:
        graph.cleanup().toposort()
    return changed


def _shape_args(nodes, derived) -> set:
    """Values computed from constants alone that set a shape elsewhere (a Pad's pads built
    by the TorchScript exporter from a ConstantOfShape, a Concat and a Transpose)."""
    out = set()
    for n in nodes:
        for o in n.outputs:
            for user in o.outputs:
                if any(u.name in derived for u in user.outputs):
                    continue
                slots = VALUE_SHAPED.get(user.op, ())
                if any(k < len(user.inputs) and user.inputs[k].name == o.name for k in slots):
                    out.add(o.name)
    return out


def _gather_as_reshape(t, users, va, vbs, shapes) -> bool:
    """Gathers of a 1-D tensor at indices `t` that are 0..n-1 in order at every probed
    size (the dynamo exporter's lowering of an as_strided view) become Reshapes to the
    indices' shape, with -1 for the one dim that follows an input dim; True if any did."""
    values = [va, *vbs]
    if va is None or va.dtype.kind not in "iu" or any(v is None or v.ndim != va.ndim for v in values):
        return False
    if not all(np.array_equal(v.reshape(-1), np.arange(v.size)) for v in values):
        return False
    target = [d[0] if len(set(d)) == 1 else -1 for d in zip(*(v.shape for v in values))]
    if target.count(-1) > 1:
        return False
    done = False
    for user in users:
        data = user.inputs[0]
        if user.op != "Gather" or int(user.attrs.get("axis", 0)) != 0 or user.inputs[1] is not t \
                or len(shapes.get(data.name) or ()) != 1:
            continue
        user.op = "Reshape"
        user.attrs.clear()
        user.inputs[1] = gs.Constant(f"{t.name}_as_reshape", np.asarray(target, np.int64))
        done = True
    return done


def _kind(value, static, user, slot):
    """How to replace a partly static value: "reshape" (-1 at its one dynamic entry),
    "mixed" (a Concat of constants and Gathers) or "keep"."""
    if static.any() and user.op == "Pad" and slot == [1] and value.ndim == 1:
        return "mixed"  # the Pad rule reads which axes are padded from the constant entries
    if not static.any() or user.op != "Reshape" or slot != [1] or value.ndim != 1:
        return "keep"  # other ops' rules read run-time targets; a Reshape's rewrites constants
    if static.sum() == len(value) - 1 and -1 not in value[static] \
            and not (user.attrs.get("allowzero", 0) and 0 in value[static]):
        return "reshape"
    return "mixed"


def _replacement(graph, t, value, static, kind):
    """The tensor to read instead of `t`, or None to keep it."""
    name = f"{t.name}_{kind}"
    if kind == "reshape":
        return gs.Constant(name, np.where(static, value, -1).astype(np.int64))
    if kind == "keep" or value.ndim != 1 or value.dtype != np.int64:
        return None
    parts, k = [], 0
    while k < len(value):
        j = k
        while j < len(value) and static[j] == static[k]:
            j += 1
        if static[k]:
            parts.append(gs.Constant(f"{name}_{k}", value[k:j].astype(np.int64)))
        else:
            out = gs.Variable(f"{name}_{k}", np.int64, (j - k,))
            idx = gs.Constant(f"{name}_{k}_at", np.arange(k, j, dtype=np.int64))
            graph.nodes.append(gs.Node("Gather", f"{name}_gather_{k}", {"axis": 0}, [t, idx], [out]))
            parts.append(out)
        k = j
    out = gs.Variable(name, np.int64, value.shape)
    graph.nodes.append(gs.Node("Concat", f"{name}_concat", {"axis": 0}, parts, [out]))
    return out


RECURRENT_WEIGHTS = {"LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}  # W, R, B (and LSTM's P)
WEIGHT_VIEWS = {"Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Identity", "Cast", "Split"}


def fold_weights(graph: gs.Graph, shapes: dict, opset: int) -> int:
    """Recurrent weights computed from constants alone become constants: the dynamo exporter
    slices PyTorch's gate blocks, concatenates them in ONNX's order and adds the direction
    axis at run time, so W and R were no parameters and the hidden size could not be pruned.
    Only views and concatenations of constants are evaluated. Returns how many were folded."""
    done = 0
    for node in list(graph.nodes):
        if (node.domain or "") not in ("", "ai.onnx"):
            continue
        for k in RECURRENT_WEIGHTS.get(node.op, ()):
            t = node.inputs[k] if k < len(node.inputs) else None
            if t is None or not t.name or isinstance(t, gs.Constant):
                continue
            views = _views_of_constants(t)
            values = None if views is None else _evaluate([n for n in graph.nodes if id(n) in views], shapes, opset)
            if values is not None and t.name in values:
                folded = gs.Constant(f"{t.name}_folded", values[t.name])
                node.inputs[k] = folded
                shapes[folded.name] = tuple(folded.values.shape)
                done += 1
    if done:
        graph.cleanup().toposort()
    return done


def _views_of_constants(t, limit=64) -> set | None:
    """ids of the WEIGHT_VIEWS nodes that compute t from constants alone, else None."""
    nodes, todo, seen = set(), [t], set()
    while todo:
        x = todo.pop()
        if isinstance(x, gs.Constant) or x.name in seen:
            continue
        seen.add(x.name)
        if len(x.inputs) != 1 or x.inputs[0].op not in WEIGHT_VIEWS or len(nodes) >= limit:
            return None
        nodes.add(id(x.inputs[0]))
        todo += [i for i in x.inputs[0].inputs if i.name]
    return nodes
