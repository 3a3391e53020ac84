"""The package's import structure: no import cycle between auditor's modules, counting the imports
inside functions (so no function-level import dodges one), and the layers import downwards only
(model -> grad -> cost models -> runtime -> attacks -> scenario -> report records -> pipeline -> the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "auditor"

#: each layer may import the ones listed before it (and itself); top-level helpers are the base
LAYERS = ["base", "engine", "model", "grad", "axfpm", "hw", "runtime", "attacks", "config", "report", "pipeline",
          "front"]
#: the layer of each top-level module or subpackage, or of a module inside one (the longest prefix wins)
LAYER_OF = {
    # the one onnxruntime session factory: every layer that runs a graph uses it (folding at load time too)
    "runtime.engine": "engine",
    # a command: the layer table with the gradient rules' verdict on differentiability
    "model.inspect": "front",
    # a deployment what-if whose activation scales are calibrated by running the model
    "model.rewrite.quantize": "runtime",
    "errors": "base", "files": "base", "registry": "base", "schema": "base", "progress": "base",
    "environment": "base", "norms": "base", "data": "base", "version": "base",
    "model": "model", "grad": "grad", "runtime": "runtime", "axfpm": "axfpm", "hw": "hw",
    "attacks": "attacks", "scenario": "config", "validate": "config", "catalog": "config", "report": "report",
    "pipeline": "pipeline", "docs": "front", "cli": "front", "__init__": "front",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = ["auditor", *p.relative_to(PACKAGE).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _imports(mods) -> dict[str, set[str]]:
    """module -> the auditor modules it imports anywhere in its body (top level or in a function)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").split(".")[0] == "auditor":
                    target = node.module
                else:
                    continue
                names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "auditor"]
            else:
                continue
            for t in names:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != m:
                    edges[m].add(t)
    return edges


def _cycles(edges) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")[1:] or ["__init__"]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER_OF:
            return LAYER_OF[".".join(parts[:n])]
    raise KeyError(module)


def test_no_import_cycle_counting_imports_inside_functions():
    cycles = _cycles(_imports(_modules()))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in _modules() if "." in m} - set(LAYER_OF))
    assert not missing, f"modules without a layer in LAYER_OF: {missing}"


def test_layers_import_downwards_only():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {t}" for m, ts in _imports(_modules()).items() for t in ts
                    if rank[_layer(t)] > rank[_layer(m)])
    assert not upward, "imports against the layering: " + ", ".join(upward)


def test_the_checker_sees_cycles_and_upward_imports():
    """The checks above can fail: a two-module cycle and a function-level upward import are found."""
    edges = {"auditor.a": {"auditor.b"}, "auditor.b": {"auditor.a"}, "auditor.c": set()}
    assert _cycles(edges) == [["auditor.a", "auditor.b"]]
    tree_src = "def f():\n    from ..pipeline.run import run_audit\n"
    node = ast.parse(tree_src).body[0].body[0]
    assert isinstance(node, ast.ImportFrom) and node.level == 2
