"""How far gradient-based distillation on the same calibration data takes a pruned model:
a reference for what spa.recover (linear, layer by layer) leaves on the table.

    python tools/distill_ceiling.py ORIGINAL.onnx PRUNED.onnx --epochs 12 --lr 1e-4 --loss mse

Both ONNX models are run as torch modules (a small interpreter for the CNN ops the
torch exporters write: Conv, BatchNormalization, Clip, Relu, Add, GlobalAveragePool,
ReduceMean, Flatten, Reshape, Gemm). Every float weight of the pruned model is trained
(Adam, batches of 32, random horizontal flips) to match the original's logits on the 256
calibration views of tools/recover_bench.py (MSE of logits, or KL of their softmax); after
each epoch the pruned model's top-1 agreement with the original on the 200 scored photo
views is printed. BatchNorm running statistics and Clip bounds stay fixed. Needs torch (bench extra); no
part of spa uses it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


class OnnxModule(torch.nn.Module):
    """An ONNX CNN classifier as a torch module whose float weights are parameters."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        self.graph = model.graph
        fixed = {s for n in model.graph.node for s in _not_trained(n)}
        self.keys, self.fixed = {}, {}
        self.params = torch.nn.ParameterList()
        for t in model.graph.initializer:
            a = torch.from_numpy(numpy_helper.to_array(t).copy())
            if a.dtype == torch.float32 and t.name not in fixed:
                self.keys[t.name] = len(self.params)
                self.params.append(torch.nn.Parameter(a))
            else:
                self.fixed[t.name] = a
        for n in model.graph.node:
            if n.op_type == "Constant":
                self.fixed[n.output[0]] = torch.from_numpy(numpy_helper.to_array(n.attribute[0].t).copy())

    def value(self, env, name):
        if name in env:
            return env[name]
        if name in self.keys:
            return self.params[self.keys[name]]
        return self.fixed.get(name)

    def forward(self, x):
        env = {self.graph.input[0].name: x}
        for n in self.graph.node:
            if n.op_type != "Constant":
                env[n.output[0]] = apply(n, [self.value(env, s) if s else None for s in n.input])
        return env[self.graph.output[0].name]


def _not_trained(node):
    """Inputs of a node that stay fixed: BatchNorm running statistics, Clip bounds."""
    if node.op_type == "BatchNormalization":
        return node.input[3:5]
    return node.input[1:] if node.op_type == "Clip" else []


def apply(node, i):
    a = {h.name: helper.get_attribute_value(h) for h in node.attribute}
    op = node.op_type
    if op == "Conv":
        p = list(a.get("pads", [0, 0, 0, 0]))
        if p[:2] != p[2:]:
            raise NotImplementedError("asymmetric Conv pads")
        return F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, a.get("strides", 1), tuple(p[:2]),
                        a.get("dilations", 1), a.get("group", 1))
    if op == "BatchNormalization":
        c = [v[None, :, None, None] for v in i[1:5]]
        return (i[0] - c[2]) / torch.sqrt(c[3] + a.get("epsilon", 1e-5)) * c[0] + c[1]
    if op == "Clip":
        return torch.clamp(i[0], float(i[1]), float(i[2]))
    if op == "Relu":
        return F.relu(i[0])
    if op == "Add":
        return i[0] + i[1]
    if op == "GlobalAveragePool":
        return i[0].mean((2, 3), keepdim=True)
    if op == "ReduceMean":
        return i[0].mean((2, 3), keepdim=bool(a.get("keepdims", 1)))
    if op in ("Flatten", "Reshape"):
        return i[0].flatten(1)
    if op == "Gemm":
        return i[0] @ (i[1].t() if a.get("transB", 0) else i[1]) + i[2]
    raise NotImplementedError(op)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("original")
    ap.add_argument("pruned")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--loss", choices=("mse", "kl"), default="mse")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from tools.recover_bench import photo_views

    torch.set_num_threads(args.threads)
    x, cal = (torch.from_numpy(v) for v in photo_views())
    teacher, student = OnnxModule(onnx.load(args.original)).eval(), OnnxModule(onnx.load(args.pruned)).eval()

    def logits(m, v):
        return torch.cat([m(v[i:i + 50]) for i in range(0, len(v), 50)])

    with torch.no_grad():
        ref = logits(teacher, x).argmax(1)

    def agreement():
        with torch.no_grad():
            return float((logits(student, x).argmax(1) == ref).float().mean())

    print(f"start: agreement {agreement():.3f}", flush=True)
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    rng, t0 = np.random.default_rng(0), time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for idx in np.array_split(rng.permutation(len(cal)), len(cal) // 32):
            xb = cal[idx].flip(3) if rng.random() < 0.5 else cal[idx]
            with torch.no_grad():
                target = teacher(xb)
            out = student(xb)
            if args.loss == "kl":
                loss = F.kl_div(F.log_softmax(out, 1), F.log_softmax(target, 1), log_target=True, reduction="batchmean")
            else:
                loss = F.mse_loss(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        print(f"epoch {epoch}: loss {total / (len(cal) // 32):.4f} agreement {agreement():.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
