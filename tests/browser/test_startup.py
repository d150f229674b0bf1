"""Page start-up: the memory-snapshot fast path, its fallbacks, and the loading bar.

The build makes a snapshot of a Pyodide heap with pyapp imported (``build.py``,
``manifest.json`` ``snapshot``); ``web/loader.js`` restores it when everything it
was made from matches, and otherwise starts Python normally with a console note.
Each test opens a fresh context (no HTTP cache) and, where it needs a broken
snapshot, rewrites the served bytes or manifest with Playwright routing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import STATIC, PyPage, ServerProcess

PAGE = "tests.pyodide.startup_cases"
"""The page side: a round trip over a real RTCPeerConnection pair, the runtime's state."""


def _round_trip(page: PyPage) -> str:
    """The FFI, asyncio on the browser's event loop, a real RTCPeerConnection pair, a message."""
    echoed: str = page.call(f"{PAGE}:round_trip", text="after restore", timeout=30)
    return echoed


NOTE = "the memory snapshot was not used"


def _manifest() -> dict[str, Any]:
    manifest = json.loads((STATIC / "manifest.json").read_text())
    if not manifest.get("snapshot"):
        pytest.fail("static/manifest.json has no memory snapshot: `python3 build.py build` "
                    "should make one (node is installed with npm); see its log")
    return manifest


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context(permissions=["camera", "microphone"])
    ctx.set_default_timeout(60_000)
    yield ctx
    ctx.close()


def _open(context: Any, server: ServerProcess, path: str = "/?noapp=1") -> PyPage:
    return PyPage(context.new_page(), server.url).open(path)


def _startup(page: PyPage) -> dict[str, Any]:
    result: dict[str, Any] = page.page.evaluate("() => pyappStartup")
    return result


def test_snapshot_is_used_and_the_runtime_works(context: Any, server: ServerProcess) -> None:
    manifest = _manifest()
    page = _open(context, server)
    startup = _startup(page)
    assert startup["snapshot"] == "used", startup
    assert startup["notes"] == []
    assert not [line for line in page.console if NOTE in line]
    assert any(manifest["snapshot"]["file"] in url for url in page.requests)
    state = page.call(f"{PAGE}:runtime_state")
    assert state["app_imported"] is True, state       # restored with the app in it
    assert _round_trip(page) == "after restore"
    # The wheel's files are installed too (source lines in tracebacks, metadata).
    assert state["dist_version"] == state["version"], state
    assert not page.foreign_requests()


def test_snapshot_in_firefox(firefox: Any, server: ServerProcess) -> None:
    _manifest()
    ctx = firefox.new_context()
    try:
        page = PyPage(ctx.new_page(), server.url).open("/?noapp=1")
        assert _startup(page)["snapshot"] == "used"
        assert _round_trip(page) == "after restore"
    finally:
        ctx.close()


def _flip_middle(body: bytes) -> bytes:
    data = bytearray(body)
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    return bytes(data)


def _assert_fell_back(page: PyPage, reason: str) -> None:
    startup = _startup(page)
    assert startup["snapshot"].startswith("fallback: "), startup
    assert reason in startup["snapshot"], startup
    notes = [line for line in page.console if NOTE in line]
    assert notes and notes[0].startswith("warning: "), page.console
    assert reason in notes[0]
    # A normal start: ready, pyapp imported, the app bound, no error banner.
    assert _round_trip(page) == "after restore"
    assert page.page.evaluate("() => document.getElementById('error').hidden") is True
    assert page.page.evaluate("() => document.getElementById('app').hidden") is False


def test_corrupt_snapshot_falls_back(context: Any, server: ServerProcess) -> None:
    manifest = _manifest()
    original = (STATIC / manifest["snapshot"]["file"]).read_bytes()
    context.route(f"**/{manifest['snapshot']['file']}",
                  lambda route: route.fulfill(body=_flip_middle(original),
                                              content_type="application/octet-stream"))
    _assert_fell_back(_open(context, server), "corrupt")


def test_truncated_snapshot_falls_back(context: Any, server: ServerProcess) -> None:
    manifest = _manifest()
    original = (STATIC / manifest["snapshot"]["file"]).read_bytes()
    context.route(f"**/{manifest['snapshot']['file']}",
                  lambda route: route.fulfill(body=original[: len(original) // 3],
                                              content_type="application/octet-stream"))
    _assert_fell_back(_open(context, server), "the manifest announces")


def _patched_manifest(context: Any, patch: Any) -> None:
    def handle(route: Any) -> None:
        manifest = json.loads(route.fetch().text())
        patch(manifest)
        route.fulfill(body=json.dumps(manifest), content_type="application/json")
    context.route("**/manifest.json", handle)


def test_snapshot_of_another_wheel_falls_back(context: Any, server: ServerProcess) -> None:
    _manifest()
    _patched_manifest(context, lambda m: m["snapshot"].update(wheel_sha256="0" * 64))
    _assert_fell_back(_open(context, server), "another pyapp wheel")


def test_snapshot_of_another_runtime_falls_back(context: Any, server: ServerProcess) -> None:
    _manifest()
    _patched_manifest(context, lambda m: m["snapshot"].update(runtime_sha256="0" * 64))
    _assert_fell_back(_open(context, server), "another Pyodide runtime")


def test_restore_error_falls_back(context: Any, server: ServerProcess) -> None:
    """A snapshot that passes our checks but that Pyodide itself refuses (its build id)."""
    manifest = _manifest()
    original = bytearray((STATIC / manifest["snapshot"]["file"]).read_bytes())
    fake_id = "ab" * 32
    for i in range(8):  # header words 4..11 hold the BUILD_ID, 32 bits each, little-endian
        original[16 + 4 * i: 20 + 4 * i] = int(fake_id[8 * i: 8 * i + 8], 16).to_bytes(4, "little")
    forged = bytes(original)
    digest = hashlib.sha256(forged).hexdigest()

    def patch(m: dict[str, Any]) -> None:
        m["snapshot"].update(build_id=fake_id, sha256=digest)
        m["runtime"]["build_id"] = fake_id

    _patched_manifest(context, patch)
    context.route(f"**/{manifest['snapshot']['file']}",
                  lambda route: route.fulfill(body=forged, content_type="application/octet-stream"))
    _assert_fell_back(_open(context, server), "build id mismatch")


def test_nosnapshot_parameter_starts_normally(context: Any, server: ServerProcess) -> None:
    manifest = _manifest()
    page = _open(context, server, "/?noapp=1&nosnapshot=1")
    assert _startup(page)["snapshot"] == "disabled (?nosnapshot)"
    assert not any(manifest["snapshot"]["file"] in url for url in page.requests)
    # The loader itself imported and started the app (nothing here imports it first).
    assert page.call(f"{PAGE}:runtime_state")["app_imported"] is True


# Records every value the <progress> element shows, from the first paint on.
PROGRESS_OBSERVER = """
globalThis.barValues = [];
globalThis.barTexts = [];
new MutationObserver(() => {
  const bar = document.getElementById("loading-progress");
  const text = document.getElementById("loading-text");
  if (bar && barValues[barValues.length - 1] !== bar.value) barValues.push(bar.value);
  if (text && barTexts[barTexts.length - 1] !== text.textContent) barTexts.push(text.textContent);
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"""


@pytest.mark.parametrize("path", ["/?noapp=1", "/?noapp=1&nosnapshot=1"])
def test_loading_bar_shows_download_bytes_then_steps(context: Any, server: ServerProcess, path: str) -> None:
    manifest = _manifest()
    context.add_init_script(PROGRESS_OBSERVER)
    page = _open(context, server, path)
    values = page.page.evaluate("() => barValues")  # what an observer of the DOM saw
    texts = page.page.evaluate("() => barTexts")
    # Every value the loader set on the element, with its time (a DOM observer may see
    # several updates made in one burst of microtasks as one).
    logged = [v for _, v in _startup(page)["progress"]]
    assert values == sorted(values) and logged == sorted(logged), (values, logged)  # never backwards
    assert values[-1] == 100 and logged[-1] == 100
    assert len({v for v in values if v < 100}) >= 3, values  # the page really moves before ready
    # Real progress, not a jump from 5 to 100: many values while the bytes arrive
    # (the first 80 %), then the steps.
    assert len({v for v in logged if 0 < v <= 80}) >= 5, logged
    assert any(80 < v < 100 for v in values), values
    sizes = manifest["runtime"]["sizes"]
    total_mb = (sizes["pyodide.asm.wasm"] + sizes["python_stdlib.zip"] + sizes["pyodide-lock.json"]
                + manifest["wheel_size"] + (manifest["snapshot"]["size"] if "nosnapshot" not in path else 0)) / 1e6
    assert any(f"of {total_mb:.1f} MB" in t for t in texts), texts
    assert "Installing pyapp…" in texts and "Starting pyapp…" in texts and texts[-1] == "Ready"
    assert set(values) <= set(logged) | {0}, (values, logged)  # the DOM shows what the loader logged
