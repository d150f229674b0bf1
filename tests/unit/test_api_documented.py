"""Every public name is in the API reference, and documented.

Public names: everything in a pyapp module's ``__all__``, plus every top-level
class and function without a leading underscore in ``pyapp.browser`` modules.
The API pages (``docs/api/*.md``) render modules with mkdocstrings' ``:::``
directive and ``filters: public`` (i.e. ``__all__``), so a name is in the
reference when its module has a directive and the name is exported, or when
the name has a directive of its own. ``docs/hooks.py`` checks the rendered HTML
the same way during ``mkdocs build --strict``; this test needs no build.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api"
DIRECTIVE_RE = re.compile(r"^:::\s*([\w.]+)\s*$", re.M)


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyapp_docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source_public_names() -> dict[str, tuple[Path, list[str], set[str]]]:
    """module -> (file, public names, names in __all__), read independently of docs/hooks.py."""
    out = {}
    for path in sorted((ROOT / "pyapp").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                    for t in node.targets):
                assert isinstance(node.value, (ast.List, ast.Tuple)), f"{module}: __all__ must be a literal"
                exported = [ast.literal_eval(e) for e in node.value.elts]
        names = list(exported)
        if module.startswith("pyapp.browser."):
            names += [n.name for n in tree.body
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and not n.name.startswith("_") and n.name not in names]
        if names:
            out[module] = (path, names, set(exported))
    return out


PUBLIC = _source_public_names()


def _directives() -> set[str]:
    found: set[str] = set()
    for page in API.glob("*.md"):
        found.update(DIRECTIVE_RE.findall(page.read_text(encoding="utf-8")))
    return found


def test_public_names_were_found() -> None:
    total = sum(len(names) for _, names, _ in PUBLIC.values())
    assert total > 200, total
    assert "pyapp.core.mux" in PUBLIC and "Multiplexer" in PUBLIC["pyapp.core.mux"][1]
    assert "Peer" in PUBLIC["pyapp.browser.app"][1]   # public class not in __all__


def test_every_public_name_is_in_the_reference() -> None:
    directives = _directives()
    missing = []
    for module, (_, names, exported) in PUBLIC.items():
        for name in names:
            rendered = (module in directives and name in exported) or f"{module}.{name}" in directives
            if not rendered:
                missing.append(f"{module}.{name}")
    assert not missing, ("not in the API reference (add `::: module` or `::: module.name` "
                         f"to a docs/api/*.md page): {missing}")


def test_every_directive_names_something_that_exists() -> None:
    modules = set(PUBLIC) | {"pyapp", "pyapp.core", "pyapp._events"}
    known = modules | {f"{m}.{n}" for m, (_, names, _) in PUBLIC.items() for n in names}
    known.add("pyapp._events.Emitter")
    stale = sorted(d for d in _directives() if d not in known)
    assert not stale, f"docs/api pages render names that no longer exist: {stale}"


def test_public_classes_and_functions_have_docstrings() -> None:
    undocumented = []
    for module, (path, names, _) in PUBLIC.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defs = {n.name: n for n in tree.body
                if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
        for name in names:
            node = defs.get(name)
            if node is not None and not (ast.get_docstring(node) or "").strip():
                undocumented.append(f"{module}.{name}")
    assert not undocumented, f"public classes/functions without a docstring: {undocumented}"


def test_every_module_docstring_has_an_example() -> None:
    without = []
    for module, (path, _, _) in PUBLIC.items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if "Example" not in doc and ">>>" not in doc:
            without.append(module)
    assert not without, f"module docstrings without an example: {without}"


def test_build_hook_agrees_with_this_test() -> None:
    # docs/hooks.py repeats the check on the rendered HTML; both must mean the same names.
    hook_names = _hooks().public_names(ROOT)
    assert {m: sorted(n) for m, n in hook_names.items()} == {m: sorted(n) for m, (_, n, _) in PUBLIC.items()}
