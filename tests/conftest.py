"""Shared fixtures: the real server, the local browsers, and pages with Python ready.

Browser tests talk to the page's Pyodide in two ways:

* :meth:`PyPage.call` (preferred): ``pypage.call("tests.pyodide.mod:func", x=1)``
  copies the real modules of ``tests/pyodide/`` into Pyodide's file system
  (only the ones that changed), imports ``mod``, calls (and awaits)
  ``func(**kwargs)`` and returns its result through JSON. That code is plain
  Python that ruff and mypy check.
* :meth:`PyPage.py` runs Python source with top-level ``await`` and returns its
  last expression (JSON-able values; PyProxies are converted with ``toJs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings

from tests.browsers import chromium_path, firefox_path, launch_chromium, launch_firefox

# No per-example deadline (a shared 2-core box is noisy). In CI, derandomized so
# a run is reproducible; locally, random exploration keeps finding new cases.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 500
"""Lines of the server's output that :meth:`ServerProcess.log_tail` keeps."""
STATIC = ROOT / "static"

PYODIDE_TESTS = ROOT / "tests" / "pyodide"
PAGE_TESTS_ROOT = "/home/pyodide/pyapp-tests"
"""Where :meth:`PyPage.call` puts ``tests/__init__.py`` and ``tests/pyodide/**`` in the page."""

SYNC_FILES = """(files) => {
  // files: {path: [sha256, source, module]}; writes the new or changed ones and
  // returns the modules that were there before (to re-import). The digests live
  // in the document, so a reload or navigation starts from a clean slate.
  const seen = (globalThis.__pyappTestFiles ??= {});
  const changed = [];
  for (const [path, [digest, source, module]] of Object.entries(files)) {
    if (seen[path] === digest) continue;
    if (path in seen) changed.push(module);
    pyodide.FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
    pyodide.FS.writeFile(path, source);
    seen[path] = digest;
  }
  return changed;
}"""

CALL_PY = """
import importlib as _importlib, inspect as _inspect, json as _json, sys as _sys
if {root!r} not in _sys.path:
    _sys.path.insert(0, {root!r})
_importlib.invalidate_caches()
for _name in {reload!r}:
    if _name in _sys.modules:
        _importlib.reload(_sys.modules[_name])
_module = _importlib.import_module({module!r})
_result = getattr(_module, {func!r})(**_json.loads({kwargs!r}))
if _inspect.isawaitable(_result):
    _result = await _result
_json.dumps(_result)
"""

RUN_PY = """async (code) => {
  const result = await pyodide.runPythonAsync(code);
  if (result && typeof result.toJs === "function") {
    const value = result.toJs({ dict_converter: Object.fromEntries });
    result.destroy();
    return value;
  }
  return result;
}"""


def ensure_static_fresh() -> None:
    """Rebuild static/ when pyapp/ or web/ changed since the last build (handy with plain pytest)."""
    manifest = STATIC / "manifest.json"
    built = manifest.stat().st_mtime if manifest.exists() else 0.0
    sources = [*ROOT.joinpath("pyapp").rglob("*.py"), *ROOT.joinpath("web").glob("*.*")]
    if any(p.stat().st_mtime > built for p in sources):
        subprocess.run([sys.executable, str(ROOT / "build.py"), "build"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)


class ServerProcess:
    """The real dev server (``python -m web.server``) on a free port."""

    def __init__(self, *extra: str) -> None:
        ensure_static_fresh()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "web.server", "--host", "127.0.0.1", "--port", "0", "--no-tls", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(https?://[\d.]+:\d+)/", line)
        if not match:
            self.proc.kill()
            rest = self.proc.stdout.read()
            raise RuntimeError(f"server did not start: {line!r}{rest[-2000:]!r}")
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        # Keep draining the server's output (a full pipe would block a server that logs
        # a lot, e.g. refusals); the last lines stay readable for failure messages.
        self._log: deque[str] = deque([line.rstrip("\n")], maxlen=LOG_TAIL_LINES)
        self._reader = threading.Thread(target=self._drain, name=f"server-log-{self.port}",
                                        daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.append(line.rstrip("\n"))

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines the server printed (for failure messages)."""
        return "\n".join(list(self._log)[-lines:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(2)


class PyPage:
    """A Playwright page whose Pyodide (with pyapp) is ready."""

    def __init__(self, page: Any, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.requests: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, path: str = "/?noapp=1", timeout: float = 60_000) -> PyPage:
        self.page.goto(self.origin + path)
        self.page.evaluate("() => pyappReady.then(() => true)")
        return self

    def py(self, code: str, timeout: float | None = None) -> Any:
        """Run Python in the page; returns the value of the last expression."""
        if timeout is not None:
            self.page.set_default_timeout(timeout * 1000)
        try:
            return self.page.evaluate(RUN_PY, textwrap.dedent(code))
        finally:
            if timeout is not None:
                self.page.set_default_timeout(30_000)

    def pyjson(self, code: str, timeout: float | None = None) -> Any:
        """Run Python whose last expression is JSON text; returns it parsed."""
        return json.loads(self.py(code, timeout))

    def call(self, target: str, /, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``"tests.pyodide.<module>:<function>"`` in the page with JSON-able ``kwargs``.

        The function may be async; its (JSON-able) result is returned. Modules
        are synced into the page on every call (a changed one is re-imported),
        so a test module may keep its page for many calls.
        """
        module, _, func = target.partition(":")
        if not module.startswith("tests.pyodide") or not func:
            raise ValueError(f"target must be 'tests.pyodide.<module>:<function>', got {target!r}")
        changed = self._sync_test_modules()
        code = CALL_PY.format(root=PAGE_TESTS_ROOT, reload=changed, module=module, func=func,
                              kwargs=json.dumps(kwargs))
        return json.loads(self.py(code, timeout))

    def _sync_test_modules(self) -> list[str]:
        """Write new or changed ``tests/pyodide`` modules into the page; the changed modules."""
        files: dict[str, list[str]] = {}
        for path in [ROOT / "tests" / "__init__.py", *sorted(PYODIDE_TESTS.rglob("*.py"))]:
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            files[f"{PAGE_TESTS_ROOT}/{path.relative_to(ROOT).as_posix()}"] = [
                hashlib.sha256(text.encode()).hexdigest(), text, ".".join(parts)]
        changed: list[str] = self.page.evaluate(SYNC_FILES, files)
        return changed

    def foreign_requests(self) -> list[str]:
        origin = urlsplit(self.origin)
        return [u for u in self.requests
                if not u.startswith(("data:", "blob:"))
                and urlsplit(u).netloc != origin.netloc]


def missing_prerequisite(reason: str) -> None:
    """A machine prerequisite is missing: a failure in a full run, a skip otherwise.

    ``python3 build.py test`` (and CI) sets PYAPP_FULL_SUITE after installing
    everything it can, so a test that cannot run there fails loudly; a plain
    ``pytest`` run on a developer's machine without root just skips it.
    """
    if os.environ.get("CI") or os.environ.get("PYAPP_FULL_SUITE"):
        pytest.fail(f"cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if chromium_path() is None:
        pytest.fail("no Chromium found: run `python3 build.py test` (it installs one) or set $CHROMIUM")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def chromium(playwright_instance: Any) -> Iterator[Any]:
    browser = launch_chromium(playwright_instance)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def firefox(playwright_instance: Any) -> Iterator[Any]:
    if firefox_path() is None:
        missing_prerequisite("no Firefox ESR (python3 build.py test installs it as root)")
    browser = launch_firefox(playwright_instance)
    yield browser
    browser.close()


def new_pypage(browser: Any, server: ServerProcess, path: str = "/?noapp=1",
               **context_args: Any) -> PyPage:
    if browser.browser_type.name == "chromium":
        context_args.setdefault("permissions", ["camera", "microphone"])
    context = browser.new_context(**context_args)
    context.set_default_timeout(30_000)
    return PyPage(context.new_page(), server.url).open(path)


@pytest.fixture(scope="module")
def pypage(chromium: Any, server: ServerProcess) -> Iterator[PyPage]:
    """One ready desktop page per test module (Pyodide takes seconds to start)."""
    page = new_pypage(chromium, server)
    yield page
    foreign = page.foreign_requests()
    page.page.context.close()
    assert not foreign, f"the page made requests to other origins: {foreign}"


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


_ORDER = {"unit": 0, "load": 0, "browser": 1, "e2e": 2}
# A test file without one of those markers is ranked by its folder, so an unmarked
# browser test can never start Playwright before the CPython tests have run.
_ORDER_BY_FOLDER = {"unit": 0, "load": 0, "browser": 1, "e2e": 2, "interop": 2}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Run unit tests first, then browser, then e2e.

    Sync Playwright keeps an asyncio loop marked as running on the main thread
    once its session fixture has started, so CPython tests that call
    ``asyncio.run`` must run before any browser test does.
    """

    def rank(item: Any) -> int:
        for name, order in _ORDER.items():
            if item.get_closest_marker(name) is not None:
                return order
        return _ORDER_BY_FOLDER.get(Path(str(item.fspath)).parent.name, 0)

    items.sort(key=rank)  # stable: the order within each group is unchanged
