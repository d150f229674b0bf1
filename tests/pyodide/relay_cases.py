"""Page side of the relay-watcher tests in tests/e2e/test_turn.py (called with ``pypage.call``)."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.loopback import loopback_pair
from pyapp.browser.relay import RelayWatcher


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def relay_only(ice_servers: list[dict[str, Any]], wait: float, gather: float) -> dict[str, Any]:
    """A loopback pair that may only use ``ice_servers``' relays: candidate types and relay errors.

    Waits ``wait`` seconds for the channel to open; when it does not, up to
    ``gather`` seconds more for gathering to end (an unanswered relay is named then).
    """
    a, b = loopback_pair(ice_servers=ice_servers, ice_transport_policy="relay")
    watcher = RelayWatcher(a)
    errors: list[dict[str, Any]] = []
    watcher.events.on("relay-error", lambda e: errors.append(
        {"url": e.url, "code": e.error_code, "text": str(e)}))
    channel = a.create_data_channel("x")
    started = loop_time()
    types = None
    try:
        await channel.wait_open(wait)
        stats = await a.get_statistics()
        types = [stats.local_candidate_type, stats.remote_candidate_type]
    except TimeoutError:
        pass  # no relay: the result says it did not open, and the test asserts on it
    while not errors and a.peer.js_pc.iceGatheringState != "complete" and loop_time() - started < wait + gather:
        await asyncio.sleep(0.1)  # an unanswered relay is named when gathering ends
    waited = round(loop_time() - started, 1)
    gathering = str(a.peer.js_pc.iceGatheringState)
    a.close()
    b.close()
    return {"types": types, "errors": errors, "ignored": watcher.ignored, "gathering": gathering,
            "seconds": waited}
