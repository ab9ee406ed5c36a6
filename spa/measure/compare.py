"""Fidelity of a pruned model against its original, output by output, on the same inputs."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ModelError, UsageError, first_line
from ..io import load_arrays as load_inputs
from ..protos import ORT_TYPES
from ..report import table
from ..runtime import random_feeds
from ..verify import fidelity
from .bench import BenchSettings, input_specs, make_session

@dataclass(frozen=True)
class Comparison:
    original: str
    pruned: str
    inputs: str  # where the inputs came from
    samples: int  # dim 0 of the first input
    outputs: tuple  # OutputFidelity per output of the original
    atol: float | None = None  # the tolerances asked for (None: no pass/fail check)
    rtol: float | None = None

    @property
    def passed(self) -> bool | None:
        """Every output within atol + rtol * |original| (None when no tolerance was given)."""
        if self.atol is None and self.rtol is None:
            return None
        return all(o.within is not False for o in self.outputs)  # None: an output that is not measured

    def to_dict(self):
        return {**asdict(self), "passed": self.passed}


# -- inputs -----------------------------------------------------------------------------------
def match_inputs(sess, data: dict, where: str) -> dict:
    """The arrays the session needs, cast to its input types (same kind only); extra keys are ignored."""
    feeds = {}
    for i in sess.get_inputs():
        if i.name not in data:
            raise UsageError(f"{where}: no array named {i.name!r} (has: {', '.join(sorted(data)) or 'none'})")
        arr, want = np.asarray(data[i.name]), np.dtype(ORT_TYPES.get(i.type, np.float32))
        if arr.dtype != want:
            if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iu" and want.kind in "iu"):
                raise UsageError(f"{where}: {i.name!r} is {arr.dtype}, the model wants {want}")
            arr = arr.astype(want)
        if arr.ndim != len(i.shape):
            raise UsageError(f"{where}: {i.name!r} has rank {arr.ndim}, the model wants {len(i.shape)}")
        feeds[i.name] = arr
    return feeds


def feeds_for(sess, inputs, batch: int, input_shapes=None, seed: int = 0) -> dict:
    """Inputs for a session: loaded from `inputs` (.npz or .npy folder) or generated at `batch`."""
    if inputs is not None:
        return match_inputs(sess, load_inputs(inputs), os.fspath(inputs))
    return random_feeds(input_specs(sess, batch, input_shapes), seed)


def save_arrays(path, arrays: dict):
    """Write arrays to an .npz file, or to <name>.npy files when `path` is an existing folder
    or ends with a slash."""
    path = os.fspath(path)
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        for k, v in arrays.items():
            np.save(os.path.join(path, k.replace("/", "_") + ".npy"), v)
    else:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{path}: directory {parent} does not exist")
        with open(path, "wb") as f:
            np.savez(f, **arrays)


# -- running and metrics ----------------------------------------------------------------------
def run_all(sess, feeds: dict, where: str) -> dict:
    """Run once, or in chunks when the model's batch is fixed and smaller than the data."""
    first = sess.get_inputs()[0]
    n = len(next(iter(feeds.values()))) if feeds and next(iter(feeds.values())).ndim else 0
    fixed = first.shape[0] if first.shape and isinstance(first.shape[0], int) and first.shape[0] > 0 else 0
    names = [o.name for o in sess.get_outputs()]
    try:
        if not fixed or n <= fixed:
            return dict(zip(names, sess.run(names, feeds)))
        if n % fixed:
            raise UsageError(f"{where}: {n} samples do not split into the model's fixed batch of {fixed}")
        parts = [sess.run(names, {k: v[j:j + fixed] for k, v in feeds.items()}) for j in range(0, n, fixed)]
    except UsageError:
        raise
    except Exception as exc:  # onnxruntime errors have no common base class
        raise ModelError(f"{where}: onnxruntime cannot run it ({first_line(exc, 200)})") from exc
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}


def compare(original, pruned, inputs=None, batch: int = 8, input_shapes=None, seed: int = 0,
            save_inputs=None, save_outputs=None, atol=None, rtol=None, threads: int = 0) -> Comparison:
    """Run both models on the same inputs and compare every output of the original.

    Args:
        original, pruned: paths or onnx.ModelProto.
        inputs: .npz file or folder of .npy files (arrays named by input); None: generated.
        batch: dim 0 of generated inputs.
        input_shapes: {input: shape} for other dynamic dims of generated inputs (else 1).
        seed: seed of generated inputs.
        save_inputs: write the inputs used here (.npz, or a folder of .npy).
        save_outputs: write both models' outputs as original/<name> and pruned/<name>.
        atol, rtol: when either is given, each output's `within` says whether
            |pruned - original| <= atol + rtol * |original| everywhere (the other counts as 0).
        threads: onnxruntime intra-op threads (0: its default).
    """
    settings = BenchSettings(input_shapes=dict(input_shapes or {}), seed=seed, memory=False, threads=threads)
    a, b = make_session(original, settings), make_session(pruned, settings)
    feeds = feeds_for(a, inputs, batch, settings.input_shapes, seed)
    where = os.fspath(inputs) if inputs is not None else f"generated (seed {seed})"
    names = (_name(original, "original"), _name(pruned, "pruned"))
    want = run_all(a, feeds, names[0])
    got = run_all(b, _pruned_feeds(b, feeds, names[1]), names[1])
    if save_inputs:
        save_arrays(save_inputs, feeds)
    if save_outputs:
        save_arrays(save_outputs, {**{f"original/{k}": v for k, v in want.items()},
                                   **{f"pruned/{k}": v for k, v in got.items()}})
    tol = None if atol is None and rtol is None else (atol or 0.0, rtol or 0.0)
    outs = tuple(fidelity(k, v, got.get(k), tol) for k, v in want.items())
    first = next(iter(feeds.values()), np.zeros(0))
    return Comparison(names[0], names[1], where, int(first.shape[0]) if first.ndim else 1, outs, atol, rtol)


def _pruned_feeds(sess, feeds, where):
    names = {i.name for i in sess.get_inputs()}
    missing = names - set(feeds)
    if missing:
        raise ModelError(f"{where}: has inputs the original lacks: {', '.join(sorted(missing))}")
    return {k: v for k, v in feeds.items() if k in names}


def _name(model, default):
    return default if not isinstance(model, (str, os.PathLike)) else os.fspath(model)


# -- text -------------------------------------------------------------------------------------
def fmt(x, spec=".4g"):
    return "n/a" if x is None else format(x, spec)


def compare_text(c: Comparison) -> str:
    rows = []
    for o in c.outputs:
        rows.append((o.name, "x".join(map(str, o.shape)) or "scalar", fmt(o.max_abs, ".3e"), fmt(o.max_rel, ".3e"),
                     fmt(o.cosine, ".6f"), fmt(o.top1, ".3f"), fmt(o.top5, ".3f"), o.note))
    head = ("output", "shape", "max abs", "max rel", "cosine", "top-1", "top-5", "note")
    text = (f"{os.path.basename(c.pruned)} against {os.path.basename(c.original)} on {c.samples} samples "
            f"({c.inputs})\n\n" + table(rows, head))
    if c.passed is None:
        return text
    tol = f"atol {c.atol or 0:g}, rtol {c.rtol or 0:g}"
    bad = [o.name for o in c.outputs if o.within is False]
    return text + ("\n\nPASSED" if c.passed else f"\n\nFAILED ({len(bad)} of {len(c.outputs)} outputs "
                                                 f"outside {tol}: {', '.join(bad)})") + (f" ({tol})" if c.passed else "")

