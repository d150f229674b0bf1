"""Page side of tests/e2e/test_pool_signaling.py (called with ``pypage.call``):
a ConnectionPool, ConnectionLimiter and SignalingDialer through the real server.

The test drives two pages step by step (join, burst, stream, peer loss) and
reads each page's state between steps, so each page keeps its side in the
module global ``_SIDE`` from :func:`join` on (one side per page).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pyapp.browser.connection import Connection
from pyapp.browser.mux import MuxSession
from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, SignalingDialer
from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.core.mux import Priority
from pyapp.exceptions import PyAppError


@dataclass
class _Side:
    client: SignalingClient
    limiter: ConnectionLimiter
    dialer: SignalingDialer
    incoming: list[Connection] = field(default_factory=list)
    # The streaming side (start_stream):
    pool: ConnectionPool | None = None
    session: MuxSession | None = None
    gone: list[str] = field(default_factory=list)
    errors: list[PyAppError] = field(default_factory=list)
    task: asyncio.Future[None] | None = None


_SIDE: _Side | None = None


def _side() -> _Side:
    if _SIDE is None:
        raise RuntimeError("join() was not called on this page")
    return _SIDE


async def join(room: str, max_connections: int) -> str:
    """Join ``room`` with a limiter of ``max_connections`` (4 queued, 1 inbound queued); our id."""
    global _SIDE
    client = SignalingClient(default_url())
    await client.join(room)
    limiter = ConnectionLimiter(max_connections, max_queue=4, max_inbound_queue=1)
    dialer = SignalingDialer(client, limiter=limiter, inbound_timeout=5.0)
    side = _SIDE = _Side(client, limiter, dialer)

    def on_incoming(peer: str, pc: Connection) -> None:
        side.incoming.append(pc)
        pc.multiplexer()

    dialer.events.on("incoming", on_incoming)
    assert client.peer_id is not None
    return client.peer_id


async def dial_burst(peer: str, dialers: int) -> list[str]:
    """Dial ``peer`` at once from ``dialers`` separate dialers (as that many peers would)."""
    side = _side()
    burst = [SignalingDialer(side.client) for _ in range(dialers)]

    async def one(d: SignalingDialer) -> str:
        try:
            await d.dial(peer)
            return "connected"
        except PyAppError as exc:
            return type(exc).__name__ + ": " + str(exc)

    results = await asyncio.gather(*(one(d) for d in burst))
    for d in burst:
        d.close()
    return list(results)


def inbound_stats() -> list[int]:
    """[inbound accepted, inbound refused, limiter slots held]."""
    side = _side()
    return [side.dialer.inbound_accepted, side.dialer.inbound_refused, side.limiter.held]


def limiter_held() -> int:
    return _side().limiter.held


async def start_stream(peer: str) -> None:
    """Lease ``peer`` from a pool, send one message on a HIGH channel, then stream until an error."""
    side = _side()
    pool = side.pool = ConnectionPool(4, timeout=30, dialer=side.dialer, limiter=side.limiter)
    pool.events.on("gone", lambda peer, reason: side.gone.append(reason))
    lease = await pool.get_connection(peer)
    session = side.session = lease.pc.multiplexer()
    await session.wait_open(10)
    orders = session.create_data_channel_with_priority("orders", Priority.HIGH)
    await orders.send(b"first")

    async def stream() -> None:
        try:
            for i in range(100000):
                await orders.send(i.to_bytes(4, "big") * 256)
        except PyAppError as exc:      # what the peer's loss raised: the test reads it
            side.errors.append(exc)

    side.task = asyncio.ensure_future(stream())


def second_incoming_open() -> bool:
    """The second incoming connection (the pool's) has its multiplexer's transports open."""
    incoming = _side().incoming
    return len(incoming) == 2 and incoming[-1].multiplexer().transports_open


def hold_delivery() -> None:
    """The latest incoming connection's multiplexer stops delivering (nothing is acknowledged)."""
    _side().incoming[-1].multiplexer().hold_delivery()


def stream_outcome() -> dict[str, Any] | None:
    """None until the pool saw the peer go and the stream failed; then what each reported."""
    side = _side()
    if not (side.gone and side.errors):
        return None
    assert side.pool is not None and side.session is not None
    error = side.errors[0]
    return {"gone": side.gone, "size": side.pool.stats.size, "held": side.limiter.held,
            "error": type(error).__name__, "undelivered": getattr(error, "undelivered", None),
            "failures": sum(len(f.messages) for f in side.session.delivery_failures)}
