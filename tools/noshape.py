"""Done-when 1 and 5 of issue #18: prune every model with dynamic non-batch input dims as a
user hands it over, without --input-shape (--ratio 0.3, default options, verification on).

    PYTHONPATH=. python tools/noshape.py [--only NAME ...] [--extra FILE.onnx ...]

Models: the torchvision and transformers zoo exports (models/zoo, filled with seeded weights
as tools/coverage.py does), the real models cached by tools/real_models.py (no download) and
any --extra file. A model whose graph inputs have only a dynamic batch (or none) is listed
as skipped: its shapes need no choosing. Prints one markdown row per model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import coverage  # noqa: E402  (tools/coverage.py: the model lists and their loading)
import onnx  # noqa: E402

import spa  # noqa: E402
from spa.io.sizes import declared, dynamic_axes  # noqa: E402


def needs_sizes(proto) -> list:
    """'input:axis' of every dynamic input axis that is not the batch."""
    dims = declared(proto, {})
    return [f"{n}:{a}" for kind, members in dynamic_axes(proto, dims).values() if kind != "batch"
            for n, a in members]


def one(job) -> str:
    axes = needs_sizes(onnx.load(job["path"], load_external_data=False))
    if not axes:
        return ""
    proto = coverage._load(job) if job["kind"] == "zoo" or os.path.basename(job["path"]).startswith("light_") \
        else job["path"]
    t = time.perf_counter()
    try:
        r = spa.prune(proto, ratio=0.3, threads=1)
    except Exception as exc:  # report and go on
        return f"| {job['name']} | {', '.join(axes)} | FAILED: {type(exc).__name__}: {str(exc)[:160]} | | |"
    v = r.verdict
    ok = "valid" if v and v.checker and v.runs and v.outputs_match and v.deterministic else "NOT VALID"
    sizes = next((n.split(": ", 1)[1] for n in r.notes if n.startswith("no --input-shape")), "")
    return f"| {job['name']} | {', '.join(axes)} | {ok} | {r.macs_reduction:.1%} | {sizes[:140]} |" \
        f" <!-- {time.perf_counter() - t:.0f}s -->"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--extra", nargs="*", default=[])
    a = ap.parse_args(argv)
    jobs = [j for j in coverage.zoo_entries() if "export_error" not in j] + coverage.real_entries(download=False)
    jobs += [{"name": os.path.basename(p)[:-5], "kind": "extra", "path": p} for p in a.extra]
    print("| model | dynamic non-batch axes | result | MACs cut | sizes chosen |")
    print("| --- | --- | --- | --- | --- |")
    for job in jobs:
        if a.only and job["name"] not in a.only:
            continue
        row = one(job)
        if row:
            print(row, flush=True)


if __name__ == "__main__":
    main()
