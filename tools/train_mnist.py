"""Train a small residual CNN on MNIST (CPU) and export it to ONNX.

Produces ``<out>/mnist_cnn.onnx`` (input ``input`` [N,1,28,28] float32, normalised as
``(x/255 - MEAN) / STD``; output ``logits`` [N,10]) and ``<out>/mnist_sample.npz`` with the
first 1000 test images (key ``input``, already normalised) and their labels (key ``labels``).
Reports torch and onnxruntime accuracy on the full 10k test set.

    python tools/train_mnist.py [--out models] [--epochs 1]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
import torch.nn.functional as F

from mnist import load_mnist  # a sibling: tools/ is the script's folder

MEAN, STD = 0.1307, 0.3081
SEED = 0


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


class MnistCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(1, 32)
        self.conv2 = conv_bn(32, 32)  # residual block: relu(bn(conv(h)) + h)
        self.conv3 = conv_bn(32, 64)
        self.conv4 = conv_bn(64, 64)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h) + h)
        h = self.pool(h)
        h = F.relu(self.conv3(h))
        h = F.relu(self.conv4(h))
        h = self.pool(h)
        h = F.relu(self.fc1(self.flatten(h)))
        return self.fc2(h)


def normalise(x: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28], the model's expected input."""
    return ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, bs: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + bs])).numpy() for i in range(0, len(x), bs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models", help="output directory (default: models)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (default: 1, ~100 s on 2 CPU cores)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate for AdamW")
    args = ap.parse_args()

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    xtr_u8, ytr, xte_u8, yte = load_mnist()
    xtr, xte = normalise(xtr_u8), normalise(xte_u8)
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)

    model = MnistCNN().to(memory_format=torch.channels_last)  # ~15% faster conv training on CPU
    steps_per_epoch = len(xtr) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(len(xtr))
        running = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
            xb = torch.from_numpy(xtr[idx]).contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(ytr[idx])
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {running / steps_per_epoch:.4f} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    train_time = time.perf_counter() - t0

    model = model.to(memory_format=torch.contiguous_format).eval()
    torch_acc = accuracy(torch_logits(model, xte), yte)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "mnist_cnn.onnx"
    # dynamo=False (TorchScript exporter) is deliberate: it gives a plain, BN-folded graph.
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.onnx.export(
        model, (torch.from_numpy(xte[:1]),), str(onnx_path),
        dynamo=False, opset_version=17, do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    np.savez_compressed(out / "mnist_sample.npz", input=xte[:1000], labels=yte[:1000])

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(["logits"], {"input": xte[i:i + 1000]})[0]
                                 for i in range(0, len(xte), 1000)])
    onnx_acc = accuracy(ort_logits, yte)

    print(f"train time: {train_time:.1f}s ({args.epochs} epochs, {torch.get_num_threads()} threads)")
    print(f"torch test accuracy: {torch_acc:.4f}")
    print(f"onnx  test accuracy: {onnx_acc:.4f} "
          f"(max |logit diff| vs torch {np.abs(ort_logits - torch_logits(model, xte)).max():.2e})")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB) and {out / 'mnist_sample.npz'}")


if __name__ == "__main__":
    main()
