"""Quantized models, pruned by SPA and by onnxsim 0.8.1, side by side (issue #19).

For each model of tools/models_torch.py (random weights, exported once) and each format
(qdq: per-channel int8 QDQ; qop: QOperator QLinearConv/QLinearMatMul), quantize it with
onnxruntime's quantize_static on a few random calibration batches (nbits: 4-bit MatMulNBits
by MatMulNBitsQuantizer, blocks of --block, for the zoo's decoders llama_ts / llama_dynamo and
`mlp` / `mlp_nobias`), then:

- SPA at --ratio: MACs reduction, fidelity to the unpruned quantized model (cosine of
  the outputs on 8 seeded inputs), whether it stays quantized (no new float weight),
  and how far it is from the float-equivalent model pruned the same way (spa.masked on
  the dequantized graph; of a QOperator model, of its QDQ form: spa.io.qop) next to the unpruned model's own quantization
  noise (quantized vs dequantized), both as RMS over the output's RMS;
- onnxsim's structured pruning for that format at sparsity --ratio: MACs reduction and
  fidelity, and SPA at onnxsim's MACs reduction (--target-macs) for a matched comparison;
- with --float, SPA on the float export alone, for reference.

    python tools/quant_bench.py --models resnet18,mobilenetv2,vit_b16 --formats qdq,qop --float
    python tools/quant_bench.py --models llama_ts,llama_dynamo,mlp,mlp_nobias --formats nbits --float
    python tools/quant_bench.py --models DIR/llama_kv_ts.onnx --formats nbits --float --input-shape input_ids:2,3 \
        --input-shape attention_mask:2,8 --input-shape past_key_values.0.key:2,4,5,16 ... (tools/heldout_prune.py)

A MatMulNBits model's quantization is weight-only: its dequantized graph computes what it
computes, so its float reference is the model the quantizer read (spa.testing.quant.float_same_way).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx

import spa
from spa.errors import SpaError, first_line
from spa.io.qop import lift
from spa.io import parse_input_shapes
from spa.runtime import random_inputs, run
from spa.testing.oracle import feeds
from spa.testing import zoo
from spa.testing.quant import dequantized, float_same_way, float_weights, matmul_mlp, quantize, quantize_nbits
from models_torch import exported  # a sibling: tools/ is the script's folder


SEQ = 7  # the zoo transformers' sequence length


def cosine(a, b):
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(b.astype(np.float64) ** 2)) + 1e-30))


def first(outputs):
    return outputs[sorted(outputs)[0]]


def macs_of(model, shapes=None):
    return spa.analyze(model, input_shapes=shapes).stats.macs


def onnxsim_prune(q, fmt, ratio):
    """(model or None, note) of onnxsim's pruner for the format."""
    from onnxsim import pruning

    fn = {"qdq": pruning.apply_structured_pruning_qdq, "qop": pruning.apply_structured_pruning_qoperator,
          "nbits": pruning.apply_structured_pruning_matmul_nbits}[fmt]
    try:
        out = fn(q, sparsity=ratio)
    except Exception as exc:  # report what it says, whatever it raises
        return None, f"error: {first_line(exc)[:80]}"
    return out, ""


def float_model(name, args):
    """A model of tools/models_torch.py, or a transformer of the zoo: `llama_ts`, `llama_dynamo`."""
    base, _, exporter = name.rpartition("_")
    if exporter in ("ts", "dynamo") and base in zoo.manifest()["models"]:
        return zoo.load(base, exporter)
    if name.endswith(".onnx"):  # a held-out float model (tools/heldout_export.py)
        return onnx.load(name)
    if name in ("mlp", "mlp_nobias"):  # MatMul (-> Add) -> Relu, 64-256-256-32 (spa.testing.quant.matmul_mlp)
        return matmul_mlp(bias=name == "mlp")
    return onnx.load(exported(name, args.folder))


def inputs(name, q, args):
    if args.shapes:
        return random_inputs(q, args.shapes, 7)
    base, _, exporter = name.rpartition("_")
    if exporter in ("ts", "dynamo") and base in zoo.manifest()["models"]:  # token ids within the vocabulary
        return zoo.feeds(zoo.manifest()["models"][base], args.batch, SEQ, seed=7)
    return feeds(q, batch=args.batch, seed=7)


def bench(name, fmt, args):
    row = {"model": name, "format": fmt}
    path = os.path.join(args.folder, f"{os.path.basename(name).removesuffix('.onnx')}.{fmt}.onnx")
    if not os.path.exists(path):
        f = float_model(name, args)
        q = quantize_nbits(f, block_size=args.block) if fmt == "nbits" else \
            quantize(f, fmt, per_channel=True, batches=args.calib)
        onnx.save(q, path)
    q = onnx.load(path)
    x = inputs(name, q, args)
    original = first(run(q, x))
    before = macs_of(q, args.shapes)
    t = time.time()
    try:
        r = spa.prune(q, ratio=args.ratio, seed=0, input_shapes=args.shapes)
    except SpaError as exc:
        row["spa"] = f"blocked: {first_line(exc)[:120]}"
        r = None
    row["spa_s"] = round(time.time() - t, 1)
    if r is not None:
        pruned = first(run(r.model, x))
        row.update(spa_macs=r.macs_reduction, spa_cos=cosine(pruned, original),
                   spa_quantized=not (set(float_weights(r.model)) - set(float_weights(q))))
        if args.float and fmt in ("qdq", "nbits"):  # the float export pruned alone, for reference
            f = float_model(name, args)
            xf = {k: v for k, v in x.items()}
            rf = spa.prune(f, ratio=args.ratio, seed=0, input_shapes=args.shapes)
            row["float_macs"] = rf.macs_reduction
            row["float_cos"] = cosine(first(run(rf.model, xf)), first(run(f, xf)))
        if fmt in ("qdq", "qop"):  # a QOperator model's float equivalent: of its QDQ form
            floats = dequantized(lift(q)[0])
            same_way = first(run(spa.masked(floats, r.sinks, r.updates), x))
            row["vs_float_same_way"] = rel_rms(pruned, same_way)
            row["noise"] = rel_rms(original, first(run(floats, x)))
        else:  # weight-only: the float model the quantizer read, pruned the same way
            f = float_model(name, args)
            row["vs_float_same_way"] = rel_rms(pruned, first(run(float_same_way(f, q, r, args.shapes), x)))
            row["noise"] = rel_rms(original, first(run(f, x)))
    o, note = onnxsim_prune(q, fmt, args.ratio)
    if o is not None:
        try:
            after = macs_of(o, args.shapes)
            row["sim_macs"] = 1 - after / before
            row["sim_cos"] = cosine(first(run(o, x)), original)
            row["sim_quantized"] = not (set(float_weights(o)) - set(float_weights(q)))
        except Exception as exc:
            note = f"output fails: {first_line(exc)[:80]}"
    row["sim_note"] = note
    if r is not None and row.get("sim_macs", 0) > 0.01:
        try:
            m = spa.prune(q, target_macs=row["sim_macs"], seed=0, input_shapes=args.shapes)
            row["spa_matched_macs"] = m.macs_reduction
            row["spa_matched_cos"] = cosine(first(run(m.model, x)), original)
        except SpaError as exc:
            row["spa_matched_macs"] = f"blocked: {first_line(exc)[:60]}"
    return row


def cell(v):
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.1f}"
    return "" if v is None else str(v)


COLUMNS = ("model", "format", "spa_macs", "spa_cos", "spa_quantized", "vs_float_same_way", "noise", "spa_s",
           "float_macs", "float_cos",
           "sim_macs", "sim_cos", "sim_quantized", "spa_matched_macs", "spa_matched_cos", "sim_note", "spa")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenetv2,vit_b16")
    p.add_argument("--formats", default="qdq,qop")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--calib", type=int, default=4, help="random calibration batches")
    p.add_argument("--batch", type=int, default=4, help="inputs the fidelity is measured on")
    p.add_argument("--block", type=int, default=32, help="block_size of the nbits format (MatMulNBits)")
    p.add_argument("--folder", default="build/quant_bench")
    p.add_argument("--float", action="store_true", help="also prune the float export (QDQ rows)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D1,D2,..",
                   help="input shapes for a model whose dynamic dims SPA cannot choose (as spa prune takes them)")
    args = p.parse_args(argv)
    args.shapes = parse_input_shapes(args.input_shape) or None
    os.makedirs(args.folder, exist_ok=True)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * len(COLUMNS))
    for name in args.models.split(","):
        for fmt in args.formats.split(","):
            row = bench(name, fmt, args)
            print("| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
