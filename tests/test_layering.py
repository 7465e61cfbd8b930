"""The package's layers, read from its source with ``ast`` (nothing is imported).

- ``errors.py`` is the bottom layer: it imports nothing of ``cenas_jax``.
- ``report/`` and ``view/`` read runs; they import nothing of ``search/`` (not even inside a function),
  and nothing they import at module level does either.
- ``data/catalog.py`` and ``data/ondisk.py`` do not import each other both ways; no modules import
  each other at module level anywhere in the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cenas_jax"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "corpus" not in p.relative_to(PKG).parts}


MODULES = _modules()


def _resolve(name: str, imported: str | None) -> str:
    """``from name import imported``: the submodule when ``imported`` is one, else ``name``."""
    if imported and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported cenas_jax module, at module level?) for every import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.extend((_resolve(base, a.name), top) for a in child.names)
            visit(child, inner)

    visit(tree, True)
    return [(m, top) for m, top in out if m == "cenas_jax" or m.startswith("cenas_jax.")]


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {m: {t for t, top in _imports(m) if (top or not module_level_only) and t in MODULES and t != m}
            for m in MODULES}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_parser_sees_known_imports():
    # A guard on the test itself: imports it must find, at module level and inside functions.
    assert ("cenas_jax.theory", True) in _imports("cenas_jax.report.analysis")
    assert ("cenas_jax.data.spec", True) in _imports("cenas_jax.data.ondisk")
    assert any(t == "cenas_jax.search.loop" and not top for t, top in _imports("cenas_jax.search.preflight"))
    assert "cenas_jax.search.novelty" in MODULES and "cenas_jax.errors" in MODULES


def test_errors_is_the_bottom_layer():
    assert _imports("cenas_jax.errors") == []


@pytest.mark.parametrize("layer", ["cenas_jax.report", "cenas_jax.view"])
def test_report_and_view_import_nothing_of_search(layer):
    direct = {(m, t) for m in MODULES if _under(m, layer) for t, _ in _imports(m) if _under(t, "cenas_jax.search")}
    assert not direct, f"{layer} imports search/: {sorted(direct)}"
    # ... nor does anything they load when imported.
    graph = _graph(module_level_only=True)
    seen: set[str] = set()
    todo = [m for m in MODULES if _under(m, layer)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    reached = sorted(m for m in seen if _under(m, "cenas_jax.search"))
    assert not reached, f"importing {layer} loads {reached}"


def test_catalog_and_ondisk_do_not_import_each_other():
    full = _graph(module_level_only=False)
    cat, ond = "cenas_jax.data.catalog", "cenas_jax.data.ondisk"
    assert not (ond in full[cat] and cat in full[ond])
    assert cat not in full[ond]  # the formats build on data/spec.py, the catalogue on them


def test_no_module_level_import_cycles():
    graph = _graph(module_level_only=True)
    # Tarjan's strongly connected components; a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, f"modules importing each other at module level: {cycles}"
