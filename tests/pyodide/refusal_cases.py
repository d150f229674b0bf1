"""Page side of tests/load/test_page_refusals.py (called with ``pypage.call``): the
browser's SignalingClient against the real server's limits."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.exceptions import SignalingRefusedError


async def join_full_room(room: str, members: int) -> dict[str, Any]:
    """Fill ``room`` with ``members`` clients, then one more tries to join."""
    joined = []
    for _ in range(members):
        c = SignalingClient(default_url(), reconnect=False)
        await c.join(room)
        joined.append(c)
    extra = SignalingClient(default_url(), reconnect=False)
    outcome: dict[str, Any]
    try:
        await extra.join(room)
        outcome = {"joined": True}
    except SignalingRefusedError as exc:
        outcome = {"code": exc.code, "ref": exc.ref, "close_code": exc.close_code,
                   "text": exc.text, "str": str(exc)}
    for c in [*joined, extra]:
        c.close()
    return outcome


async def flood(room: str, signals: int) -> dict[str, Any]:
    """Send ``signals`` signals as fast as possible; the errors seen, until the server closes."""
    client = SignalingClient(default_url(), reconnect=False)
    errors: list[dict[str, Any]] = []

    def on_error(e: Any) -> None:
        errors.append({"type": type(e).__name__, "code": e.code, "close_code": e.close_code})

    client.events.on("error", on_error)
    await client.join(room)
    for i in range(signals):
        await client.send_signal("nobody-here", {"i": i})
    for _ in range(100):
        if client.state == "closed":
            break
        await asyncio.sleep(0.05)
    return {"state": client.state, "errors": errors,
            "last": client.last_refusal.code if client.last_refusal else None}
