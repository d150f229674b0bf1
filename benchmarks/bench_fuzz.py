"""fuzz_cases: multiplexer frames (random and mutated) fed to fresh receivers in CPython.

Only typed errors are allowed; ``run_fuzz`` raises on the first untyped exception.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.fuzz_mux import run_fuzz


def run(ctx: Any) -> dict[str, float]:
    start = time.perf_counter()
    cases = run_fuzz(1_000_000, seed=int(time.time()) & 0xFFFF)
    elapsed = time.perf_counter() - start
    ctx.note(f"{cases:,} fuzz cases in {elapsed:.1f} s, no untyped exception")
    return {"fuzz_cases": cases, "fuzz_cases_per_s": cases / elapsed}
