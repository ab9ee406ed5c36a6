"""The sweep's report.html in a real headless Chromium, as the analyze view is tested
(skipped, saying so, where none is installed): offline, no console error, per model two
plots with a point per finished candidate and a Pareto front, and a click on a point shows
the candidate's settings and a link to its pruned file."""

import json
import os
import re

import pytest

from spa.testing.browser import Browser, find

from .conftest import records

CHROMIUM = find()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium, or set "
                                                             "SPA_CHROMIUM): the sweep report is not tested in a browser")


def test_report_is_self_contained(local_sweep):
    text = (local_sweep[0] / "report.html").read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\s\"'`]+", text)) <= {"http://www.w3.org/2000/svg"}


@needs_chromium
def test_report_in_chromium(local_sweep, tmp_path):
    out, _ = local_sweep
    recs = records(out)
    with Browser(CHROMIUM) as b:
        b.open(out / "report.html")
        assert b.eval("[...document.querySelectorAll('section.model')].map(s => s.dataset.model)") == \
            ["mobilenetv2", "resnet"]
        for m in ("mobilenetv2", "resnet"):
            mine = [r for r in recs if r["model"] == m]
            for axis in ("latency", "macs"):
                sel = f"section[data-model='{m}'] svg[data-axis='{axis}']"
                ids = b.eval(f"[...document.querySelectorAll(\"{sel} circle.pt\")].map(c => c.dataset.id)")
                assert sorted(ids) == sorted(r["id"] for r in mine)
                assert b.eval(f"document.querySelectorAll(\"{sel} circle.front\").length") >= 1
        r = recs[-1]
        b.click(f"svg[data-axis='latency'] circle[data-id='{r['id']}']")
        detail = b.eval("document.getElementById('detail').innerText")
        assert r["id"] in detail and r["criterion"] in detail and f"{r['after']['macs']}" in detail, detail
        href = b.eval("document.querySelector('#detail a.file').getAttribute('href')")
        assert href == r["file"] and os.path.isfile(out / href)
        assert b.eval("document.querySelectorAll('.sel').length") == 3  # both plots and the table row
        b.screenshot(os.path.join(os.environ.get("SPA_ARTIFACTS") or str(tmp_path), "sweep_report.png"))
        assert b.errors() == []
        assert json.loads(b.eval("document.getElementById('sweep-data').textContent"))[r["id"]]["file"] == r["file"]
