"""The CPython examples in the docs and in core docstrings are executed.

* ``>>>`` examples (doctests) in every docstring of ``pyapp.core``,
  ``pyapp.exceptions`` and ``pyapp._events`` run through :mod:`doctest`.
* ``Example::`` blocks without ``>>>`` in those docstrings are assert-style
  scripts; each one is executed as written (a wrong value fails its assert).
* Fenced ```` ```pycon ```` blocks in ``docs/**/*.md`` are doctests too.

Browser examples (```` ```python ```` blocks starting with
``# pyapp: run-in-browser``) run in ``tests/browser/test_doc_examples.py``.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

CORE_FILES = sorted([*ROOT.joinpath("pyapp", "core").rglob("*.py"),
                     ROOT / "pyapp" / "exceptions.py", ROOT / "pyapp" / "_events.py"])
FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                      re.S | re.M)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _script_examples(path: Path) -> list[tuple[str, str]]:
    """``Example::`` literal blocks (no ``>>>``) in any docstring of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        lines = doc.split("\n")
        i = 0
        while i < len(lines):
            head = lines[i].strip()
            if head.startswith("Example") and head.endswith("::"):
                j, body = i + 1, []
                while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                    body.append(lines[j])
                    j += 1
                code = textwrap.dedent("\n".join(body)).strip("\n")
                if code and ">>>" not in code:
                    found.append((f"{getattr(node, 'name', '<module>')}:{head}", code))
                i = j
            else:
                i += 1
    return found


SCRIPT_CASES = [(path, label, code) for path in CORE_FILES for label, code in _script_examples(path)]
DOCTEST_MODULES = [_module_name(p) for p in CORE_FILES if ">>>" in p.read_text(encoding="utf-8")]


def _pycon_blocks(text: str) -> list[str]:
    return [textwrap.dedent(m.group("body")) for m in FENCE_RE.finditer(text) if m.group("lang") == "pycon"]


PYCON_PAGES = [p for p in sorted(DOCS.rglob("*.md")) if _pycon_blocks(p.read_text(encoding="utf-8"))]


def test_there_are_examples_to_run() -> None:
    # Guards the collectors themselves: if a regex stops matching, this fails
    # instead of every parametrized test silently disappearing.
    assert len(SCRIPT_CASES) >= 10
    assert len(DOCTEST_MODULES) >= 5
    assert len(PYCON_PAGES) >= 5


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_doctests(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module) if t.examples]
    assert tests, f"{module_name} mentions >>> but doctest found no examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module_name} (output above)"
    assert result.attempted > 0


@pytest.mark.parametrize(("path", "label", "code"), SCRIPT_CASES,
                         ids=[f"{_module_name(p)}:{label.split(':')[0]}" for p, label, _ in SCRIPT_CASES])
def test_docstring_script_examples(path: Path, label: str, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"doc_example_{_module_name(path)}"}
    compiled = compile(code, f"{path.relative_to(ROOT)} [{label}]", "exec")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(compiled, namespace)
        except BaseException as exc:  # handed to the test thread below, not swallowed
            errors.append(exc)

    # A fresh thread, as a reader's script would be: examples call asyncio.run(), which
    # refuses to run where an event loop is already running (Playwright's sync API keeps
    # one on the main thread when browser tests share this pytest process).
    thread = threading.Thread(target=run, name=f"doc example {label}")
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"{label} did not finish within 60 s"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("page", PYCON_PAGES, ids=[str(p.relative_to(DOCS)) for p in PYCON_PAGES])
def test_docs_pycon_blocks(page: Path) -> None:
    blocks = _pycon_blocks(page.read_text(encoding="utf-8"))
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict[str, object] = {"__name__": "doc_page"}
    for number, block in enumerate(blocks, 1):
        # Blocks on one page share a namespace, like a reader's console session.
        test = parser.get_doctest(block, globs, f"{page.name}#{number}", str(page), 0)
        assert test.examples, f"{page.name}: pycon block {number} has no >>> example"
        runner.run(test, clear_globs=False)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in docs/{page.relative_to(DOCS)}"
