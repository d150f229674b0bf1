"""The sans-I/O boundary: ``pyapp.core`` never touches the browser or the clock."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import pyapp.core

pytestmark = pytest.mark.unit

CORE_DIR = Path(pyapp.core.__file__).parent
PACKAGE_DIR = CORE_DIR.parent

# Modules the core may not import, and calls that read a clock.
FORBIDDEN_IMPORTS = {"js", "pyodide", "pyodide_js", "asyncio", "time", "socket", "threading"}
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"),
               ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def _core_files() -> list[Path]:
    files = sorted(CORE_DIR.rglob("*.py"))
    assert files, "pyapp/core has no modules"
    return files


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.name)
def test_core_module_has_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = _imported_roots(tree) & FORBIDDEN_IMPORTS
    assert not bad, f"{path.name} imports {sorted(bad)}; pyapp.core must stay sans-I/O"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.name)
def test_core_module_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in CLOCK_CALLS, (
                f"{path.name}:{node.lineno} reads the clock ({node.value.id}.{node.attr}); "
                "pass `now` in instead"
            )


def test_core_imports_under_cpython() -> None:
    for info in pkgutil.walk_packages(pyapp.core.__path__, "pyapp.core."):
        importlib.import_module(info.name)


def test_only_browser_package_touches_ffi() -> None:
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "browser" in path.relative_to(PACKAGE_DIR).parts:
            continue
        if _imported_roots(ast.parse(path.read_text())) & {"js", "pyodide", "pyodide_js"}:
            offenders.append(str(path.relative_to(PACKAGE_DIR)))
    assert not offenders, f"only pyapp/browser may import js/pyodide: {offenders}"


def test_boundary_check_catches_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    tree = ast.parse("import js\nfrom pyodide.ffi import create_proxy\nimport time\nt = time.monotonic()")
    assert _imported_roots(tree) & FORBIDDEN_IMPORTS == {"js", "pyodide", "time"}
