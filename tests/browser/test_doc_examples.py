"""Every browser example in the docs runs in a real page.

A fenced ```` ```python ```` block whose first line is ``# pyapp: run-in-browser``
is extracted from ``docs/**/*.md`` and run with :meth:`PyPage.py` (top-level
``await`` allowed) in one shared page; a ```` ```js ```` block whose first line is
``// pyapp: run-in-browser`` runs as the body of an async JS function there
(``globalThis.pyodide`` is the page's runtime). The examples assert their own results;
each must also leave no live FFI proxy behind (``pyapp.browser._ffi.live_proxies``
back to where it was), so an example that forgets ``close()`` fails here.
The marker is stripped from the rendered site by ``docs/hooks.py``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = "# pyapp: run-in-browser"
JS_MARKER = "// pyapp: run-in-browser"
FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                      re.S | re.M)


def browser_examples() -> list[tuple[str, str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in FENCE_RE.finditer(text):
            body = textwrap.dedent(match.group("body"))
            lang = match.group("lang")
            if (lang == "python" and body.lstrip().startswith(MARKER)) or (
                    lang in ("js", "javascript") and body.lstrip().startswith(JS_MARKER)):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.relative_to(DOCS)}:{line}", "js" if lang != "python" else "python", body))
    return found


EXAMPLES = browser_examples()


def test_examples_were_found() -> None:
    # If the marker or the fence regex changes, this fails instead of the
    # parametrized tests below quietly vanishing.
    assert len(EXAMPLES) >= 10, [where for where, _, _ in EXAMPLES]
    assert any(lang == "js" for _, lang, _ in EXAMPLES)


def _live(pypage: Any) -> int:
    live: int = pypage.call("tests.pyodide.doc_cases:live_proxies")
    return live


@pytest.mark.parametrize(("where", "lang", "code"), EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_browser_example(pypage: Any, where: str, lang: str, code: str) -> None:
    before = _live(pypage)
    if lang == "python":
        # Examples share the page's globals, like cells typed into one console.
        pypage.py(code, timeout=60)
    else:
        pypage.page.evaluate(f"async () => {{\n{code}\n}}")
    wait_until(lambda: _live(pypage) <= before, timeout=5.0)


def test_desktop_wrapper_serves_a_loadable_page(server: Any) -> None:
    # examples/desktop_app.py without its window (no desktop session here): it starts its
    # own server, fetches the page, manifest, wheel (checksum verified) and runtime, stops.
    # (`server` only makes sure static/ is fresh.)
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "examples" / "desktop_app.py"), "--check", "--room", "docs"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: page, manifest, wheel "), done.stdout
