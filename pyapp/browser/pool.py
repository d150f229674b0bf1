"""The async connection pool over :mod:`pyapp.core.pool`.

:class:`ConnectionPool` -- ``await pool.get_connection(peer_id)`` returns a
:class:`Lease` on the live connection to that peer, dialling one through a
:class:`~pyapp.browser.dialers.Dialer` if needed (concurrent gets share one
dial). The pool asks the :class:`~pyapp.browser.limiter.ConnectionLimiter` for a
slot before every dial. Release with ``lease.release()`` or ``async with
pool.connection(peer_id) as lease``. Idle connections close after ``timeout``;
a full pool evicts its LRU idle connection or makes the caller wait up to
``wait_timeout`` (then :class:`~pyapp.exceptions.PoolExhausted`). Connections
that close or fail leave the pool by themselves; with ``reconnect`` on, a
:class:`~pyapp.browser.reconnect.ReconnectSupervisor` keeps each one alive.

Example (in the page)::

    from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, SignalingDialer
    from pyapp.browser.signaling import SignalingClient, default_url

    client = SignalingClient(default_url())
    await client.join("lobby")
    limiter = ConnectionLimiter(8)
    pool = ConnectionPool(6, timeout=60.0, dialer=SignalingDialer(client, limiter=limiter),
                          limiter=limiter)
    async with pool.connection("some-peer-id") as lease:
        channel = lease.pc.create_data_channel("orders")
        await channel.wait_open()
        await channel.send("hello")
    print(pool.stats)

The wrappers follow the composition table in ``docs/pooling.md``: pool ``Dial``
→ limiter slot → dial → ``dial_succeeded``/``dial_failed``; pool ``Close`` →
hang up + release the slot; a connection that closes or fails by itself →
``connection_closed``/``connection_failed`` + release the slot. The limiter
and the pool each drive their core's timers with one
:class:`~pyapp.browser.timer.TimerDriver`. ``ConnectionLimiter``, ``Slot``,
``Dialer``, ``LoopbackDialer`` and ``SignalingDialer`` are importable from here
too (they live in :mod:`pyapp.browser.limiter` and :mod:`pyapp.browser.dialers`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from pyapp._events import Emitter
from pyapp.browser._ffi import spawn
from pyapp.browser.connection import Connection
from pyapp.browser.dialers import BOOTSTRAP_LABEL as BOOTSTRAP_LABEL
from pyapp.browser.dialers import Dialer as Dialer
from pyapp.browser.dialers import LoopbackDialer as LoopbackDialer
from pyapp.browser.dialers import SignalingDialer as SignalingDialer
from pyapp.browser.limiter import ConnectionLimiter as ConnectionLimiter
from pyapp.browser.limiter import Slot as Slot
from pyapp.browser.reconnect import ReconnectSupervisor
from pyapp.browser.timer import TimerDriver
from pyapp.core import pool as core_pool
from pyapp.core.pool import Close, Dial, Fail, Grant, PoolStats
from pyapp.exceptions import (
    ConnectionClosedError,
    DialTimeout,
    OperationTimeout,
    PyAppError,
)

# ConnectionLimiter, Slot (pyapp.browser.limiter) and BOOTSTRAP_LABEL, Dialer,
# LoopbackDialer, SignalingDialer (pyapp.browser.dialers) stay importable from here.
__all__ = [
    "ConnectionPool",
    "Lease",
    "PooledConnection",
]

# ---------------------------------------------------------------------- pool


class PooledConnection:
    """The pool's handle on one peer: the current Connection, its slot, its supervisor.

    With reconnection on, ``pc`` changes when the supervisor redials; hold on
    to the :class:`PooledConnection` (or the lease), not to the Connection.
    Events: ``connection`` (the new Connection after a redial),
    ``reconnect`` (a :class:`~pyapp.core.reconnect.ReconnectEvent`), ``closed`` (reason).
    """

    def __init__(self, pool: ConnectionPool, peer_id: str, pc: Connection,
                 slot: Slot | None) -> None:
        self.pool = pool
        self.peer_id = peer_id
        self.pc = pc
        self.slot = slot
        self.events = Emitter()
        self.closed = False
        self.close_reason: str | None = None
        self.supervisor: ReconnectSupervisor | None = None
        self._sctp_pc: Connection | None = None
        self._watch_sctp(pc)
        if pool.reconnect is not None:
            dialer = pool.dialer
            def redial() -> Any:
                # Carry the multiplexer session over: the offer names the peer's
                # session so it resumes its side too (a fresh dial never does).
                token = self.supervisor.resume_token if self.supervisor else None
                if token is None:
                    return dialer.dial(peer_id)
                return dialer.dial(peer_id, resume=token)

            self.supervisor = ReconnectSupervisor(
                pc, redial=redial,
                hang_up=lambda old: dialer.hang_up(peer_id, old), **pool.reconnect)
            self.supervisor.events.on("connection", self._on_new_pc)
            self.supervisor.events.on("reconnect", lambda event: self.events.emit("reconnect", event))
            self.supervisor.events.on("closed", self._on_supervisor_closed)
        else:
            pc.events.on("connectionstatechange", self._on_state)

    def _watch_sctp(self, pc: Connection | None) -> None:
        # The remote closing its RTCConnection aborts the SCTP association
        # at once, while ICE only notices after consent freshness fails (~15-30 s).
        if self._sctp_pc is not None:
            self._sctp_pc.events.off("sctpstatechange", self._on_sctp_state)
        self._sctp_pc = pc
        if pc is not None:
            pc.events.on("sctpstatechange", self._on_sctp_state)

    def _on_sctp_state(self, state: str) -> None:
        pc = self._sctp_pc
        if state == "closed" and not self.closed and pc is not None and self.pc is pc:
            if self.supervisor is not None and pc.ice_connection_state != "connected":
                # The path is down and SCTP gave up retransmitting: not the peer
                # hanging up. Redial (and resume) instead of dropping the peer.
                self.supervisor.transport_dead()
                return
            self._gone("peer closed the connection", failed=False)

    def _on_new_pc(self, pc: Connection) -> None:
        self.pc = pc
        self._watch_sctp(pc)
        self.events.emit("connection", pc)

    def _on_state(self, state: str) -> None:
        if state in ("failed", "closed") and not self.closed:
            self._gone(f"connection {state}", failed=state == "failed")

    def _on_supervisor_closed(self, reason: str) -> None:
        if not self.closed:
            self._gone(reason, failed=reason.startswith("gave up"))

    def _gone(self, reason: str, *, failed: bool) -> None:
        self._shut(reason)
        self.pool._connection_gone(self, reason, failed)

    def _shut(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        self._watch_sctp(None)
        if self.supervisor is not None:
            self.supervisor.close(reason)
        else:
            self.pc.events.off("connectionstatechange", self._on_state)
            if not self.pc.closed:
                self.pool.dialer.hang_up(self.peer_id, self.pc)
        if self.slot is not None:
            self.slot.release()
        self.events.emit("closed", reason)
        self.events.clear()

    def close(self, reason: str = "closed locally") -> None:
        """Close the connection; the pool forgets it (its leases end)."""
        if not self.closed:
            self._gone(reason, failed=False)

    def __repr__(self) -> str:
        return f"<PooledConnection {self.peer_id!r} {self.pc.connection_state}{' closed' if self.closed else ''}>"


class Lease:
    """One user's hold on a pooled connection; release it when done (idempotent).

    ``lease.pc`` is the live Connection (it may change across a redial, so
    read it when you need it). Usable as an async context manager.
    """

    def __init__(self, pool: ConnectionPool, waiter_id: int, connection: PooledConnection) -> None:
        self.pool = pool
        self.waiter_id = waiter_id
        self.connection = connection
        self.released = False

    @property
    def peer_id(self) -> str:
        return self.connection.peer_id

    @property
    def pc(self) -> Connection:
        """The live Connection; raises ConnectionClosedError once the connection is gone."""
        if self.connection.closed:
            raise ConnectionClosedError(
                f"connection to {self.peer_id!r} is gone: {self.connection.close_reason}")
        return self.connection.pc

    def release(self) -> None:
        """End this lease (idempotent); an idle connection closes after the pool's timeout."""
        if not self.released:
            self.released = True
            self.pool._release(self.waiter_id)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lease {self.waiter_id} on {self.connection!r}{' released' if self.released else ''}>"


class ConnectionPool:
    """A bounded pool of connections, one per peer, leased to any number of users.

    ``timeout`` is the idle timeout (seconds; ``None``: never). ``wait_timeout``
    bounds the wait for room in a full pool, and for a limiter slot.
    ``dial_timeout`` bounds one dial. ``reconnect`` (a dict of
    :class:`~pyapp.core.reconnect.ReconnectPolicy` arguments, ``{}`` for the
    defaults; ``None``: off) puts a :class:`ReconnectSupervisor` on each
    connection: ICE blips are ridden out, ICE restarted, and the peer redialled
    (reusing the connection's limiter slot) before the connection is given up.

    Events: ``dial`` (peer_id), ``close`` (peer_id, reason), ``gone`` (peer_id,
    reason), ``reconnect`` (peer_id, ReconnectEvent).
    """

    def __init__(self, max_size: int, timeout: float | None = 60.0, *, dialer: Dialer,
                 limiter: ConnectionLimiter | None = None, wait_timeout: float | None = 10.0,
                 max_waiting: int = 64, dial_timeout: float = 15.0,
                 poor_quality_threshold: float = 0.5, poor_quality_period: float | None = 30.0,
                 reconnect: dict[str, Any] | None = None) -> None:
        self.core: core_pool.ConnectionPool[PooledConnection] = core_pool.ConnectionPool(
            max_size, timeout, wait_timeout=wait_timeout, max_waiting=max_waiting,
            poor_quality_threshold=poor_quality_threshold, poor_quality_period=poor_quality_period)
        self.dialer = dialer
        self.limiter = limiter
        self.dial_timeout = dial_timeout
        self.reconnect = reconnect
        self.events = Emitter()
        self._ids = itertools.count(1)
        self._waiters: dict[int, asyncio.Future[PooledConnection]] = {}
        self._dials: dict[Hashable, asyncio.Task[Any]] = {}
        self._timer = TimerDriver(self.core.get_timer, self._on_timer)
        self._closed = False

    # ------------------------------------------------------------------ API

    @property
    def stats(self) -> PoolStats:
        """size, idle, leased, dialing, waiting, dials, reuses, evictions, ... (core PoolStats)."""
        return self.core.stats

    def peek(self, peer_id: str) -> PooledConnection | None:
        """The open connection to ``peer_id`` without leasing it."""
        return self.core.peek(peer_id)

    async def get_connection(self, peer_id: str, *, timeout: float | None = None) -> Lease:
        """A lease on the live connection to ``peer_id``, dialling one if there is none.

        ``timeout`` overrides ``wait_timeout`` for the wait for room. Raises
        PoolExhausted, LimitExceeded, the dial's error, or ConnectionClosedError
        (pool closed). Cancelling the caller withdraws the request cleanly.
        """
        waiter_id = next(self._ids)
        now = self._timer.now()
        future: asyncio.Future[PooledConnection] = asyncio.get_event_loop().create_future()
        self._waiters[waiter_id] = future
        deadline = None if timeout is None else now + timeout
        self.core.get_connection(waiter_id, peer_id, now, deadline=deadline)
        self._apply()
        try:
            connection = await future
        except asyncio.CancelledError:
            self._waiters.pop(waiter_id, None)
            self.core.cancel(waiter_id, self._timer.now())
            self._apply()
            raise
        return Lease(self, waiter_id, connection)

    @asynccontextmanager
    async def connection(self, peer_id: str, *, timeout: float | None = None) -> AsyncIterator[Lease]:
        """``async with pool.connection(peer) as lease:`` -- released on exit, whatever happens."""
        lease = await self.get_connection(peer_id, timeout=timeout)
        try:
            yield lease
        finally:
            lease.release()

    def report_quality(self, peer_id: str, score: float) -> None:
        """Feed a quality score (higher is better); a connection poor for long is recycled when idle."""
        self.core.report_quality(peer_id, score, self._timer.now())
        self._apply()

    def reconfigure(self, **limits: Any) -> None:
        """Change limits at runtime (``max_size``, ``idle_timeout``, ``wait_timeout``, ...)."""
        self.core.reconfigure(now=self._timer.now(), **limits)
        self._apply()

    def close(self) -> None:
        """Close every connection, fail every waiter, cancel dials in progress."""
        if self._closed:
            return
        self._closed = True
        self.core.close(self._timer.now())
        self._apply()
        for task in list(self._dials.values()):
            task.cancel()
        self._dials.clear()
        self._timer.cancel()

    # ------------------------------------------------------------------ plumbing

    def _release(self, waiter_id: int) -> None:
        self.core.release(waiter_id, self._timer.now())
        self._apply()

    def _connection_gone(self, connection: PooledConnection, reason: str, failed: bool) -> None:
        now = self._timer.now()
        self.events.emit("gone", connection.peer_id, reason)
        if failed:
            error = ConnectionClosedError(f"connection to {connection.peer_id!r} failed: {reason}")
            self.core.connection_failed(connection.peer_id, error, now, connection=connection)
            self._apply()
        else:
            self.core.connection_closed(connection.peer_id, now, connection=connection)
            self._apply()

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._apply()

    def _apply(self) -> None:
        """Carry out every action the core queued (pulled until None), then re-arm its timer."""
        while (action := self.core.next_event()) is not None:
            if isinstance(action, Dial):
                peer_id = str(action.peer_id)
                self.events.emit("dial", peer_id)
                self._dials[action.peer_id] = spawn(self._dial(peer_id), f"pool: dial {peer_id}")
            elif isinstance(action, Close):
                connection: PooledConnection = action.connection
                self.events.emit("close", action.peer_id, action.reason)
                if not connection.closed:
                    connection._shut(action.reason)
            elif isinstance(action, Grant):
                future = self._waiters.pop(action.waiter_id, None)  # type: ignore[call-overload]
                if future is None or future.done():
                    # Granted to a waiter that is gone: drop the lease at once.
                    self.core.release(action.waiter_id, self._timer.now())
                    continue
                future.set_result(action.connection)
            elif isinstance(action, Fail):
                future = self._waiters.pop(action.waiter_id, None)  # type: ignore[call-overload]
                if future is not None and not future.done():
                    future.set_exception(action.error)
        self._timer.rearm()

    async def _dial(self, peer_id: str) -> None:
        slot: Slot | None = None
        try:
            if self.limiter is not None:
                slot = await self.limiter.request_connection(peer_id, timeout=self.core.wait_timeout)
            pc = await asyncio.wait_for(self.dialer.dial(peer_id), self.dial_timeout)
        except asyncio.CancelledError:
            if slot is not None:
                slot.release()
            raise
        except (PyAppError, TimeoutError) as exc:
            if slot is not None:
                slot.release()
            self._dials.pop(peer_id, None)
            if isinstance(exc, TimeoutError) and not isinstance(exc, OperationTimeout):
                exc = DialTimeout(peer_id, self.dial_timeout)
            if not self._closed:
                self.core.dial_failed(peer_id, exc, self._timer.now())
                self._apply()
            return
        self._dials.pop(peer_id, None)
        connection = PooledConnection(self, peer_id, pc, slot)
        if self.reconnect is not None:
            connection.events.on("reconnect",
                                 lambda event: self.events.emit("reconnect", peer_id, event))
        self.core.dial_succeeded(peer_id, connection, self._timer.now())
        self._apply()

    def __repr__(self) -> str:
        s = self.stats
        return f"<ConnectionPool size={s.size} idle={s.idle} leased={s.leased} waiting={s.waiting}>"
