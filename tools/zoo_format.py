"""Strip a model into the zoo's weightless format, or fill a stripped one with seeded
weights (the format: spa.testing.zoo).

    python tools/zoo_format.py strip in.onnx out.onnx
    python tools/zoo_format.py fill in.onnx out.onnx [--seed 0]
"""

from __future__ import annotations

import argparse

import onnx

from spa.testing.zoo import fill, strip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["strip", "fill"])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = onnx.load(args.src)
    model = strip(model) if args.action == "strip" else fill(model, args.seed)
    onnx.save(model, args.dst)


if __name__ == "__main__":
    main()
