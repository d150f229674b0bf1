"""Page side of tests/browser/test_end_of_task.py (called with ``pypage.call``)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from pyapp.browser._ffi import live_proxies
from pyapp.browser.end_of_task import EndOfTask


async def end_of_task_batches() -> dict[str, Any]:
    """Calls queued in one task run together, in order, once that task ends."""
    baseline = live_proxies()
    queue = EndOfTask("test queue")
    seen: list[str] = []

    def later() -> None:
        seen.append("queued from a callback")

    def boom() -> None:
        seen.append("boom")
        raise RuntimeError("injected callback failure")

    def after_boom() -> None:
        seen.append("after boom")
        queue.call(later)

    def numbered(i: int) -> None:
        seen.append(f"call {i}")

    for i in range(50):
        queue.call(functools.partial(numbered, i))
    queue.call(boom)
    queue.call(after_boom)
    ran_synchronously = list(seen)
    for _ in range(100):
        if "queued from a callback" in seen:
            break
        await asyncio.sleep(0.01)
    result = {
        "ran_synchronously": ran_synchronously,
        "order": seen[:50] == [f"call {i}" for i in range(50)],
        "tail": seen[50:],
        "runs": queue.runs,
        "calls": queue.calls,
        "proxies_while_open": live_proxies() - baseline,
    }
    queue.close()
    result["proxies_after_close"] = live_proxies() - baseline
    return result


async def shared_queue_is_page_lifetime() -> dict[str, Any]:
    """The page's shared queue keeps its one proxy for the page's life, outside leak counts."""
    from pyapp.browser.end_of_task import end_of_task

    baseline = live_proxies()
    ran: list[bool] = []
    end_of_task().call(lambda: ran.append(True))
    await asyncio.sleep(0.05)
    return {"ran": ran, "page_lifetime": end_of_task().page_lifetime,
            "counted": live_proxies() - baseline}
