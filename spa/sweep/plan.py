"""What a sweep runs: the models (files or folders of .onnx files), the candidates (one
prune setting and criterion per model) and the settings every candidate shares."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass

from ..errors import UsageError
from ..score.criteria import CRITERIA

KNOBS = ("ratio", "target_macs", "target_latency")  # how a candidate says how much to prune
DEFAULT = "default"  # the criterion spa.prune chooses itself


@dataclass(frozen=True)
class Settings:
    """What every candidate of a sweep shares; part of each record, so a resumed sweep
    reuses only records measured with the same settings."""

    calib: str | None = None
    inputs: str | None = None  # fidelity inputs (spa compare's --inputs); None: generated
    samples: int = 8  # generated fidelity inputs
    batch: int = 1  # the batch latency is timed at (and --target-latency plans for)
    threads: int = 1  # onnxruntime and BLAS threads per candidate: the CPUs it is given
    runs: int = 20  # timed runs per model (spa bench protocol)
    warmup: int = 5
    input_shapes: tuple = ()  # "name:d1,d2,..", as spa prune takes them
    seed: int = 0

    def to_dict(self):
        return {**asdict(self), "input_shapes": list(self.input_shapes)}


@dataclass(frozen=True)
class Candidate:
    model: str  # the model's name: its file stem
    path: str  # the model file
    digest: str  # sha256 of the file: a changed model is measured again
    knob: str  # one of KNOBS
    value: float
    criterion: str  # a criterion name, or DEFAULT

    @property
    def id(self) -> str:
        return f"{self.model}/{self.knob}={self.value:g}/{self.criterion}"

    @property
    def file(self) -> str:
        """Where the pruned model goes, relative to the sweep folder."""
        return os.path.join("models", self.model, f"{self.knob}-{self.value:g}-{self.criterion}.onnx")

    def sort_key(self):
        return (self.model, KNOBS.index(self.knob), self.value, self.criterion)


def model_files(paths) -> list:
    """The .onnx files named, folders expanded (their *.onnx files, sorted), as (name, path)."""
    out = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = sorted(f for f in os.listdir(p) if f.endswith(".onnx") and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise UsageError(f"{p}: folder holds no .onnx file")
            out += [os.path.join(p, f) for f in found]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    if not out:
        raise UsageError("give at least one MODEL")
    named = {}
    for p in out:
        name = os.path.splitext(os.path.basename(p))[0]
        if name in named and os.path.abspath(named[name]) != os.path.abspath(p):
            raise UsageError(f"two models are named {name!r}: {named[name]} and {p}")
        named[name] = p
    return sorted(named.items())


def digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def values(text, option) -> tuple:
    """Shares in (0, 1) from "0.1,0.2"; () for None."""
    if text is None:
        return ()
    try:
        out = tuple(sorted({float(v) for v in str(text).split(",") if v.strip()}))
    except ValueError:
        out = ()
    if not out or not all(0 < v < 1 for v in out):
        raise UsageError(f"{option} needs numbers between 0 and 1 separated by commas, got {text!r}")
    return out


def criteria(text) -> tuple:
    if text is None:
        return (DEFAULT,)
    names = tuple(dict.fromkeys(c.strip() for c in str(text).split(",") if c.strip()))
    bad = [c for c in names if c not in CRITERIA and c != DEFAULT]
    if not names or bad:
        raise UsageError(f"--criteria: unknown criterion {', '.join(bad) or repr(text)} "
                         f"(known: {', '.join(sorted(CRITERIA))}, {DEFAULT})")
    return names


def candidates(models, knobs: dict, names) -> list:
    """Every (model, knob value, criterion), sorted.

    Args:
        models: (name, path) pairs from model_files.
        knobs: {knob: values} for KNOBS.
        names: criteria.
    """
    if not any(knobs.get(k) for k in KNOBS):
        raise UsageError("give --ratios, --target-macs or --target-latency")
    out = []
    for name, path in models:
        d = digest(path)
        out += [Candidate(name, os.path.abspath(path), d, k, v, c)
                for k in KNOBS for v in knobs.get(k, ()) for c in names]
    return sorted(out, key=Candidate.sort_key)


# -- --pick -----------------------------------------------------------------------------------
PICK = re.compile(r"^\s*(top1|top5|cosine)\s*>=\s*([0-9.eE+-]+)\s*$|^\s*(max_abs)\s*<=\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Pick:
    metric: str  # top1, top5, cosine (at least), max_abs (at most)
    limit: float

    def __str__(self):
        return f"{self.metric}{'<=' if self.metric == 'max_abs' else '>='}{self.limit:g}"

    def meets(self, fidelity: dict) -> bool:
        v = fidelity.get(self.metric)
        if v is None:
            return False
        return v <= self.limit if self.metric == "max_abs" else v >= self.limit


def parse_pick(text) -> Pick | None:
    if text is None:
        return None
    m = PICK.match(str(text))
    try:
        metric, limit = (m.group(1), float(m.group(2))) if m and m.group(1) else (m.group(3), float(m.group(4)))
    except (AttributeError, TypeError, ValueError):
        raise UsageError(f"--pick: expected e.g. \"top1>=0.98\", \"top5>=0.99\", \"cosine>=0.995\" or "
                         f"\"max_abs<=0.1\", got {text!r}") from None
    return Pick(metric, limit)
