"""pyapp as a desktop app: the page in a native window (pywebview), the server in-process.

Run it from the repository (after ``python3 build.py build``, which makes static/)::

    .venv/bin/pip install pywebview==6.2.1 'pywebview[qt]'    # or the GTK/Cocoa/WinForms backend
    .venv/bin/python examples/desktop_app.py --room lobby

It starts pyapp's own server (``python -m web.server``) on a free port of 127.0.0.1,
which is a secure context, so WebCrypto and the camera work without TLS, and opens
``http://127.0.0.1:<port>/?room=<room>`` in a window. Closing the window stops the server.

``--check`` does everything except open the window: it starts the server, fetches the
page, ``manifest.json`` and the wheel, verifies the wheel's SHA-256 and stops. The test
suite runs that (``tests/browser/test_doc_examples.py``); the window itself needs a
desktop session and a pywebview backend whose engine has WebRTC (see docs/guides/desktop.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server() -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m web.server`` on a free loopback port; return it and its base URL."""
    if not (ROOT / "static" / "manifest.json").exists():
        raise SystemExit("static/ is not built: run `python3 build.py build` first")
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.server", "--host", "127.0.0.1", "--port", "0", "--no-tls"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the pyapp server did not start: {line!r}")
    return proc, match.group(1)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # our own loopback server
        body: bytes = response.read()
        return body


def check(base: str, room: str) -> list[str]:
    """What the window would load, fetched and verified; returns what was checked."""
    page = _get(f"{base}/?room={room}").decode()
    if 'id="app"' not in page or "loader.js" not in page:
        raise SystemExit("the page does not look like pyapp's index.html")
    manifest = json.loads(_get(f"{base}/manifest.json"))
    wheel = _get(f"{base}/{manifest['wheel']}")
    if hashlib.sha256(wheel).hexdigest() != manifest["sha256"]:
        raise SystemExit("the served wheel does not match manifest.json")
    _get(f"{base}/pyodide/pyodide.mjs")
    return ["page", "manifest", f"wheel {len(wheel)} bytes", "pyodide.mjs"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--room", default="lobby", help="room to join (default: lobby)")
    parser.add_argument("--check", action="store_true", help="serve and verify, open no window")
    parser.add_argument("--debug", action="store_true", help="pywebview debug mode (dev tools)")
    args = parser.parse_args(argv)
    proc, base = start_server()
    try:
        if args.check:
            print("ok:", ", ".join(check(base, args.room)), f"({base})")
            return 0
        try:
            import webview  # type: ignore[import-not-found]
        except ImportError:
            raise SystemExit("pywebview is not installed: pip install pywebview==6.2.1") from None
        webview.create_window("pyapp", f"{base}/?room={args.room}", width=960, height=720,
                              min_size=(360, 560))
        webview.start(debug=args.debug)   # returns when the last window closes
        return 0
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
