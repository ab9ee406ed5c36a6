"""Screenshot the HTML view of a model (spa analyze --html) in headless Chromium, with one
group clicked: the picture in the README (docs/view.png); or, with --page, any page SPA
wrote as it is (a sweep's report.html: docs/sweep.png).

    python tools/view_screenshot.py models/mnist_cnn.onnx docs/view.png --group 1
    python tools/view_screenshot.py resnet50.onnx docs/view.png --group 4 --search layer2.0
    python tools/view_screenshot.py sweep/report.html docs/sweep.png --page --size 1200x700
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
    ap.add_argument("--page", action="store_true", help="MODEL is an HTML page to screenshot as it is")
    args = ap.parse_args(argv)
    exe = find()
    if exe is None:
        sys.exit("no Chromium on PATH (apt-get install chromium, or set SPA_CHROMIUM)")
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        html = os.path.abspath(args.model) if args.page else os.path.join(d, "view.html")
        if not args.page:
            write(html, page(args.model, spa.analyze(args.model)))
        with Browser(exe, width, height) as b:
            b.open(html)
            if not args.page:
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
