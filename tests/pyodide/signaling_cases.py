"""Page side of tests/load/test_signaling_reconnect.py (called with ``pypage.call``): the
browser's SignalingClient against a closed port, a silent listener, and a server that
goes away and comes back on the same port."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.signaling import SignalingClient
from pyapp.exceptions import OperationTimeout, SignalingError, SignalingUnreachableError

#: The client of the reconnect scenario, kept between calls (the module stays imported).
_CLIENTS: dict[str, SignalingClient] = {}
_ATTEMPTS: dict[str, list[dict[str, Any]]] = {}


def _elapsed_since(start: float) -> float:
    return asyncio.get_event_loop().time() - start


async def connect_closed_port(url: str) -> dict[str, Any]:
    """connect() to a port nobody listens on: the error, how long it took, what followed."""
    client = SignalingClient(url)  # reconnect=True: still no retries behind the caller's back
    start = asyncio.get_event_loop().time()
    outcome: dict[str, Any] = {}
    try:
        await client.connect(timeout=10.0)
        outcome["connected"] = True
    except SignalingError as exc:
        outcome = {"type": type(exc).__name__, "str": str(exc),
                   "connection_error": isinstance(exc, ConnectionError),
                   "unreachable": isinstance(exc, SignalingUnreachableError),
                   "close_code": getattr(exc, "close_code", None)}
    outcome["elapsed"] = _elapsed_since(start)
    await asyncio.sleep(1.0)
    outcome["state"] = client.state
    outcome["reconnects"] = client.reconnects
    try:
        await client.join("lobby", timeout=10.0)
        outcome["join"] = "joined"
    except SignalingUnreachableError as exc:
        outcome["join"] = type(exc).__name__
    client.close()
    return outcome


async def connect_silent_listener(url: str, seconds: float) -> dict[str, Any]:
    """connect() to a listener that never answers the handshake: OperationTimeout."""
    client = SignalingClient(url)
    start = asyncio.get_event_loop().time()
    try:
        await client.connect(timeout=seconds)
        outcome: dict[str, Any] = {"connected": True}
    except OperationTimeout as exc:
        outcome = {"type": type(exc).__name__, "str": str(exc), "timeout": exc.timeout,
                   "timeout_error": isinstance(exc, TimeoutError), "operation": exc.operation}
    outcome["elapsed"] = _elapsed_since(start)
    client.close()
    return outcome


async def join_and_watch(name: str, url: str, room: str, max_backoff: float) -> dict[str, Any]:
    """Join ``room`` and record every failed reconnect attempt from now on."""
    client = SignalingClient(url, min_backoff=0.25, max_backoff=max_backoff)
    attempts: list[dict[str, Any]] = []
    loop = asyncio.get_event_loop()

    def failed(exc: Any) -> None:
        attempts.append({"t": loop.time(), "type": type(exc).__name__,
                         "close_code": getattr(exc, "close_code", None)})

    client.events.on("reconnect-failed", failed)
    welcome = await client.join(room)
    _CLIENTS[name], _ATTEMPTS[name] = client, attempts
    client.events.on("state", lambda s: attempts.append({"t": loop.time(), "state": s}))
    return {"peer_id": welcome.peer_id, "state": client.state}


async def watch_outage(name: str, seconds: float) -> dict[str, Any]:
    """Wait ``seconds`` while the server is down; the failed attempts seen so far."""
    await asyncio.sleep(seconds)
    client = _CLIENTS[name]
    return {"state": client.state, "reconnects": client.reconnects,
            "events": list(_ATTEMPTS[name])}


async def wait_rejoined(name: str, seconds: float) -> dict[str, Any]:
    """Wait until the client is open again and the server welcomed it back (same id)."""
    client = _CLIENTS[name]
    welcomed: asyncio.Future[str] = asyncio.get_event_loop().create_future()

    def on_welcome(welcome: Any) -> None:
        if not welcomed.done():
            welcomed.set_result(welcome.peer_id)

    client.events.on("welcome", on_welcome)
    start = asyncio.get_event_loop().time()
    try:
        peer_id = await asyncio.wait_for(welcomed, seconds)
    except TimeoutError:
        peer_id = None
    outcome = {"state": client.state, "peer_id": peer_id, "room": client.room,
               "after": _elapsed_since(start), "reconnects": client.reconnects}
    client.close()
    del _CLIENTS[name]
    return outcome
