"""A CI gate for a pruned artifact: validity, then the thresholds it was given.

Thresholds come from flags or from the `[tool.spa.gate]` table of a pyproject.toml; flags win.
With none given, the gate checks validity alone: the file loads, passes onnx.checker (full
check), runs in onnxruntime, and has the original's inputs and outputs.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, fields

import onnx

from ..errors import ModelError, SpaError, UsageError, first_line
from ..graph import param_count, total_macs
from ..io import full_check, load, parse_input_shapes, read_proto
from ..protos import graph_inputs, value_infos
from ..report import table
from ..rules import Ctx
from .bench import DEVICES, BenchSettings, bench, make_session
from .explain import explain, explain_text
from ..verify import fidelity
from .compare import feeds_for, run_all


@dataclass(frozen=True)
class Thresholds:
    min_macs_reduction: float | None = None  # 0.3: at least 30% fewer MACs
    min_params_reduction: float | None = None
    max_latency_ratio: float | None = None  # pruned p50 / original p50 at `batch`
    min_cosine: float | None = None  # every output
    min_top1: float | None = None  # every classifier output ([N, C])
    max_file_size: int | None = None  # bytes, external data included
    batch: int = 1  # latency batch
    device: str = "cpu"
    runs: int = 30
    warmup: int = 5
    threads: int = 0
    inputs: str | None = None  # .npz or .npy folder for fidelity; None: generated
    samples: int = 8  # dim 0 of generated inputs
    input_shapes: tuple = ()  # "name:d1,d2,..."
    seed: int = 0

    def given(self) -> dict:
        return {k: getattr(self, k) for k in LIMITS if getattr(self, k) is not None}


LIMITS = ("min_macs_reduction", "min_params_reduction", "max_latency_ratio", "min_cosine", "min_top1",
          "max_file_size")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: object = None  # what was measured
    limit: object = None  # the threshold, if any
    detail: str = ""  # why it failed, or the limit that would just have passed
    output: str = ""  # the model output, for fidelity checks


@dataclass(frozen=True)
class GateResult:
    original: str
    pruned: str
    checks: tuple
    thresholds: Thresholds
    measured: dict = field(default_factory=dict)  # stats, latency, fidelity figures

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self):
        return {"original": self.original, "pruned": self.pruned, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks], "thresholds": asdict(self.thresholds),
                "measured": self.measured}


# -- configuration ----------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?)(i?)b?\s*$", re.I)


def parse_size(value) -> int:
    """Bytes from 123, "123", "25MB" (10^6) or "25MiB" (2^20)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise UsageError(f"bad file size {value!r}: use bytes or e.g. 25MB, 1.5GiB")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


def read_config(path=None) -> tuple[dict, str | None]:
    """The [tool.spa.gate] table of `path`, or of ./pyproject.toml when it exists; and its folder."""
    explicit = path is not None
    path = os.fspath(path) if explicit else "pyproject.toml"
    if not os.path.isfile(path):
        if explicit:
            raise UsageError(f"{path}: no such config file")
        return {}, None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from exc
    table = data.get("tool", {}).get("spa", {}).get("gate", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.spa.gate] must be a table")
    return {k.replace("-", "_"): v for k, v in table.items()}, os.path.dirname(os.path.abspath(path))


def thresholds(config: dict, flags: dict, base_dir: str | None = None) -> Thresholds:
    """Thresholds from a config table and flags (flags win; None flags are not given)."""
    known = {f.name: f for f in fields(Thresholds)}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise UsageError(f"[tool.spa.gate]: unknown key(s) {', '.join(unknown)}")
    merged = dict(config)
    if base_dir and isinstance(merged.get("inputs"), str) and not os.path.isabs(merged["inputs"]):
        merged["inputs"] = os.path.join(base_dir, merged["inputs"])
    merged.update({k: v for k, v in flags.items() if v is not None and v != ()})
    out = {}
    for k, v in merged.items():
        try:
            if k == "max_file_size":
                v = parse_size(v)
            elif k in ("batch", "runs", "warmup", "threads", "samples", "seed"):
                v = _int(v)
            elif k in LIMITS:
                v = float(v)
            elif k == "input_shapes":
                v = tuple([v] if isinstance(v, str) else v)
            elif k in ("device", "inputs"):
                v = str(v)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"gate setting {k}: bad value {v!r}") from exc
        out[k] = v
    th = Thresholds(**out)
    _validate(th)
    return th


def _int(v):
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(v)
    return int(v)


def _validate(th: Thresholds):
    for k in ("min_macs_reduction", "min_params_reduction", "min_top1"):
        v = getattr(th, k)
        if v is not None and not 0 <= v <= 1:
            raise UsageError(f"{k} must be between 0 and 1, got {v}")
    if th.min_cosine is not None and not -1 <= th.min_cosine <= 1:
        raise UsageError(f"min_cosine must be between -1 and 1, got {th.min_cosine}")
    if th.max_latency_ratio is not None and not th.max_latency_ratio > 0:
        raise UsageError(f"max_latency_ratio must be positive, got {th.max_latency_ratio}")
    if th.device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {th.device!r}")
    if th.batch < 1 or th.samples < 1 or th.runs < 1 or th.warmup < 0 or th.threads < 0:
        raise UsageError("batch, samples and runs must be >= 1; warmup and threads >= 0")
    parse_input_shapes(th.input_shapes)


# -- the checks -------------------------------------------------------------------------------
def file_size(path) -> int:
    """Bytes of the model file plus the external data files it names."""
    proto = onnx.load(path, load_external_data=False)
    size, seen = os.path.getsize(path), set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            full = os.path.join(os.path.dirname(os.path.abspath(path)), loc) if loc else None
            if full and full not in seen and os.path.isfile(full):
                seen.add(full)
                size += os.path.getsize(full)
    return size


def _signature(proto):
    inputs = value_infos(graph_inputs(proto), unknown="?")
    return inputs, value_infos(proto.graph.output, unknown="?")


def _stats(path, shapes):
    m = load(path, shapes)
    ctx = Ctx(m)
    return {"params": param_count(m.graph, ctx), "macs": total_macs(m.graph.nodes, ctx)}


def _floor(x, digits=6):
    return math.floor(x * 10 ** digits) / 10 ** digits


def gate(original, pruned, th: Thresholds = Thresholds()) -> GateResult:
    """Check a pruned model file against its original.

    Args:
        original: path of the unpruned model; ModelError if it is unusable.
        pruned: path of the pruned artifact; ModelError if missing, every other problem is a failed check.
        th: the thresholds and measurement settings.

    Returns:
        A GateResult; `.passed` is True when every check passed.
    """
    _validate(th)
    original, pruned = os.fspath(original), os.fspath(pruned)
    if not os.path.isfile(pruned):
        raise ModelError(f"{pruned}: no such file")
    read_proto(original)
    shapes = parse_input_shapes(th.input_shapes)
    checks, measured = [], {}
    ok = {"loads": False, "checker": False, "runs": False}

    def add(name, passed, value=None, limit=None, detail="", output=""):
        checks.append(Check(name, bool(passed), value, limit, detail, output))

    try:
        proto = onnx.load(pruned)
        ok["loads"] = True
        add("loads", True)
    except Exception as exc:  # protobuf and onnx raise several types
        add("loads", False, detail=f"not an ONNX model: {first_line(exc, 200)}")
    if ok["loads"]:
        try:
            full_check(pruned)
            ok["checker"] = True
            add("checker", True)
        except Exception as exc:  # checker and shape inference raise several types
            add("checker", False, detail=first_line(exc, 200))
    settings = BenchSettings(device="cpu", input_shapes=shapes, seed=th.seed, memory=False)
    sess_a = make_session(original, settings)
    feeds = feeds_for(sess_a, th.inputs, th.samples, shapes, th.seed)
    want = run_all(sess_a, feeds, original)
    got = None
    if ok["loads"]:
        try:
            sess_b = make_session(pruned, settings)
            got = run_all(sess_b, {k: v for k, v in feeds.items() if k in {i.name for i in sess_b.get_inputs()}},
                          pruned)
            ok["runs"] = True
            add("runs", True)
        except SpaError as exc:
            add("runs", False, detail=str(exc))
    else:
        add("runs", False, detail="not run: the file does not load")
    if ok["loads"]:
        add("interface", *_interface(read_proto(original)[0], proto, want, got))
    missing = "not measured: " + ("the file does not load" if not ok["loads"] else "the model does not run")

    if th.min_macs_reduction is not None or th.min_params_reduction is not None:
        try:
            before, after = _stats(original, shapes), _stats(pruned, shapes)
            measured["stats"] = {"original": before, "pruned": after}
        except SpaError as exc:
            before = after = None
            reason = f"not measured: {exc}"
        for key, stat in (("min_macs_reduction", "macs"), ("min_params_reduction", "params")):
            limit = getattr(th, key)
            if limit is None:
                continue
            name = key[4:]
            if after is None:
                add(name, False, None, limit, reason)
                continue
            red = 1 - after[stat] / before[stat] if before[stat] else 0.0
            add(name, red >= limit, round(red, 6), limit, f"would pass with {key} <= {_floor(red, 4)}")

    if th.max_latency_ratio is not None:
        if not ok["runs"]:
            add("latency_ratio", False, None, th.max_latency_ratio, missing)
        else:
            r = bench([original, pruned], BenchSettings(device=th.device, batches=(th.batch,), warmup=th.warmup,
                                                        runs=th.runs, threads=th.threads, input_shapes=shapes,
                                                        seed=th.seed, memory=False))
            a, b = r.timing(0, th.batch), r.timing(1, th.batch)
            ratio = b.p50_ms / a.p50_ms
            measured["latency"] = {"batch": th.batch, "device": th.device, "original_p50_ms": a.p50_ms,
                                   "pruned_p50_ms": b.p50_ms, "ratio": ratio, "runs": th.runs}
            add("latency_ratio", ratio <= th.max_latency_ratio, round(ratio, 4), th.max_latency_ratio,
                f"p50 {b.p50_ms:.3f} ms vs {a.p50_ms:.3f} ms at batch {th.batch} on {th.device}; "
                f"would pass with max_latency_ratio >= {math.ceil(ratio * 1e4) / 1e4}")
            if ratio > th.max_latency_ratio:  # say why, as spa bench --explain does
                settings = BenchSettings(device=th.device, batches=(th.batch,), warmup=th.warmup, threads=th.threads,
                                         input_shapes=shapes, seed=th.seed, memory=False)
                why = explain([original, pruned], settings, runs=th.runs)
                measured["latency"]["explanation"] = why.to_dict()
                measured["latency"]["explanation_text"] = explain_text(why)

    if th.min_cosine is not None or th.min_top1 is not None:
        _fidelity_checks(th, want, got, add, measured, missing)

    if th.max_file_size is not None:
        size = file_size(pruned) if ok["loads"] else os.path.getsize(pruned)
        add("file_size", size <= th.max_file_size, size, th.max_file_size,
            f"would pass with max_file_size >= {size}")
    return GateResult(original, pruned, tuple(checks), th, measured)


def _interface(orig_proto, proto, want, got):
    a, b = _signature(orig_proto), _signature(proto)
    for what, x, y in (("inputs", a[0], b[0]), ("outputs", a[1], b[1])):
        if x != y:
            diff = next(((p, q) for p, q in zip(x, y) if p != q), (x, y))
            return False, None, None, f"declared {what} differ: {diff[0]} vs {diff[1]}"
    if got is not None:
        for k, v in want.items():
            g = got.get(k)
            if g is None or g.shape != v.shape or g.dtype != v.dtype:
                have = None if g is None else (g.shape, str(g.dtype))
                return False, None, None, f"output {k!r}: expected {v.shape} {v.dtype}, got {have}"
    return True, None, None, ""


def _fidelity_checks(th, want, got, add, measured, missing):
    if got is None:
        for key in ("min_cosine", "min_top1"):
            if getattr(th, key) is not None:
                add(key[4:], False, None, getattr(th, key), missing)
        return
    figs = [fidelity(k, v, got.get(k)) for k, v in want.items()]
    measured["fidelity"] = [asdict(f) for f in figs]
    for f in figs:
        tol = (f"atol {f.max_abs:.3e}, rtol {f.max_rel:.3e}" + (f"; {f.note}" if f.note else "")
               if f.comparable else f.note)
        if th.min_cosine is not None:
            if not f.comparable or math.isnan(f.cosine):
                add("cosine", False, None, th.min_cosine, f.note or "non-finite outputs", f.name)
            else:
                add("cosine", f.cosine >= th.min_cosine, round(f.cosine, 8), th.min_cosine,
                    f"would pass with min_cosine <= {_floor(f.cosine)}; {tol}", f.name)
    if th.min_top1 is not None:
        cls = [f for f in figs if f.top1 is not None]
        if not cls:
            add("top1", False, None, th.min_top1, "no classifier output ([N, C] float, C >= 2)")
        for f in cls:
            add("top1", f.top1 >= th.min_top1, f.top1, th.min_top1,
                f"would pass with min_top1 <= {f.top1:g}; top-5 {f.top5 if f.top5 is not None else 'n/a'}", f.name)


# -- reports ----------------------------------------------------------------------------------
def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def gate_text(r: GateResult) -> str:
    rows = [(c.name, c.output, _cell(c.value), _cell(c.limit), "PASS" if c.passed else "FAIL", c.detail)
            for c in r.checks]
    failed = sum(not c.passed for c in r.checks)
    verdict = "PASSED" if r.passed else f"FAILED ({failed} of {len(r.checks)} checks)"
    why = r.measured.get("latency", {}).get("explanation_text")
    return (f"spa gate: {r.pruned} against {r.original}\n\n"
            + table(rows, ("check", "output", "value", "limit", "result", "detail"))
            + (f"\n\n{why}" if why else "") + f"\n\n{verdict}")


def junit_xml(r: GateResult) -> str:
    """A JUnit XML report: one testcase per check, a <failure> for each failed one."""
    failures = sum(not c.passed for c in r.checks)
    suites = ET.Element("testsuites", name="spa gate", tests=str(len(r.checks)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name=f"spa gate {os.path.basename(r.pruned)}",
                          tests=str(len(r.checks)), failures=str(failures), errors="0", skipped="0")
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="original", value=r.original)
    for c in r.checks:
        name = c.name + (f"[{c.output}]" if c.output else "")
        case = ET.SubElement(suite, "testcase", classname="spa.gate", name=name, time="0")
        if not c.passed:
            msg = f"{c.name}: value {_cell(c.value) or 'n/a'}" + (f", limit {_cell(c.limit)}" if c.limit is not None else "")
            fail = ET.SubElement(case, "failure", message=msg, type="GateFailure")
            fail.text = c.detail
        elif c.detail:
            ET.SubElement(case, "system-out").text = c.detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_report(path, text: str):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{path}: directory {parent} does not exist")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

