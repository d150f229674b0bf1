"""Run every benchmark module and write bench-results.json.

Each ``benchmarks/bench_*.py`` module defines ``run(ctx) -> dict[str, float]``;
figures are measured side by side in one run (the machines are shared and
noisy, so ratios matter more than absolute numbers). ``ctx`` gives the running
server and browsers.

    python3 build.py bench                 # all modules
    python3 build.py bench foundation mux  # only bench_foundation.py and bench_mux.py
    python3 build.py bench --record        # also update docs/measured/bench-results.json

``--record`` copies each module's figures, with the date and the machine's facts
(cores, CPU model, Chromium version), into the committed snapshot that the
performance guides render their tables from (``docs/hooks.py``). Modules not
run keep their previous entry.
"""

from __future__ import annotations

import importlib
import json
import os
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


SNAPSHOT = ROOT / "docs" / "measured" / "bench-results.json"


def machine_facts(chromium_version: str) -> dict[str, Any]:
    """What the performance guides print next to a figure: where it was measured."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pyodide = "unknown"
    try:
        lock = json.loads((ROOT / "package-lock.json").read_text())
        pyodide = lock["packages"]["node_modules/pyodide"]["version"]
    except (OSError, KeyError, ValueError):
        pass
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": cpu,
        "chromium": chromium_version,
        "pyodide": pyodide,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
    }


def record(per_module: dict[str, dict[str, float]], machine: dict[str, Any]) -> Path:
    """Merge this run's figures into docs/measured/bench-results.json, one entry per module."""
    snapshot: dict[str, Any] = {"runs": {}}
    if SNAPSHOT.exists():
        snapshot = json.loads(SNAPSHOT.read_text())
    recorded = time.strftime("%Y-%m-%d %H:%M %Z")
    for module, figures in per_module.items():
        snapshot["runs"][module] = {"recorded": recorded, "machine": machine,
                                    "figures": {k: round(v, 4) for k, v in sorted(figures.items())}}
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    return SNAPSHOT


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    record_snapshot = "--record" in argv
    wanted = {a for a in argv if a != "--record"}
    modules = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    if wanted:
        modules = [m for m in modules if m.removeprefix("bench_") in wanted]
    results: dict[str, float] = {}
    per_module: dict[str, dict[str, float]] = {}
    chromium_version = "unknown"
    failed: list[str] = []
    server = ServerProcess()
    try:
        with sync_playwright() as p:
            chromium = launch_chromium(p)
            ctx = BenchContext(server, p, chromium)
            chromium_version = str(chromium.version)
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
                per_module[name] = {k: float(v) for k, v in figures.items()}
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
    if record_snapshot and per_module:
        snap = record(per_module, machine_facts(chromium_version))
        print(f"recorded {', '.join(sorted(per_module))} in {snap.relative_to(ROOT)}")
    if failed:
        print(f"benchmark modules that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
