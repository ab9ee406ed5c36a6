"""Conformance over onnx's own backend test models (#25): what tools/conformance.py and
tests/test_conformance.py share.

A corpus is a folder of onnx backend tests: `<test>/model.onnx` with an optional
`<test>/test_data_set_0/input_*.pb`, flat `*.onnx` files (the wheel's `light`), or
`<test>/data.json` naming a model elsewhere in the wheel (the wheel's `real`).
`flags` says what is wrong with one command's run, `check_output` what is wrong with a
model an exit-0 prune wrote.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import onnx
from onnx import numpy_helper

from .. import runtime
from . import message_lines
from ..io import concrete_inputs
from ..rules import RULES, key

WHEEL_CORPORA = ("light", "real", "simple", "pytorch-converted", "pytorch-operator")
DOCUMENTED_EXITS = {0, 2, 3, 4, 5}  # the README's exit codes, 10 (internal error) aside


def wheel_data() -> str:
    """The backend test data folder of the installed onnx wheel."""
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def find_models(folder: str) -> list:
    """(test name, model path, test data folder or None) for every model of a corpus folder."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
        out.append((os.path.splitext(os.path.basename(path))[0], path, None))
    for test in sorted(os.listdir(folder)):
        d = os.path.join(folder, test)
        model = os.path.join(d, "model.onnx")
        if os.path.isfile(model):
            data = os.path.join(d, "test_data_set_0")
            out.append((test, model, data if os.path.isdir(data) else None))
        elif os.path.isfile(os.path.join(d, "data.json")):  # the wheel's `real`: a pointer into `light`
            with open(os.path.join(d, "data.json")) as f:
                url = json.load(f).get("url", "")
            path = os.path.join(os.path.dirname(os.path.dirname(onnx.__file__)), url)
            if os.path.isfile(path):
                out.append((test, path, None))
    return out


def family(path: str) -> str:
    """The spa.rules module that handles the model's ops (Constant aside): `none: OPS`
    when some have no rule, `mixed` when they span several modules."""
    proto = onnx.load(path, load_external_data=False)
    ops = [(n.op_type, n.domain) for n in proto.graph.node]
    main = [o for o in ops if o[0] != "Constant"] or ops
    missing = sorted({op for op, dom in main if key(op, dom) not in RULES})
    if missing:
        return "none: " + ",".join(missing[:3])
    fams = {type(RULES[key(op, dom)]).__module__.rsplit(".", 1)[-1] for op, dom in main}
    return fams.pop() if len(fams) == 1 else "mixed"


def flags(step: str, rc, out: str, err: str, timeout: float = 60.0) -> list:
    """What is wrong with one command's run: an internal error (exit 10), an exit code
    the README does not list, a traceback, more than one line of stderr on an error, a
    hang (`rc` None)."""
    if rc is None:
        return [f"{step}: hang (over {timeout:g} s)"]
    found = []
    if rc == 10:
        found.append(f"{step}: {err.strip()[:200]}")
    elif rc not in DOCUMENTED_EXITS:
        found.append(f"{step}: exit {rc}: {err.strip()[-200:]}")
    if "Traceback (most recent call last)" in out + err:
        found.append(f"{step}: traceback")
    lines = [ln for ln in message_lines(err) if not ln.startswith("spa: warning")]  # progress lines may precede
    if rc != 0 and len(lines) > 1:
        found.append(f"{step}: {len(lines)} lines on stderr: {' | '.join(lines)[:200]}")
    return found


def feeds_for(path: str, data: str | None) -> dict | None:
    """Inputs from the test's data set where it has one (tensors, sequences, optionals,
    maps), else seeded random tensors; None when neither can be made."""
    proto = onnx.load(path, load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    files = sorted(glob.glob(os.path.join(data, "input_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1][:-3])) if data else []
    if files and len(files) == len(inputs):
        try:
            return {vi.name: _read_value(f, vi.type) for vi, f in zip(inputs, files)}
        except Exception:  # an odd file: fall back to random inputs
            pass
    try:
        return runtime.random_inputs(proto, concrete_inputs(proto, {}))
    except Exception:  # a non-tensor input, or a type SPA cannot feed
        return None


def _read_value(path, tp):
    with open(path, "rb") as f:
        raw = f.read()
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return numpy_helper.to_array(onnx.TensorProto.FromString(raw))
    if kind == "sequence_type":
        return numpy_helper.to_list(onnx.SequenceProto.FromString(raw))
    if kind == "optional_type":
        return numpy_helper.to_optional(onnx.OptionalProto.FromString(raw))
    if kind == "map_type":
        return numpy_helper.to_dict(onnx.MapProto.FromString(raw))
    raise ValueError(f"cannot feed a {kind}")


def _run(path, feeds):
    sess = runtime.session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _layout(v):
    if isinstance(v, np.ndarray):
        return v.shape, v.dtype
    if isinstance(v, list):
        return [_layout(x) for x in v]
    return type(v).__name__


def _close(a, b) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


def check_output(src: str, out: str, data: str | None, nothing_pruned: bool) -> list:
    """Problems of a model an exit-0 prune wrote: onnx.checker (full check), onnxruntime,
    output names and shapes on the original's inputs, and, where nothing was pruned,
    output values."""
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        return [f"checker: {str(exc).strip().splitlines()[0][:160]}"]
    feeds = feeds_for(src, data)
    if feeds is None:
        return []
    try:
        want = _run(src, feeds)
    except Exception:  # the original does not run on these inputs: nothing to compare to
        return []
    try:
        got = _run(out, feeds)
    except Exception as exc:  # onnxruntime errors have no common base class
        return [f"onnxruntime: {str(exc).strip().splitlines()[0][:160]}"]
    if list(got) != list(want):
        return [f"outputs: {list(got)} != {list(want)}"]
    bad = [n for n in want if _layout(want[n]) != _layout(got[n])]
    if bad:
        return [f"output shapes differ: {bad[:3]}"]
    if nothing_pruned:
        bad = [n for n in want if not _close(want[n], got[n])]
        if bad:
            return [f"nothing pruned but outputs differ: {bad[:3]}"]
    return []


def listing(folder: str) -> list:
    """(name, size) of a folder's entries: a command must leave the model's folder as it was."""
    return sorted((e.name, e.stat().st_size) for e in os.scandir(folder))
