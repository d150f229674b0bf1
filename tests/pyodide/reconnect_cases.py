"""Page side of tests/browser/test_reconnect.py (called with ``pypage.call``): the
ReconnectSupervisor over real loopback connections, with a redial the test controls."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.connection import Connection
from pyapp.browser.loopback import connected_pair
from pyapp.browser.reconnect import ReconnectSupervisor
from pyapp.core.reconnect import Recovered, Redial


async def one_redial_at_a_time() -> dict[str, Any]:
    """A dead transport redials once; a second report is ignored; an attempt the
    policy gave up on is cancelled (not counted as a failure) when the next starts."""
    a, _a_far = await connected_pair()
    spare, _spare_far = await connected_pair()   # what the second attempt connects to
    release = asyncio.Event()
    calls = {"started": 0, "cancelled": 0, "active": 0, "max_active": 0}

    async def redial() -> Connection:
        calls["started"] += 1
        calls["active"] += 1
        calls["max_active"] = max(calls["max_active"], calls["active"])
        try:
            await release.wait()
            return spare
        except asyncio.CancelledError:
            calls["cancelled"] += 1
            raise
        finally:
            calls["active"] -= 1

    sup = ReconnectSupervisor(a, redial=redial, grace=5.0, restart_timeout=5.0,
                              redial_timeout=0.4, base_delay=0.0, max_delay=0.0, max_attempts=5)
    failures: list[str] = []
    connections: list[Connection] = []
    sup.events.on("redial-failed", lambda exc: failures.append(repr(exc)))
    sup.events.on("connection", connections.append)

    sup.transport_dead()          # the association died: redial at once
    sup.transport_dead()          # reported again (the old connection closing): ignored
    await asyncio.sleep(0.05)
    after_double_report = {"redials": sup.redials, "started": calls["started"]}

    # Attempt 1 outlives its deadline (0.4 s): the policy backs off (0 s) and
    # issues attempt 2, which must cancel attempt 1 rather than run beside it.
    for _ in range(100):
        if sup.redials >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)
    release.set()
    for _ in range(100):
        if connections:
            break
        await asyncio.sleep(0.05)
    history = [type(e).__name__ for e in sup.history]
    result = {
        "after_double_report": after_double_report,
        "calls": calls,
        "failures": failures,
        "redials": sup.redials,
        "history": history,
        "redial_attempts": [e.attempt for e in sup.history if isinstance(e, Redial)],
        "recovered": any(isinstance(e, Recovered) for e in sup.history),
        "now_on_spare": sup.pc is spare,
        "closed": sup.closed,
    }
    sup.close()
    for pc in (_a_far, spare, _spare_far):
        pc.close()
    return result
