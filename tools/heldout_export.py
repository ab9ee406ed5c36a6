"""Export the held-out models of issue #18 with random weights, both torch exporters.

    /work/tvenv/bin/python tools/heldout_export.py OUT_DIR [--only llama_kv unet vae distilbert]

Runs in an environment with torch, transformers and diffusers (not SPA's dev venv); model
hubs are not needed: every model is built from a small config. Writes
OUT_DIR/<name>_{ts,dynamo}.onnx and prints one line per export (or torch's error).
tools/heldout_prune.py prunes them with SPA (onnxruntime checks them there).

- llama_kv: LlamaForCausalLM (GQA: 8 query heads, 4 key-value heads, head_dim 16, 2 layers)
  with its KV cache as graph inputs past_key_values.{i}.{key,value} and outputs
  present.{i}.{key,value} (a decoding step: 3 new tokens after 5 cached ones);
- unet: diffusers UNet2DConditionModel, 2 blocks (cross attention in one), GroupNorm 8 groups;
- vae: diffusers AutoencoderKL's decoder (latent -> image), GroupNorm 8 groups;
- distilbert: transformers DistilBertModel, 2 layers, 4 heads, hidden 128;
- speaker_lstm: a GE2E-style speaker encoder, 3 LSTM layers; bigru: 2 bidirectional GRU layers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

EXPORTERS = {"ts": dict(dynamo=False, opset_version=17), "dynamo": dict(dynamo=True, opset_version=18)}


def distinct(module, seed=0):
    """Seeded noise (std 0.02) on every parameter: fresh inits have equal biases and norm
    scales that exporters merge into one shared tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return module.eval()


class KVDecoder(torch.nn.Module):
    """One decoding step of a 2-layer model with the cache as flat tensors: (input_ids,
    attention_mask, k0, v0, k1, v1) -> (logits, present k0, v0, k1, v1). Named arguments,
    not *past: torch.export matches dynamic shapes to the signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, k0, v0, k1, v1):
        from transformers import DynamicCache

        past = (k0, v0, k1, v1)
        cache = DynamicCache(config=self.model.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = out.past_key_values
        flat = [t for layer in present.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def llama_kv():
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, kv, hd, new, old = 2, 4, 16, 3, 5
    cfg = LlamaConfig(vocab_size=1000, hidden_size=128, num_attention_heads=8, num_key_value_heads=kv,
                      num_hidden_layers=layers, intermediate_size=256, max_position_embeddings=128,
                      attn_implementation="eager")
    module = distinct(KVDecoder(LlamaForCausalLM(cfg)))
    g = torch.Generator().manual_seed(0)
    args = [torch.randint(0, 1000, (2, new), generator=g), torch.ones(2, old + new, dtype=torch.int64)]
    names, dyn = ["input_ids", "attention_mask"], {"input_ids": {0: "batch", 1: "sequence"},
                                                     "attention_mask": {0: "batch", 1: "total"}}
    outs = ["logits"]
    for i in range(layers):
        for kind in ("key", "value"):
            args.append(torch.randn(2, kv, old, hd, generator=g))
            names.append(f"past_key_values.{i}.{kind}")
            outs.append(f"present.{i}.{kind}")
            dyn[names[-1]] = {0: "batch", 2: "past"}
            dyn[outs[-1]] = {0: "batch", 2: "total"}
    dyn["logits"] = {0: "batch", 1: "sequence"}
    return module, tuple(args), names, outs, dyn


class UNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def unet():
    from diffusers import UNet2DConditionModel

    model = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                 block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                 attention_head_dim=8, norm_num_groups=8)
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 4, 16, 16, generator=g), torch.tensor([10.0]), torch.randn(1, 7, 32, generator=g))
    names = ["sample", "timestep", "encoder_hidden_states"]
    return distinct(UNet(model)), args, names, ["out"], {}


class Decoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


def vae():
    from diffusers import AutoencoderKL

    model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                          layers_per_block=1, norm_num_groups=8, sample_size=32)
    args = (torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)),)
    return distinct(Decoder(model)), args, ["latent"], ["image"], {}


class Hidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=1000, dim=128, n_layers=2, n_heads=4, hidden_dim=512,
                           max_position_embeddings=128, attn_implementation="eager")
    g = torch.Generator().manual_seed(0)
    args = (torch.randint(0, 1000, (2, 7), generator=g), torch.ones(2, 7, dtype=torch.int64))
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "hidden": {0: "batch", 1: "sequence"}}
    return distinct(Hidden(DistilBertModel(cfg))), args, ["input_ids", "attention_mask"], ["hidden"], dyn


class SpeakerEncoder(torch.nn.Module):
    """GE2E-style: 3 LSTM layers (40 mel bands -> 256), a projection, an L2-normalised embedding."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.proj = torch.nn.Linear(256, 256)

    def forward(self, mels):
        out, _ = self.lstm(mels)
        e = torch.relu(self.proj(out[:, -1]))
        return e / e.norm(dim=1, keepdim=True)


class BiGRU(torch.nn.Module):
    """2 bidirectional GRU layers (64 -> 128 each way), mean over time, a 10-class head."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(64, 128, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out.mean(1))


def speaker_lstm():
    x = torch.randn(1, 50, 40, generator=torch.Generator().manual_seed(0))
    return SpeakerEncoder().eval(), (x,), ["mels"], ["embedding"], {"mels": {0: "batch", 1: "frames"}}


def bigru():
    x = torch.randn(1, 30, 64, generator=torch.Generator().manual_seed(0))
    return BiGRU().eval(), (x,), ["x"], ["y"], {"x": {0: "batch", 1: "frames"}}


MODELS = {"llama_kv": llama_kv, "unet": unet, "vae": vae, "distilbert": distilbert, "speaker_lstm": speaker_lstm,
          "bigru": bigru}


def export(build, exporter, path):
    module, args, names, outs, dyn = build()
    kw = dict(EXPORTERS[exporter])
    if exporter == "ts":
        kw["dynamic_axes"] = dyn or None
    else:
        kw["dynamic_shapes"] = tuple({k: torch.export.Dim.DYNAMIC for k in dyn.get(n, {})} for n in names) \
            if dyn else None
        kw["optimize"] = True
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            torch.onnx.export(module, args, path, input_names=names, output_names=outs, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS))
    ap.add_argument("--exporters", nargs="*", choices=sorted(EXPORTERS), default=sorted(EXPORTERS))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for name in a.only or MODELS:
        for exporter in a.exporters:
            path = os.path.join(a.out, f"{name}_{exporter}.onnx")
            try:
                export(MODELS[name], exporter, path)
                print(f"{name}_{exporter}: ok")
            except Exception as exc:  # torch raises many types; report and go on
                print(f"{name}_{exporter}: FAILED {type(exc).__name__}: {str(exc).strip()[:300]}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
