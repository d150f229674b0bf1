"""Run every benchmark module and write bench-results.json.

Each ``benchmarks/bench_*.py`` module defines ``run(ctx) -> dict[str, float]``;
figures are measured side by side in one run (the machines are shared and
noisy, so ratios matter more than absolute numbers). ``ctx`` gives the running
server and browsers.

    python3 build.py bench                 # all modules
    python3 build.py bench foundation mux  # only bench_foundation.py and bench_mux.py
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browsers import launch_chromium  # noqa: E402
from tests.conftest import PyPage, ServerProcess  # noqa: E402


class BenchContext:
    """What a benchmark module gets: the server, a Chromium, and page helpers."""

    def __init__(self, server: ServerProcess, playwright: Any, chromium: Any) -> None:
        self.server = server
        self.playwright = playwright
        self.chromium = chromium
        self.notes: list[str] = []

    def page(self, path: str = "/?noapp=1", **context_args: Any) -> PyPage:
        context_args.setdefault("permissions", ["camera", "microphone"])
        context = self.chromium.new_context(**context_args)
        context.set_default_timeout(600_000)
        return PyPage(context.new_page(), self.server.url).open(path)

    def note(self, text: str) -> None:
        print(f"    {text}", flush=True)
        self.notes.append(text)


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    wanted = set(argv)
    modules = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    if wanted:
        modules = [m for m in modules if m.removeprefix("bench_") in wanted]
    results: dict[str, float] = {}
    failed: list[str] = []
    server = ServerProcess()
    try:
        with sync_playwright() as p:
            chromium = launch_chromium(p)
            ctx = BenchContext(server, p, chromium)
            for name in modules:
                print(f"== {name}", flush=True)
                t0 = time.monotonic()
                try:
                    module = importlib.import_module(f"benchmarks.{name}")
                    figures = module.run(ctx)
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
                    continue
                for key, value in figures.items():
                    results[key] = float(value)
                    print(f"    {key:<28} {value:>12.3f}", flush=True)
                print(f"    ({time.monotonic() - t0:.0f} s)", flush=True)
            chromium.close()
    finally:
        server.stop()
    out = ROOT / "bench-results.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\n{'figure':<30}{'value':>14}")
    for key in sorted(results):
        print(f"{key:<30}{results[key]:>14.3f}")
    print(f"\nwrote {out.relative_to(ROOT)} ({platform.node()}, {time.strftime('%Y-%m-%d %H:%M')})")
    if failed:
        print(f"benchmark modules that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
