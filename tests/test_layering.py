"""The package's layering (docs/ARCHITECTURE.md, "Layers"), read from the source with ``ast``.

Every ``import`` counts, function-local ones included (``if TYPE_CHECKING:`` blocks excepted):

- layers, lowest first: core (``edgeretina.*``: data, preprocess, models, train, metrics, compare, runtime,
  tasks, io, ...) ← ``edgeretina.converters`` ← ``edgeretina.benchmarks`` ← top (``edgeretina.cli``,
  ``edgeretina.demo``, ``edgeretina.__main__``); a module never imports from a layer above its own;
- ``edgeretina.runtime`` (the LiteRT layer) imports only errors / io / tasks from the core, and no TensorFlow;
- only ``runtime/interpreter.py`` imports LiteRT's Interpreter and only ``runtime/flatbuffer.py`` the
  flatbuffer schema / tools;
- no module imports another module's private name (``from x import _y``, ``x._y`` on an imported module);
- no import cycle between modules (a submodule importing its own package's ``__init__`` aside).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder → installed package name (pyproject's package-dir)
PACKAGES = {"edgeretina": ROOT / "edgeretina", "edgeretina.converters": ROOT / "converters",
            "edgeretina.benchmarks": ROOT / "benchmarks"}
NOT_PACKAGE = {ROOT / "benchmarks" / "suites"}  # pytest-benchmark files, not installed

LAYERS = ("core", "converters", "benchmarks", "top")
TOP = ("edgeretina.cli", "edgeretina.demo", "edgeretina.__main__")
RUNTIME_MAY_IMPORT = {"edgeretina", "edgeretina.errors", "edgeretina.io", "edgeretina.tasks"}
HEAVY = ("tensorflow", "tf_keras", "keras", "edgeretina._keras", "tensorflow_model_optimization")
LITERT_INTERPRETER = {"ai_edge_litert.interpreter"}
LITERT_FLATBUFFER = {"ai_edge_litert.schema_py_generated", "ai_edge_litert.tools.flatbuffer_utils",
                     "ai_edge_litert.tools"}

# Private names still used across modules by files whose owners are mid-refactor (issue 16). Each entry is
# (importing module, private name); delete it when that module switches to the public name.
PENDING_PRIVATE: set[tuple[str, str]] = set()
# Import cycles still open, same rule: delete the entry when the cycle is gone.
PENDING_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Edge:
    src: str          # importing module
    target: str       # imported module (resolved, absolute)
    names: tuple[str, ...]  # names imported from it (empty for ``import x``)
    line: int


def _module_name(path: Path) -> tuple[str, bool] | None:
    for pkg, d in PACKAGES.items():
        try:
            rel = path.relative_to(d)
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        return ".".join([pkg, *parts]), is_init
    return None


def _sources() -> dict[str, tuple[Path, bool]]:
    out = {}
    for d in PACKAGES.values():
        for f in sorted(d.rglob("*.py")):
            if any(f.is_relative_to(x) for x in NOT_PACKAGE) or ".venv" in f.parts:
                continue
            name = _module_name(f)
            if name and name[0] not in out:
                out[name[0]] = (f, name[1])
    return out


SOURCES = _sources()
MODULES = set(SOURCES)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        skip.add(n.lineno)
    return skip


def _resolve(mod: str, is_init: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_init else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(mod: str) -> tuple[list[Edge], ast.AST]:
    path, is_init = SOURCES[mod]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    edges = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            edges += [Edge(mod, a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, is_init, node)
            names = tuple(a.name for a in node.names)
            edges.append(Edge(mod, target, names, node.lineno))
            # ``from pkg import submodule`` imports the submodule too
            edges += [Edge(mod, f"{target}.{n}", (), node.lineno) for n in names if f"{target}.{n}" in MODULES]
    return edges, tree


EDGES = {m: _edges(m) for m in sorted(MODULES)}


def layer(mod: str) -> int:
    if any(mod == t or mod.startswith(t + ".") for t in TOP):
        return 3
    if mod == "edgeretina.benchmarks" or mod.startswith("edgeretina.benchmarks."):
        return 2
    if mod == "edgeretina.converters" or mod.startswith("edgeretina.converters."):
        return 1
    return 0


def _internal(target: str) -> str | None:
    """The edgeretina module an import refers to (the longest known prefix), or None for third-party."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in MODULES:
            return name
    return None


def _where(e: Edge) -> str:
    return f"{SOURCES[e.src][0].relative_to(ROOT)}:{e.line}"


def test_sources_found():
    assert {"edgeretina.runtime.interpreter", "edgeretina.converters.export", "edgeretina.benchmarks.harness",
            "edgeretina.cli"} <= MODULES


def test_no_import_goes_up_a_layer():
    bad = []
    for mod, (edges, _) in EDGES.items():
        for e in edges:
            t = _internal(e.target)
            if t is not None and layer(t) > layer(mod):
                bad.append(f"{_where(e)}: {LAYERS[layer(mod)]} module {mod} imports {LAYERS[layer(t)]} {t}")
    assert not bad, "imports against the layering (core ← converters ← benchmarks ← cli/demo):\n" + "\n".join(bad)


def test_runtime_is_the_bottom_litert_layer():
    bad = []
    for mod, (edges, _) in EDGES.items():
        if not mod.startswith("edgeretina.runtime"):
            continue
        for e in edges:
            t = _internal(e.target)
            if t is not None and not t.startswith("edgeretina.runtime") and t not in RUNTIME_MAY_IMPORT:
                bad.append(f"{_where(e)}: {mod} imports {t}")
            if any(e.target == h or e.target.startswith(h + ".") for h in HEAVY):
                bad.append(f"{_where(e)}: {mod} imports {e.target} (the runtime layer runs without TensorFlow)")
    assert not bad, "\n".join(bad)


def test_one_module_opens_litert_and_one_reads_the_flatbuffer():
    bad = []
    for mod, (edges, _) in EDGES.items():
        for e in edges:
            full = {e.target} | {f"{e.target}.{n}" for n in e.names}
            if full & LITERT_INTERPRETER and mod != "edgeretina.runtime.interpreter":
                bad.append(f"{_where(e)}: {mod} imports LiteRT's Interpreter (use edgeretina.runtime.LiteRTModel)")
            if full & LITERT_FLATBUFFER and mod != "edgeretina.runtime.flatbuffer":
                bad.append(f"{_where(e)}: {mod} reads the .tflite flatbuffer (use edgeretina.runtime.flatbuffer)")
    assert not bad, "\n".join(bad)


def _module_aliases(mod: str, edges: list[Edge], tree: ast.AST) -> dict[str, str]:
    """Local names bound to edgeretina modules (``import a.b as x``, ``from a import b``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in MODULES:
                    out[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, SOURCES[mod][1], node)
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    out[a.asname or a.name] = f"{target}.{a.name}"
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_crosses_modules():
    bad = []
    for mod, (edges, tree) in EDGES.items():
        for e in edges:
            t = _internal(e.target)
            if t is None or t == mod:
                continue
            for n in e.names:
                if _private(n) and (mod, n) not in PENDING_PRIVATE:
                    bad.append(f"{_where(e)}: {mod} imports {t}.{n}")
        aliases = _module_aliases(mod, edges, tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)
                    and aliases[node.value.id] != mod and (mod, node.attr) not in PENDING_PRIVATE):
                bad.append(f"{SOURCES[mod][0].relative_to(ROOT)}:{node.lineno}: {mod} uses "
                           f"{aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules (make them public or move them):\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, (edges, _) in EDGES.items():
        for e in edges:
            t = _internal(e.target)
            if t is None or t == mod or mod.startswith(t + "."):
                continue  # third-party, itself, or its own (ancestor) package's __init__
            g[mod].add(t)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = [c for c in _cycles(_graph()) if frozenset(c) not in PENDING_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


@pytest.mark.parametrize("src, target, ok", [
    ("edgeretina.converters.export", "edgeretina.benchmarks.harness", False),
    ("edgeretina.runtime.interpreter", "edgeretina.converters.verify", False),
    ("edgeretina.benchmarks.harness", "edgeretina.converters.variants", True),
    ("edgeretina.cli.export", "edgeretina.converters", True),
    ("edgeretina.metrics", "edgeretina.demo", False),
])
def test_layer_rule_itself(src, target, ok):
    assert (layer(target) <= layer(src)) is ok
