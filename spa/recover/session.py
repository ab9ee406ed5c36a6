"""onnxruntime sessions over a prefix of a model, with chosen tensors as outputs."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort

from .. import runtime
from ..runtime import options, session


def threads() -> int:
    """Intra-op threads for recovery sessions: spa.runtime.set_threads's count (--threads), else
    $SPA_THREADS, else the CPU count (at most 8)."""
    env = os.environ.get("SPA_THREADS")
    return runtime.threads() or (max(1, int(env)) if env else max(1, min(8, os.cpu_count() or 1)))


def cpu_session(model: onnx.ModelProto, n_threads: int | None = None) -> ort.InferenceSession:
    """A CPU session (spa.runtime) with pinned thread counts and no memory arena:
    recovery's sessions come and go, and give memory back as they do.

    Args:
        model: the model to run.
        n_threads: intra-op threads; None: threads().
    """
    opts = options(n_threads or threads(), runs="many")
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    return session(model, opts=opts)


def _reads(node) -> set:
    """Every tensor name a node reads, including outer names its subgraphs read."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                local |= set(n.output)
            for n in g.node:
                names |= _reads(n) - local
    return names


def constants(model: onnx.ModelProto) -> set:
    """Names of initializers and Constant node outputs."""
    g = model.graph
    return {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}


def live(model: onnx.ModelProto, pos: int) -> list:
    """Tensors computed from the inputs before node `pos` and read from node `pos` on: the
    cut that carries everything the rest of the graph needs. Tensors computed from
    constants only (a Transpose of a weight) are left out: the segments recompute them,
    so a refit weight is never read through a stale copy."""
    g = model.graph
    data = {i.name for i in g.input} - constants(model)
    for n in g.node:
        if _reads(n) & data:
            data |= set(n.output)
    made = {i.name for i in g.input}
    for n in g.node[:pos]:
        made |= set(n.output)
    read = {o.name for o in g.output}
    for n in g.node[pos:]:
        read |= _reads(n)
    return sorted(made & read & data)


def segment(model: onnx.ModelProto, outputs: list, inputs: dict | None = None) -> onnx.ModelProto:
    """The part of `model` that computes `outputs` from `inputs`, as a model of its own.

    Args:
        model: a model; not modified.
        outputs: tensor names to expose, in order; none of them fed.
        inputs: {tensor name: numpy dtype} fed instead of being computed; None: the
            model's own inputs.

    Returns:
        A new ModelProto; its inputs are the fed tensors it reads.
    """
    g = model.graph
    fed = dict(inputs or {})
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    need, todo, used = set(), list(outputs), set()
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        i = producer.get(name)
        if i is not None and i not in need and name not in fed:
            need.add(i)
            todo.extend(_reads(g.node[i]))
    made = {o for i in need for o in g.node[i].output}
    out = onnx.ModelProto()
    out.ir_version, out.producer_name = model.ir_version, model.producer_name
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    graph = out.graph
    graph.name = g.name
    graph.node.extend(g.node[i] for i in sorted(need))
    graph.initializer.extend(t for t in g.initializer if t.name in used)
    graph.sparse_initializer.extend(t for t in g.sparse_initializer if t.values.name in used)
    if inputs is None:
        graph.input.extend(i for i in g.input if i.name in used)
    else:
        for name, dtype in fed.items():
            if name in used and name not in made:
                elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
                graph.input.append(onnx.helper.make_tensor_value_info(name, elem, None))
    graph.value_info.extend(v for v in g.value_info if v.name in used and v.name not in fed)
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs)
    return out


def prefix(model: onnx.ModelProto, outputs: list) -> onnx.ModelProto:
    """The part of `model` needed to compute `outputs` from its inputs."""
    return segment(model, outputs)


def batches(calib: dict, batch: int):
    """Yield (start, {input: array}) slices of `batch` samples."""
    n = len(next(iter(calib.values())))
    for start in range(0, n, batch):
        yield start, {k: v[start:start + batch] for k, v in calib.items()}


def run_all(model: onnx.ModelProto, calib: dict, batch: int = 16) -> list:
    """All graph outputs of `model` over `calib`, concatenated on axis 0."""
    sess = cpu_session(model)
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(names, feed) for _, feed in batches(calib, batch)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(names))]
