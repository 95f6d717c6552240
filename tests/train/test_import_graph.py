"""The import graph of ``stdcl/``: no cycles (function-level imports included) and the layer rule
(for ``stdcl/`` and ``analysis/``).

Layers import only downward: ``stdcl.data`` -> ``stdcl.encoders`` -> ``stdcl.head`` ->
``stdcl.train`` -> ``analysis`` -> ``app``. Every ``import`` statement of every module counts,
wherever it stands (module level, inside a function, under ``if TYPE_CHECKING``), so a lazy
import cannot hide a cycle. ``from pkg import name`` is an edge to ``pkg.name`` when that is
a module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "stdcl"

#: Known cycles, as sorted tuples of the modules of one strongly connected component. Both are a
#: package ``__init__`` and a submodule that reaches back to it from inside a function; neither
#: module is this test's to change:
ALLOWED_CYCLES: set[tuple[str, ...]] = {
    # stdcl/encoders/registry.py imports the package (`import stdcl.encoders as pkg`) to discover
    # the encoder modules; stdcl/encoders/__init__.py re-exports the registry.
    ("stdcl.encoders", "stdcl.encoders.registry"),
    # stdcl/cli/__init__.py imports its command modules when building the parser; each of them
    # (analyze, bench, data, encoders, experiment, train) imports `subparser` back from it.
    ("stdcl.cli", "stdcl.cli.analyze", "stdcl.cli.bench", "stdcl.cli.data", "stdcl.cli.encoders",
     "stdcl.cli.experiment", "stdcl.cli.train"),
}
#: Known layer violations, as (importer, imported) (none today).
ALLOWED_LAYER_EDGES: set[tuple[str, str]] = set()

#: (importer prefix, forbidden imported prefixes, importers exempt from the rule)
LAYER_RULES = [
    ("stdcl", ("analysis", "app"), ("stdcl.cli",)),  # the CLI may dispatch to analysis
    ("stdcl.data", ("stdcl.encoders", "stdcl.head", "stdcl.train"), ()),
    ("stdcl.encoders", ("stdcl.head", "stdcl.train"), ()),
    ("stdcl.head", ("stdcl.train",), ()),
    ("analysis", ("app",), ()),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``stdcl/train/engine.py`` -> ``stdcl.train.engine``; ``stdcl/train/__init__.py`` -> ``stdcl.train``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """Every module name ``path`` imports (absolute or relative, at any depth), resolved to a module
    of ``modules`` where the target is one, else the name as written (external packages)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else target)
    return out


def import_graph(package: Path = PACKAGE, root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: the modules of the package it imports}`` for every ``.py`` file under ``package``."""
    files = {module_name(p, root): p for p in sorted(package.rglob("*.py"))}
    names = set(files)
    graph = {}
    for mod, path in files.items():
        graph[mod] = {n for n in imported_names(path, names, root) if n in names and n != mod}
    return graph


def external_imports(package: Path = PACKAGE, root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: every name it imports}``, external packages included (for the layer rule)."""
    files = {module_name(p, root): p for p in sorted(package.rglob("*.py"))}
    return {mod: imported_names(path, set(files), root) for mod, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of :func:`components`."""
    return [_cycle_in(comp, graph) for comp in components(graph)]


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components (sorted module lists) of more than one module, or of a module
    importing itself: Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    found.append(sorted(comp))
    return found


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    members = set(component)
    first = component[0]
    parent: dict[str, str] = {}
    frontier = [first]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(parent[path[-1]])
                    return path[::-1] + [first]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return component + [first]


def layer_violations(imports: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that break :data:`LAYER_RULES`."""
    bad = []
    for mod, names in sorted(imports.items()):
        for prefix, forbidden, exempt in LAYER_RULES:
            if not _under(mod, prefix) or any(_under(mod, e) for e in exempt):
                continue
            bad += [(mod, n) for n in sorted(names) if any(_under(n, f) for f in forbidden)]
    return bad


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# -- the checks on the repository ---------------------------------------------------------------

def test_stdcl_has_no_import_cycle():
    graph = import_graph()
    found = {tuple(comp): _cycle_in(comp, graph) for comp in components(graph)}
    new = [" -> ".join(c) + f" (all of: {', '.join(comp)})" for comp, c in found.items() if comp not in ALLOWED_CYCLES]
    assert not new, "import cycles in stdcl/: " + "; ".join(new)
    stale = ALLOWED_CYCLES - set(found)
    assert not stale, f"allowed cycles that no longer exist (remove them from ALLOWED_CYCLES): {sorted(stale)}"


def test_stdcl_and_analysis_import_only_downward():
    bad = layer_violations(external_imports() | external_imports(ROOT / "analysis"))
    new = [f"{a} imports {b}" for a, b in bad if (a, b) not in ALLOWED_LAYER_EDGES]
    assert not new, "layer rule broken: " + "; ".join(new)
    stale = ALLOWED_LAYER_EDGES - set(bad)
    assert not stale, f"allowed layer edges that no longer exist (remove them): {sorted(stale)}"


# -- the checker itself, on a small package written here ----------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "stdcl"


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = _write(tmp_path, {
        "stdcl/__init__.py": "",
        "stdcl/train/__init__.py": "",
        "stdcl/train/engine.py": "from stdcl.train.evaluate import predict\n",
        "stdcl/train/evaluate.py": "def f():\n    from stdcl.train.engine import resolve_device\n",
        "stdcl/train/other.py": "from . import evaluate\nimport stdcl.train.engine\n",
    })
    graph = import_graph(pkg, tmp_path)
    assert graph["stdcl.train.other"] == {"stdcl.train.evaluate", "stdcl.train.engine"}
    assert cycles(graph) == [["stdcl.train.engine", "stdcl.train.evaluate", "stdcl.train.engine"]]


def test_checker_reports_a_three_module_cycle_and_accepts_a_tree(tmp_path):
    pkg = _write(tmp_path, {
        "stdcl/__init__.py": "",
        "stdcl/a.py": "from stdcl import b\n",
        "stdcl/b.py": "from .c import thing\n",
        "stdcl/c.py": "import os\nif True:\n    from stdcl.a import x\n",
        "stdcl/d.py": "from stdcl import a, b, c\n",
    })
    graph = import_graph(pkg, tmp_path)
    assert cycles(graph) == [["stdcl.a", "stdcl.b", "stdcl.c", "stdcl.a"]]
    graph["stdcl.c"] = set()
    assert cycles(graph) == []


def test_checker_flags_layer_violations(tmp_path):
    pkg = _write(tmp_path, {
        "stdcl/__init__.py": "",
        "stdcl/data/__init__.py": "",
        "stdcl/data/x.py": "def f():\n    from stdcl.train import engine\n",
        "stdcl/head/h.py": "from stdcl.encoders import base\nimport analysis.core\n",
        "stdcl/cli/c.py": "from analysis import core\n",
        "stdcl/encoders/base.py": "",
        "stdcl/train/engine.py": "",
    })
    bad = layer_violations(external_imports(pkg, tmp_path))
    assert bad == [("stdcl.data.x", "stdcl.train.engine"), ("stdcl.head.h", "analysis.core")]


@pytest.mark.parametrize("mod", ["stdcl.train.engine", "stdcl.train.evaluate", "stdcl.data.ntu_raw"])
def test_graph_sees_real_modules(mod):
    graph = import_graph()
    assert mod in graph and graph[mod], f"{mod} has no stdcl imports in the graph"
