"""The browser layer's one timer driver, run on CPython's asyncio loop.

pyapp/browser/timer.py imports only asyncio, so it is loaded here straight from
its file (importing the pyapp.browser package would need Pyodide's ``js``).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pyapp.core.limiter import ConnectionLimiter, Granted, TimedOut

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _timer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyapp_browser_timer",
                                                  ROOT / "pyapp" / "browser" / "timer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drives_a_core_deadline_once_and_disarms() -> None:
    timer = _timer_module()

    async def scenario() -> dict[str, object]:
        core = ConnectionLimiter(1)
        seen: list[object] = []
        fired: list[float] = []

        def fire(now: float) -> None:
            fired.append(now)
            core.handle_timer(now)
            seen.extend(iter(core.next_event, None))

        driver = timer.TimerDriver(core.get_timer, fire)
        start = timer.now()
        core.request("a", "alice", start)
        core.request("b", "bob", start, deadline=start + 0.05)
        seen.extend(iter(core.next_event, None))
        driver.rearm()
        armed = (driver.armed, driver.when == start + 0.05)
        driver.rearm()  # same deadline: the handle is kept, not re-created
        await asyncio.sleep(0.15)
        return {"armed": armed, "fired": len(fired), "late_ok": fired[0] >= start + 0.05,
                "seen": seen, "after": (driver.armed, driver.when)}

    out = asyncio.run(scenario())
    assert out["armed"] == (True, True)
    assert out["fired"] == 1 and out["late_ok"] is True
    assert out["seen"][0] == Granted("a", "alice")
    assert isinstance(out["seen"][1], TimedOut) and out["seen"][1].request_id == "b"
    assert out["after"] == (False, None)  # the core has no deadline left: nothing armed


def test_cancel_and_a_due_deadline_fires_at_once() -> None:
    timer = _timer_module()

    async def scenario() -> tuple[int, int]:
        deadline: list[float | None] = [None]
        fired: list[float] = []
        driver = timer.TimerDriver(lambda: deadline[0], fired.append)
        deadline[0] = timer.now() + 0.02
        driver.rearm()
        driver.cancel()
        await asyncio.sleep(0.05)
        cancelled = len(fired)
        deadline[0] = timer.now() - 1.0  # already due: scheduled with no delay, not refused

        def once(now: float) -> None:
            fired.append(now)
            deadline[0] = None

        driver = timer.TimerDriver(lambda: deadline[0], once)
        driver.rearm()
        await asyncio.sleep(0.01)
        return cancelled, len(fired)

    assert asyncio.run(scenario()) == (0, 1)


def test_a_test_clock_replaces_the_loop_clock() -> None:
    timer = _timer_module()
    fake = [100.0]

    async def scenario() -> list[float]:
        fired: list[float] = []
        driver = timer.TimerDriver(lambda: 100.01 if not fired else None, fired.append,
                                   clock=lambda: fake[0])
        assert driver.now() == 100.0
        driver.rearm()
        await asyncio.sleep(0.05)
        return fired

    assert asyncio.run(scenario()) == [100.0]  # fired with the test clock's reading
