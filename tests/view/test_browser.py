"""The HTML view in a real headless Chromium (skipped, saying so, where none is
installed): the page loads offline with no console error, shows one element per group of
`spa analyze --json`, a click on a group lists its members, the search box finds nodes;
and `spa prune --report` adds the groups after pruning, the fidelity and the timings.
Screenshots go to $SPA_ARTIFACTS when set (CI keeps them), else to the test's tmp folder."""

import json
import os
import re

import onnx
import pytest
from click.testing import CliRunner

from spa.cli import main
from spa.testing import REPO
from spa.testing import zoo
from spa.testing.browser import Browser, find

MNIST = os.path.join(REPO, "models", "mnist_cnn.onnx")
CHROMIUM = find()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium, or set "
                                                             "SPA_CHROMIUM): the HTML view is not tested in a browser")


def invoke(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The bundled MNIST CNN, a ResNet and a transformer (BERT) from the zoo, with seeded weights."""
    d = tmp_path_factory.mktemp("view")
    paths = {"mnist": MNIST, "resnet18": d / "resnet18.onnx", "bert": d / "bert.onnx"}
    onnx.save(zoo.fill(onnx.load(os.path.join(zoo.ZOO, "torchvision", "resnet18_ts.onnx")), seed=0),
              paths["resnet18"])
    onnx.save(zoo.load("bert", "ts"), paths["bert"])
    return paths


def artifacts(tmp_path):
    folder = os.environ.get("SPA_ARTIFACTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    return folder


def test_page_is_self_contained(models, tmp_path):
    page = tmp_path / "g.html"
    invoke("analyze", models["mnist"], "--html", page)
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\s\"'`]+", text)) <= {"http://www.w3.org/2000/svg"}


@needs_chromium
@pytest.mark.parametrize("name", ["mnist", "resnet18", "bert"])
def test_analyze_html_in_chromium(models, tmp_path, name):
    page = tmp_path / f"{name}.html"
    an = json.loads(invoke("analyze", models[name], "--html", page, "--json").stdout)
    with Browser(CHROMIUM) as b:
        b.open(page)
        assert b.eval("document.querySelectorAll('#groups .group').length") == len(an["groups"])
        assert b.eval("document.querySelectorAll('#graph .node').length") > len(an["groups"])
        group = max(an["groups"], key=lambda g: (g["prunable"], len(g["members"])))
        b.click(f".group[data-gid='{group['id']}']")
        detail = b.eval("document.getElementById('detail').innerText")
        assert f"Group #{group['id']}" in detail and all(m in detail for m in group["members"][:5]), detail
        assert b.eval("document.querySelectorAll('#graph .node.hl').length") >= 1
        node = group["layers"][0]
        b.type("#search", node)
        assert b.eval("document.querySelectorAll('#graph .node.match').length") >= 1
        assert "match" in b.eval("document.getElementById('found').innerText")
        b.screenshot(os.path.join(artifacts(tmp_path), f"view_{name}.png"))
        assert b.errors() == []


@needs_chromium
def test_prune_report_in_chromium(models, tmp_path):
    page, out = tmp_path / "report.html", tmp_path / "o.onnx"
    r = json.loads(invoke("prune", models["mnist"], out, "--ratio", "0.3", "--report", page, "--json").stdout)
    with Browser(CHROMIUM) as b:
        b.open(page)
        groups = b.eval("[...document.querySelectorAll('#groups .group')].map(e => e.innerText)")
        assert len(groups) == 6
        changed = r["changes"][0]
        assert any(f"{changed['before']} → {changed['after']}" in g for g in groups), groups
        head = b.eval("document.getElementById('head').innerText")
        assert f"{r['verdict']['cosine']:.4f}" in head and "took" in head and "fidelity on 8 samples" in head
        b.click(f".group[data-gid='{changed['id']}']")
        assert f"{changed['before']} → {changed['after']} after pruning" in b.eval(
            "document.getElementById('detail').innerText")
        b.screenshot(os.path.join(artifacts(tmp_path), "report_mnist.png"))
        assert b.errors() == []
