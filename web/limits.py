"""The signaling endpoint's limits, and the per-address state they need.

Per-client limits (queue sizes, message size, the per-connection rate) live in
:class:`Limits` and are enforced by :mod:`web.client` on its own. Per-address
limits (connections, joins/min, messages/s across all of an address's
connections, rooms created/min) keep their state in a :class:`LimitStore`, so a
flooder that reconnects finds its bucket where it left it, and several server
instances can share one store (Redis). :class:`InMemoryLimitStore` is the
one-process store.

Every limit is a flag of ``python3 build.py serve``; 0 switches a per-address
limit off. The defaults suit a LAN and a public deployment alike: a person opens
a few tabs and joins a room every few seconds at most; a script that opens
hundreds of sockets or relays thousands of messages is refused. docs/signaling.md
lists what a client sees for each.

Example::

    store = InMemoryLimitStore()
    assert await store.open_connection("192.0.2.7", limit=2)
    wait = await store.take("msg:192.0.2.7", rate=100.0, burst=200.0)
    assert wait == 0.0   # allowed; otherwise the seconds until it would be
    await store.close_connection("192.0.2.7")
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

from aiohttp import web

from pyapp.core.signaling import TokenBucket
from pyapp.exceptions import InvalidArgumentError

__all__ = ["Limits", "LimitStore", "InMemoryLimitStore", "ThrottledLog", "client_address"]


@dataclass
class Limits:
    """What one client and one address may do (``serve --help`` lists the flags)."""

    # ---------------------------------------------------------------- per client
    max_message_bytes: int = 64 * 1024
    """Largest WebSocket message accepted; a larger one gets ``too-large`` and close 1009."""
    max_peers_per_room: int = 16
    """Joining a full room is refused with ``room-full``."""
    messages_per_second: float = 50.0
    """Sustained rate of one connection (token bucket)."""
    burst: int = 100
    """Messages one connection may send at once before the rate applies."""
    flood_strikes: int = 20
    """Rate-limited messages in a row after which the client is closed (``flooding``, 1008)."""
    queue_messages: int = 512
    """Messages queued towards one client; past it the client is dropped (``slow-consumer``)."""
    queue_bytes: int = 1024 * 1024
    """Bytes queued towards one client; past it the client is dropped (``slow-consumer``)."""
    close_timeout: float = 2.0
    """Seconds a close may take (flush, close handshake, peer's FIN) before the socket is aborted."""
    heartbeat: float = 15.0
    """Seconds between WebSocket pings; a client that misses a pong is closed."""

    # ---------------------------------------------------------------- per address
    connections_per_address: int = 64
    """Simultaneous connections from one address (``too-many-connections``, 1008)."""
    joins_per_minute: int = 120
    """Joins from one address per minute, as a bucket of that size (``join-rate-limited``)."""
    rooms_per_minute: int = 30
    """Rooms one address may create per minute (``room-rate-limited``)."""
    address_messages_per_second: float = 200.0
    """Messages/s across all of one address's connections, surviving reconnects (``rate-limited``)."""
    address_burst: int = 400
    """Messages one address may send at once before its rate applies."""
    trust_proxy: int = 0
    """Reverse proxies in front of the server whose ``X-Forwarded-For`` entry is trusted (0: none)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise InvalidArgumentError(
                    f"limit {f.name} (--{f.name.replace('_', '-')}) must be >= 0, got {value!r}: "
                    "pass 0 or more (`build.py serve --help` says what 0 means for each)")
        for name in _REQUIRED:
            value = getattr(self, name)
            if value <= 0:
                raise InvalidArgumentError(
                    f"limit {name} (--{name.replace('_', '-')}) must be > 0, got {value!r}: "
                    "it cannot be switched off")


_REQUIRED = ("max_message_bytes", "messages_per_second", "burst", "flood_strikes",
             "queue_messages", "queue_bytes")
"""Per-client limits without an 'off' value (0 would refuse every message)."""


class LimitStore(Protocol):
    """Per-address counters and token buckets (in memory, or shared through Redis)."""

    async def open_connection(self, address: str, limit: int) -> bool:
        """Count one more open connection of ``address`` unless ``limit`` are already open
        (``limit <= 0``: no limit). True if counted; False means refuse it."""

    async def close_connection(self, address: str) -> None:
        """Forget one connection counted by a True :meth:`open_connection`."""

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """Token bucket ``key``: refills ``rate`` tokens/s up to ``burst`` and starts full.
        Spend ``cost`` tokens and return 0.0 if there are that many; otherwise spend
        nothing and return the seconds until there will be (> 0)."""

    async def aclose(self) -> None:
        """Release what the store holds (connections, tasks)."""


class InMemoryLimitStore:
    """A :class:`LimitStore` in this process's memory.

    A bucket that has refilled to its burst is the same as no bucket, so buckets
    are forgotten once full: memory follows the addresses active in the last
    ``burst / rate`` seconds, not every address ever seen.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 4096) -> None:
        self.clock = clock
        self.sweep_every = sweep_every
        self._connections: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._takes = 0

    def connections(self, address: str) -> int:
        """How many connections of ``address`` are counted now."""
        return self._connections.get(address, 0)

    def bucket_count(self) -> int:
        """How many buckets are held (full ones are dropped on the next sweep)."""
        return len(self._buckets)

    async def open_connection(self, address: str, limit: int) -> bool:
        count = self._connections.get(address, 0)
        if limit > 0 and count >= limit:
            return False
        self._connections[address] = count + 1
        return True

    async def close_connection(self, address: str) -> None:
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        return self.take_now(key, rate, burst, cost)

    def take_now(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """:meth:`take` without the coroutine (the in-memory store never waits)."""
        now = self.clock()
        self._takes += 1
        if self._takes >= self.sweep_every:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket.wait(now, cost)

    def _sweep(self, now: float) -> None:
        self._takes = 0
        self._buckets = {key: bucket for key, bucket in self._buckets.items()
                         if not bucket.full(now)}

    async def aclose(self) -> None:
        self._connections.clear()
        self._buckets.clear()


def client_address(request: web.BaseRequest, trust_proxy: int = 0) -> str:
    """The address limits are keyed by.

    Without trusted proxies it is the TCP peer. Behind ``trust_proxy`` reverse
    proxies, each of which appends the address it received the request from to
    ``X-Forwarded-For``, the client is the entry ``trust_proxy`` places from the
    right; entries further left were written by the client and prove nothing.
    IPv6 addresses are keyed by their /64, which is what one host usually holds.
    """
    peer = request.remote or "unknown"
    if trust_proxy > 0:
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", [])
                for h in v.split(",") if h.strip()]
        if hops:
            peer = hops[-min(trust_proxy, len(hops))]
    return _key(peer)


def _key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ThrottledLog:
    """Log lines about what clients do, at most one per kind every ``every`` seconds.

    Every refusal already reaches its client; the log is for the operator, and a
    client must not be able to fill it (or spend the server's time writing it)
    by repeating what gets refused. The first line of a kind goes out; the
    next one after ``every`` seconds says how many like it were left out.

    Example::

        throttled = ThrottledLog(logging.getLogger("pyapp.server"), every=10.0)
        throttled.info("too-large", "websocket error from %s: %s", address, exc)
    """

    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._kinds: dict[str, tuple[float, int]] = {}  # kind: (last logged, left out since)

    def info(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.INFO, kind, message, *args)

    def warning(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        last, left_out = self._kinds.get(kind, (-math.inf, 0))
        if now - last < self.every:
            self._kinds[kind] = (last, left_out + 1)
            return
        self._kinds[kind] = (now, 0)
        if left_out:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, left_out, now - last)
        self.logger.log(level, message, *args)
