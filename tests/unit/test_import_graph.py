"""The modules of pyapp/browser import each other without a cycle.

Every import counts, including lazy ones inside functions; only imports under
``if TYPE_CHECKING:`` are left out (they never run). The wrapper modules
(one per browser interface) import no feature module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BROWSER = ROOT / "pyapp" / "browser"

#: Thin wrappers over one browser interface each: they know nothing of features.
WRAPPERS = {"pyapp.browser.peer", "pyapp.browser.datachannel", "pyapp.browser._ffi",
            "pyapp.browser.battery", "pyapp.browser.device"}
#: pyapp's features on top of the wrappers.
FEATURES = {"pyapp.browser.mux", "pyapp.browser.media", "pyapp.browser.monitor",
            "pyapp.browser.power", "pyapp.browser.stats", "pyapp.browser.auth",
            "pyapp.browser.secure", "pyapp.browser.pool", "pyapp.browser.reconnect",
            "pyapp.browser.connection"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Every module imported anywhere in ``tree`` except under ``if TYPE_CHECKING``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # `from pyapp.browser import secure` imports the submodule.
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in sorted(BROWSER.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")), package)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_browser_imports_form_no_cycle() -> None:
    # The package __init__ re-exports everything; it is the top of the graph, not part of it.
    graph = {k: v - {"pyapp.browser"} for k, v in _graph().items() if k != "pyapp.browser"}
    assert _cycles(graph) == []


def test_wrappers_import_no_feature() -> None:
    graph = _graph()
    reach = {w: sorted(graph[w] & FEATURES) for w in WRAPPERS if w in graph}
    assert reach == {w: [] for w in reach}


def test_the_checker_sees_lazy_imports_and_cycles() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pyapp.browser import monitor\n"
        "def f():\n    from pyapp.browser.mux import MuxSession\n    from . import stats\n")
    assert _imports(tree, "pyapp.browser") >= {"pyapp.browser.mux", "pyapp.browser.stats"}
    assert "pyapp.browser.monitor" not in _imports(tree, "pyapp.browser")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
