"""The package's layering (docs/ARCHITECTURE.md, "Layers"), read from the source with ``ast``.

Every ``import`` counts, function-local ones included (``if TYPE_CHECKING:`` blocks excepted):

- layers, lowest first: core (``edgeretina.*``: data, preprocess, models, train, metrics, compare, runtime,
  tasks, io, ...) ← ``edgeretina.converters`` ← ``edgeretina.inference`` (open, check and run an exported
  model; predict) ← ``edgeretina.benchmarks`` ← top (``edgeretina.cli``, ``edgeretina.demo``,
  ``edgeretina.__main__``); a module never imports from a layer above its own;
- ``edgeretina.runtime`` (the LiteRT layer) imports only errors / io / tasks from the core, and no TensorFlow;
- only ``runtime/interpreter.py`` imports LiteRT's Interpreter and only ``runtime/flatbuffer.py`` the
  flatbuffer schema / tools;
- no module imports another module's private name (``from x import _y``, ``x._y`` on an imported module);
- no import cycle between modules (a submodule importing its own package's ``__init__`` aside);
- imports sit at module level: a function-local import of an edgeretina module is allowed only when that module
  is heavy (it imports TensorFlow, scipy, ... at module level, directly or through another heavy module: the
  CLI and the LiteRT-only paths must not pay for it) or when ``LOCAL_IMPORTS`` lists it with its reason.
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

LAYERS = ("core", "converters", "inference", "benchmarks", "top")
TOP = ("edgeretina.cli", "edgeretina.demo", "edgeretina.__main__")
RUNTIME_MAY_IMPORT = {"edgeretina", "edgeretina.errors", "edgeretina.io", "edgeretina.tasks"}
HEAVY = ("tensorflow", "tf_keras", "keras", "edgeretina._keras", "tensorflow_model_optimization")
LITERT_INTERPRETER = {"ai_edge_litert.interpreter"}
LITERT_FLATBUFFER = {"ai_edge_litert.schema_py_generated", "ai_edge_litert.tools.flatbuffer_utils",
                     "ai_edge_litert.tools"}

# Libraries whose import is deferred into the functions that use them (seconds to import, or TensorFlow's
# process-wide start-up): an edgeretina module that imports one at module level is *heavy*, and so is one that
# imports a heavy edgeretina module at module level. Only heavy modules may be imported inside a function.
DEFERRED = HEAVY + ("ai_edge_quantizer", "keras_tuner", "matplotlib", "sklearn", "scipy")

# Function-local imports of light edgeretina modules still in place: (importing module, imported module) → why.
# Every entry must still exist (delete it when the import moves to module level): the list only shrinks.
LOCAL_IMPORTS: dict[tuple[str, str], str] = {}  # none left (issue 16)
# Modules other issues are reworking right now: their light function-local imports are tolerated until that
# work lands and moves them up. A module leaves this set when it has none left (the check then fails until the
# entry is deleted), so it only shrinks too.
PENDING_LOCAL_MODULES: set[str] = set()  # none left (issue 16)

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
        return LAYERS.index("top")
    for name in ("benchmarks", "inference", "converters"):
        if mod == f"edgeretina.{name}" or mod.startswith(f"edgeretina.{name}."):
            return LAYERS.index(name)
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
    assert not bad, ("imports against the layering (core ← converters ← inference ← benchmarks ← cli/demo):\n"
                     + "\n".join(bad))


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
    ("edgeretina.inference.predict", "edgeretina.benchmarks.scoring", False),
    ("edgeretina.benchmarks.harness", "edgeretina.inference.modelfile", True),
    ("edgeretina.inference.cpu", "edgeretina.converters.guard", True),
])
def test_layer_rule_itself(src, target, ok):
    assert (layer(target) <= layer(src)) is ok


# ------------------------------------------------------------------------------------- imports at module level
def _module_level(tree: ast.AST) -> list[ast.stmt]:
    """Import statements that run when the module is imported (not in a function; ``TYPE_CHECKING`` aside)."""
    skip = _type_checking_lines(tree)
    out: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(ch, (ast.Import, ast.ImportFrom)) and ch.lineno not in skip:
                out.append(ch)
            visit(ch)

    visit(tree)
    return out


def _local_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements inside a function body (nested functions included)."""
    out: list[ast.stmt] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return sorted(set(out), key=lambda n: n.lineno)


def _targets(mod: str, node: ast.stmt) -> list[str]:
    """The modules an import statement names (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = _resolve(mod, SOURCES[mod][1], node)
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs or [base]


def _is_deferred_lib(target: str) -> bool:
    return any(target == h or target.startswith(h + ".") for h in DEFERRED) and _internal(target) in (
        None, "edgeretina._keras")


def heavy_modules() -> set[str]:
    """edgeretina modules whose import pulls a DEFERRED library: directly, or through a heavy module."""
    direct: dict[str, set[str]] = {}
    heavy: set[str] = set()
    for mod, (path, is_init) in SOURCES.items():
        stmts = _module_level(EDGES[mod][1])
        targets = [t for n in stmts for t in _targets(mod, n)]
        if mod == "edgeretina._keras" or any(_is_deferred_lib(t) for t in targets):
            heavy.add(mod)
        direct[mod] = {i for t in targets if (i := _internal(t)) is not None and i != mod}
    changed = True
    while changed:
        changed = False
        for mod, deps in direct.items():
            if mod not in heavy and deps & heavy:
                heavy.add(mod)
                changed = True
    return heavy


HEAVY_MODULES = heavy_modules()


def _light_local_imports() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for mod, (_, tree) in EDGES.items():
        for node in _local_imports(tree):
            for t in _targets(mod, node):
                i = _internal(t)
                if i is None or i == mod or i in HEAVY_MODULES:
                    continue
                found.setdefault((mod, i), []).append(f"{SOURCES[mod][0].relative_to(ROOT)}:{node.lineno}")
    return found


def test_heavy_modules_are_the_tensorflow_ones():
    """The modules the check treats as heavy (so: importable inside functions) are the TensorFlow paths, and
    the command line's modules are not among them."""
    assert {"edgeretina._keras", "edgeretina.converters.tflite", "edgeretina.converters.prune"} <= HEAVY_MODULES
    assert not {m for m in HEAVY_MODULES if layer(m) == LAYERS.index("top") or m.startswith("edgeretina.runtime")}
    assert "edgeretina.compare" not in HEAVY_MODULES  # scipy.stats is loaded when a test runs (compare._stats)


def test_no_new_function_local_import_of_a_light_module():
    found = _light_local_imports()
    new = [f"{w}: {mod} imports {t} inside a function" for (mod, t), where in sorted(found.items())
           if (mod, t) not in LOCAL_IMPORTS and mod not in PENDING_LOCAL_MODULES for w in where]
    assert not new, ("function-local imports of light edgeretina modules (move them to module level; a cycle "
                     "or a heavy import is the only reason to defer, list it in LOCAL_IMPORTS):\n" + "\n".join(new))
    stale = sorted(f"{m} → {t}" for (m, t) in LOCAL_IMPORTS if (m, t) not in found)
    # a pending module not written yet (another issue's work in progress) is not stale
    stale += sorted(f"{m} (PENDING_LOCAL_MODULES)" for m in PENDING_LOCAL_MODULES & MODULES
                    if m not in {k[0] for k in found})
    assert not stale, "entries no longer needed (delete them):\n" + "\n".join(stale)


def test_local_import_check_sees_a_new_one():
    """The check reads function bodies (nested ones too) and resolves relative imports."""
    src = "import os\n\ndef f():\n    from .modelfile import open_model\n    def g():\n        import edgeretina.io\n"
    tree = ast.parse(src)
    got = [t for n in _local_imports(tree) for t in _targets("edgeretina.benchmarks.harness", n)]
    assert got == ["edgeretina.benchmarks.modelfile", "edgeretina.io"]


def test_every_package_is_in_pyproject():
    """A sub-package missing from pyproject's ``packages`` list is absent from a non-editable install."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    missing = []
    for name, folder in dirs.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            pkg = ".".join((name, *rel))
            if "suites" not in rel and pkg not in listed:
                missing.append(pkg)
    assert not missing, f"add to pyproject.toml [tool.setuptools] packages: {missing}"
