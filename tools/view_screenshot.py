"""Screenshot the HTML view of a model (spa analyze --html) in headless Chromium, with one
group clicked: the picture in the README (docs/view.png).

    python tools/view_screenshot.py models/mnist_cnn.onnx docs/view.png --group 1
    python tools/view_screenshot.py resnet50.onnx docs/view.png --group 4 --search layer2.0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import spa
from spa.testing.browser import Browser, find
from spa.view import page, write


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("png")
    ap.add_argument("--group", type=int, default=1, help="the group to click")
    ap.add_argument("--search", default="", help="text to type into the search box")
    ap.add_argument("--size", default="1400x900")
    args = ap.parse_args(argv)
    exe = find()
    if exe is None:
        sys.exit("no Chromium on PATH (apt-get install chromium, or set SPA_CHROMIUM)")
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        html = os.path.join(d, "view.html")
        write(html, page(args.model, spa.analyze(args.model)))
        with Browser(exe, width, height) as b:
            b.open(html)
            b.click(f".group[data-gid='{args.group}']")
            if args.search:
                b.type("#search", args.search)
            b.screenshot(args.png)
            errors = b.errors()
    if errors:
        sys.exit(f"the page logged errors: {errors}")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
