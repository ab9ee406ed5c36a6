"""The package layout: no import cycles, no function-level imports, no private names
across packages, and a short top level (issue #16)."""

import ast
import pathlib

import networkx as nx

ROOT = pathlib.Path(__file__).resolve().parents[1] / "spa"  # read, not imported: a cycle may not load
OPTIONAL = {"torch", "tqdm", "rich", "ray"}  # heavy optional dependencies may be imported late


def _name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _package(mod: str) -> str:
    return mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]


def _imports(mod):
    """(target module, imported names, node) for every import of `mod` inside spa."""
    tree = ast.parse(MODULES[mod].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "spa":
                    yield a.name, [], node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(mod).split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "spa":
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            yield target, [n for n in names if f"{target}.{n}" not in MODULES], node
            for s in subs:
                yield s, [], node


def _graph():
    g = nx.DiGraph()
    for mod in MODULES:
        g.add_node(mod)
        for target, _, _ in _imports(mod):
            parts = target.split(".")
            for k in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too,
                dep = ".".join(parts[:k])  # unless a.b is the importer's own (already running) package
                if dep in MODULES and dep != mod and not (mod + ".").startswith(dep + ".") \
                        and not (k < len(parts) and _package(mod).startswith(dep)):
                    g.add_edge(mod, dep)
    return g


def test_graph_sees_the_package():
    g = _graph()
    assert "spa.api" in g and g.has_edge("spa.api", "spa.graph")
    assert g.number_of_edges() > 50


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(_graph()))
    assert cycles == [], f"import cycles: {cycles[:5]}"


def test_no_function_level_imports():
    late = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    top = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
                    if getattr(node, "level", 0) or top.split(".")[0] not in OPTIONAL:
                        late.append(f"{mod}:{node.lineno}")
    assert late == []


def test_no_private_names_across_packages():
    bad = []
    for mod in MODULES:
        for target, names, node in _imports(mod):
            if _package(target) != _package(mod):
                bad += [f"{mod}:{node.lineno} {n}" for n in names if n.startswith("_")]
    assert bad == []


def test_short_top_level():
    top = [p for p in ROOT.glob("*.py")]
    assert len(top) <= 12, sorted(p.name for p in top)
