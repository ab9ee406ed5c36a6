"""Prune the held-out models of tools/heldout_export.py at --ratio 0.3 and print one row each.

    PYTHONPATH=. python tools/heldout_prune.py MODELS_DIR [--only llama_kv unet] [--ratio 0.3]

Each model is pruned as `spa prune` would (default criterion, verification on); the KV-cache
decoder three ways: as it is (its heads reach the cache: blocked, and the notes must name
--allow-interface-change), with the cache allowed to change, and with every interface
allowed to change. Prints MACs cut, verification and the first note per run.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import spa
from spa.errors import SpaError

CACHE = ("past_key_values.*", "present.*")
LLAMA_SHAPES = {"input_ids": (2, 3), "attention_mask": (2, 8),
                **{f"past_key_values.{i}.{k}": (2, 4, 5, 16) for i in range(2) for k in ("key", "value")}}
RUNS = {  # name prefix -> [(label, prune keyword arguments)]
    "llama_kv": [("as is", dict(input_shapes=LLAMA_SHAPES)),
                 ("cache may change", dict(input_shapes=LLAMA_SHAPES, allow_interface_change=CACHE)),
                 ("any interface", dict(input_shapes=LLAMA_SHAPES, allow_interface_change=True))],
}


def prune_one(path, ratio, kwargs) -> str:
    try:
        r = spa.prune(path, ratio=ratio, threads=1, **kwargs)
    except SpaError as exc:
        return f"FAILED {str(exc)[:200]}"
    ok = "verified" if r.verdict.outputs_match else "UNVERIFIED"
    iface = f", {len(r.interface)} interface tensors changed" if r.interface else ""
    note = next((n for n in r.notes if "interface" in n), "")
    return f"MACs -{r.macs_reduction:.1%}, {ok}, cosine {r.verdict.cosine:.3f}{iface}" + \
        (f"\n    note: {note[:160]}" if note else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--ratio", type=float, default=0.3)
    a = ap.parse_args(argv)
    for path in sorted(glob.glob(os.path.join(a.models, "*.onnx"))):
        name = os.path.basename(path)[:-5]
        family = name.rsplit("_", 1)[0]
        if a.only and family not in a.only:
            continue
        for label, kwargs in RUNS.get(family, [("as is", {})]):
            print(f"{name} ({label}): {prune_one(path, a.ratio, kwargs)}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
