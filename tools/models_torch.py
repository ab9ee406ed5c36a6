"""Hand-written torch models for the speed benchmarks (no torchvision, no transformers).

ResNet-50 and MobileNetV2 follow torchvision's module layout (so torchvision state dicts
load into them); ViT-B/16 and a MiniLM-like BERT use separate q/k/v Linears. Random
weights are fine for timing. `export(model, path)` writes opset 17 ONNX with a dynamic
batch axis, through the TorchScript exporter.
"""

from __future__ import annotations

import torch
from torch import nn


# -- ResNet-50 --------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.cin = 64
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def _layer(self, width, blocks, stride):
        down = None
        if stride != 1 or self.cin != width * 4:
            down = nn.Sequential(nn.Conv2d(self.cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
        layers = [Bottleneck(self.cin, width, stride, down)]
        self.cin = width * 4
        layers += [Bottleneck(self.cin, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- ResNet-18 --------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(ResNet50):
    """torchvision's resnet18 layout: two BasicBlocks per stage."""

    def __init__(self, num_classes=1000):
        nn.Module.__init__(self)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.cin = 64
        self.layer1, self.layer2 = self._basic(64, 1), self._basic(128, 2)
        self.layer3, self.layer4 = self._basic(256, 2), self._basic(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def _basic(self, width, stride):
        down = None
        if stride != 1 or self.cin != width:
            down = nn.Sequential(nn.Conv2d(self.cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        layers = [BasicBlock(self.cin, width, stride, down), BasicBlock(width, width)]
        self.cin = width
        return nn.Sequential(*layers)


# -- MobileNetV2 ------------------------------------------------------------------------------
class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        layers = [ConvBNReLU(cin, hidden, 1)] if t != 1 else []
        layers += [ConvBNReLU(hidden, hidden, 3, stride, hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [ConvBNReLU(3, 32, stride=2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# -- transformers -----------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, n, _ = x.shape

        def heads(t):  # -1 keeps it valid when a pruner narrows the head dims
            return t.reshape(b, n, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        att = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            att = att + mask
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PreNormBlock(nn.Module):  # ViT
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT-B/16 by default: 224x224, 16x16 patches, 12 layers, width 768, 12 heads, MLP 3072."""

    def __init__(self, image=224, patch=16, dim=768, depth=12, heads=12, hidden=3072, num_classes=1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[PreNormBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class PostNormLayer(nn.Module):  # BERT
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.attention, self.norm1 = Attention(dim, heads), nn.LayerNorm(dim, eps=1e-12)
        self.mlp, self.norm2 = Mlp(dim, hidden), nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, mask):
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.mlp(x))


class MiniLM(nn.Module):
    """A BERT like all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, intermediate 1536, with
    BERT's pooler. Inputs input_ids and attention_mask [N, S]; output pooled [N, 384]."""

    def __init__(self, vocab=30522, dim=384, depth=6, heads=12, hidden=1536, max_len=512):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.embed_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList([PostNormLayer(dim, heads, hidden) for _ in range(depth)])
        self.pooler = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.embed_norm(self.word_embeddings(input_ids) + self.position_embeddings(pos))
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return torch.tanh(self.pooler(x[:, 0]))


# -- registry and export ----------------------------------------------------------------------
def example_inputs(name, batch=1, seq=128):
    if name == "minilm":
        return (torch.randint(0, 30522, (batch, seq)), torch.ones(batch, seq, dtype=torch.int64))
    return (torch.randn(batch, 3, 224, 224),)


MODELS = {"resnet18": ResNet18, "resnet50": ResNet50, "mobilenetv2": MobileNetV2, "vit_b16": ViT, "minilm": MiniLM}
INPUT_NAMES = {"minilm": ["input_ids", "attention_mask"]}
# Torch-Pruning must leave these alone so the output keeps its width.
HEADS = {"resnet18": "fc", "resnet50": "fc", "mobilenetv2": "classifier.1", "vit_b16": "head", "minilm": "pooler"}


def build(name, seed=0):
    torch.manual_seed(seed)
    model = MODELS[name]()
    for m in model.modules():  # non-trivial BN statistics, so magnitude pruning sees a spread
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.normal_(0, 0.1)
    return model.eval()


def export(model, name, path, seq=128):
    inputs = example_inputs(name, 1, seq)
    names = INPUT_NAMES.get(name, ["input"])
    axes = {n: {0: "N"} for n in names + ["output"]}
    with torch.no_grad():
        torch.onnx.export(model, inputs, path, input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path



def exported(name, folder, seq=128):
    """Path of `name` exported under `folder`, exporting it the first time."""
    import os
    path = os.path.join(folder, f"{name}.onnx")
    if not os.path.exists(path):
        export(build(name), name, path, seq)
    return path
