"""Async connection pool and limiter over the sans-I/O cores, plus the dialers they use.

* :class:`ConnectionLimiter` -- ``await limiter.request_connection(peer_id)``
  returns a :class:`Slot` once one of ``max_connections`` slots is free (FIFO
  queue, optional deadline, bounded queue → :class:`~pyapp.exceptions.LimitExceeded`
  at once). Cancelling the awaiting task cancels the request; a slot is
  released exactly once (``slot.release()``, idempotent).
* :class:`ConnectionPool` -- ``await pool.get_connection(peer_id)`` returns a
  :class:`Lease` on the live connection to that peer, dialling one through a
  :class:`Dialer` if needed (concurrent gets share one dial). The pool asks
  the limiter for a slot before every dial. Release with ``lease.release()``
  or ``async with pool.connection(peer_id) as lease``. Idle connections close
  after ``timeout``; a full pool evicts its LRU idle connection or makes the
  caller wait up to ``wait_timeout`` (then :class:`~pyapp.exceptions.PoolExhausted`).
  Connections that close or fail leave the pool by themselves.
* :class:`Dialer` -- how a connection is made: :class:`SignalingDialer` (the
  real signaling server; inbound offers from other peers go through the limiter
  as ``inbound`` requests and are queued or refused with a reason) and
  :class:`LoopbackDialer` (both ends in this page, for tests and benchmarks).

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
``connection_closed``/``connection_failed`` + release the slot. Each wrapper
drives its core's timers with one asyncio timer handle re-armed from
``get_timer()`` after every input.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, is_null, spawn
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.peer import IceServer, PeerConnection
from pyapp.browser.reconnect import ReconnectSupervisor
from pyapp.browser.signaling import SignalingClient
from pyapp.core import limiter as core_limiter
from pyapp.core import pool as core_pool
from pyapp.core.limiter import Granted, LimiterAction, LimiterStats
from pyapp.core.pool import Close, Dial, Fail, Grant, PoolAction, PoolStats
from pyapp.exceptions import (
    ConnectionClosedError,
    DialTimeout,
    LimitExceeded,
    LocalProtocolError,
    OperationTimeout,
    PyAppError,
    SignalingError,
)

__all__ = [
    "ConnectionLimiter",
    "ConnectionPool",
    "Dialer",
    "Lease",
    "LoopbackDialer",
    "PooledConnection",
    "SignalingDialer",
    "Slot",
]

BOOTSTRAP_LABEL = "pyapp-pool"
"""Label of the data channel a dialer opens to force negotiation (closed once open)."""

GC_EVERY = 32
"""Run the cycle collector after this many hang-ups (see :func:`_count_hang_up`)."""
_hang_ups = 0


def _count_hang_up() -> None:
    # A closed PeerConnection sits in reference cycles (its channels and
    # callbacks point back at it) that only the cycle collector frees, and until
    # its JsProxy is freed the RTCPeerConnection stays reachable from JS, where
    # Chromium counts it against a per-page limit ("Cannot create so many
    # PeerConnections", ~500 here). A pool that churns connections must collect.
    global _hang_ups
    _hang_ups += 1
    if _hang_ups % GC_EVERY == 0:
        gc.collect()


class _CoreTimer:
    """One asyncio timer handle for a sans-I/O core, re-armed after every input."""

    def __init__(self, get_timer: Callable[[], float | None], fire: Callable[[float], None]) -> None:
        self._get_timer = get_timer
        self._fire = fire
        self._loop = asyncio.get_event_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def now(self) -> float:
        return self._loop.time()

    def rearm(self) -> None:
        when = self._get_timer()
        if when == self._when and self._handle is not None:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = when
        if when is not None:
            # Not call_at: Pyodide's WebLoop refuses to schedule in the past
            # (ValueError), and a due timer is routine here.
            self._handle = self._loop.call_later(max(0.0, when - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        self._when = None
        self._fire(self.now())
        self.rearm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._when = None


# ---------------------------------------------------------------------- limiter


class Slot:
    """One connection slot granted by a :class:`ConnectionLimiter`.

    Release it when the connection it admitted closes or fails; releasing twice
    is harmless. Usable as an async context manager.
    """

    def __init__(self, limiter: ConnectionLimiter, request_id: int, peer_id: Hashable,
                 inbound: bool) -> None:
        self.limiter = limiter
        self.request_id = request_id
        self.peer_id = peer_id
        self.inbound = inbound
        self.released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self.released:
            self.released = True
            self.limiter._release(self.request_id)

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "inbound" if self.inbound else "outbound"
        return f"<Slot {self.request_id} {kind} {self.peer_id!r}{' released' if self.released else ''}>"


class ConnectionLimiter:
    """At most ``max_connections`` live connections; waiters queue FIFO.

    Wraps :class:`pyapp.core.limiter.ConnectionLimiter`; see its docs for the
    policies (``max_queue``, ``max_inbound_queue``).

    Example::

        limiter = ConnectionLimiter(8)
        slot = await limiter.request_connection("bob", timeout=5.0)
        try:
            ...  # open the connection
        finally:
            slot.release()
    """

    def __init__(self, max_connections: int, *, max_queue: int = 32,
                 max_inbound_queue: int = 4) -> None:
        self.core = core_limiter.ConnectionLimiter(
            max_connections, max_queue=max_queue, max_inbound_queue=max_inbound_queue)
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._timer = _CoreTimer(self.core.get_timer, lambda now: self._apply(self.core.handle_timer(now)))
        self.events = Emitter()

    @property
    def held(self) -> int:
        """Slots held right now."""
        return self.core.held

    @property
    def queued(self) -> int:
        """Requests waiting right now."""
        return self.core.queued

    @property
    def max_connections(self) -> int:
        return self.core.max_connections

    @property
    def stats(self) -> LimiterStats:
        return self.core.stats

    async def request_connection(self, peer_id: Hashable, *, inbound: bool = False,
                                 timeout: float | None = None) -> Slot:
        """Wait for a slot for a connection to (or, ``inbound``, from) ``peer_id``.

        Raises LimitExceeded when the queue (or its inbound share) is full, or
        when ``timeout`` seconds pass in the queue. Cancelling the calling task
        withdraws the request (and frees the slot if it was granted meanwhile).
        """
        request_id = next(self._ids)
        now = self._timer.now()
        deadline = None if timeout is None else now + timeout
        future: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self._futures[request_id] = future
        self._apply(self.core.request(request_id, peer_id, now, inbound=inbound, deadline=deadline))
        try:
            await future
        except asyncio.CancelledError:
            self._futures.pop(request_id, None)
            self._apply(self.core.cancel(request_id, self._timer.now()))
            raise
        return Slot(self, request_id, peer_id, inbound)

    def reconfigure(self, *, max_connections: int | None = None, max_queue: int | None = None,
                    max_inbound_queue: int | None = None) -> None:
        """Change the limits at runtime (see the core's ``reconfigure``)."""
        self._apply(self.core.reconfigure(self._timer.now(), max_connections=max_connections,
                                          max_queue=max_queue, max_inbound_queue=max_inbound_queue))

    def _release(self, request_id: int) -> None:
        self._apply(self.core.release(request_id, self._timer.now()))

    def _apply(self, actions: list[LimiterAction]) -> None:
        for action in actions:
            future = self._futures.pop(action.request_id, None)  # type: ignore[call-overload]
            if isinstance(action, Granted):
                if future is None or future.done():
                    # Its requester is gone (cancelled in the same tick): hand the slot back.
                    self._apply(self.core.cancel(action.request_id, self._timer.now()))
                    continue
                future.set_result(None)
            else:
                error = getattr(action, "error", None) or LimitExceeded("connection limiter refused")
                reason = getattr(action, "reason", "deadline passed")
                self.events.emit("refused", action.peer_id, reason)
                if future is not None and not future.done():
                    future.set_exception(error)
        self._timer.rearm()


# ---------------------------------------------------------------------- dialers


class Dialer(Protocol):
    """How the pool opens and closes connections to peers."""

    async def dial(self, peer_id: str, resume: str | None = None) -> PeerConnection:
        """Open a connection to ``peer_id`` and return it once ``connected``.

        ``resume`` (a MuxSession's ``resume_token``) asks the peer to continue its
        multiplexer session on the new connection. On failure or cancellation
        nothing may be left open.
        """
        ...

    def hang_up(self, peer_id: str, pc: PeerConnection) -> None:
        """Close ``pc`` (and tell the remote, if the dialer can)."""
        ...


async def _wait_ready(pc: PeerConnection, timeout: float) -> None:
    """Force negotiation with a bootstrap channel; return once it is open, then close it."""
    channel = pc.create_data_channel(BOOTSTRAP_LABEL)
    try:
        await asyncio.wait_for(channel.wait_open(), timeout)
        # The channel can open a moment before connectionState says "connected".
        await pc.wait_connected(timeout)
    finally:
        channel.close()


class LoopbackDialer:
    """Dials "peers" that live in this very page (a :func:`loopback_pair` per dial).

    The remote end of each connection is kept in :attr:`remotes` so tests can
    act as the peer (answer channels, close it to simulate a peer that left).
    """

    def __init__(self, *, timeout: float = 10.0, **pc_args: Any) -> None:
        self.timeout = timeout
        self.pc_args = pc_args
        self.remotes: dict[str, PeerConnection] = {}
        self.dials = 0
        self.fail_next: list[Exception] = []

    async def dial(self, peer_id: str, resume: str | None = None) -> PeerConnection:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.dials += 1
        a, b = loopback_pair(**self.pc_args)
        try:
            await _wait_ready(a, self.timeout)
        except BaseException:
            a.close()
            b.close()
            raise
        self.remotes[peer_id] = b

        def on_local_state(state: str) -> None:
            # The remote end goes with the local one, as a real peer would notice the hang-up.
            if state == "closed":
                b.close()

        def on_remote_state(state: str) -> None:
            # Drop closed remotes: Chromium counts every RTCPeerConnection still
            # reachable from JS against its per-page limit ("Cannot create so
            # many PeerConnections"), closed or not.
            if state == "closed" and self.remotes.get(peer_id) is b:
                del self.remotes[peer_id]

        a.events.on("connectionstatechange", on_local_state)
        b.events.on("connectionstatechange", on_remote_state)
        return a

    def hang_up(self, peer_id: str, pc: PeerConnection) -> None:
        pc.close()
        _count_hang_up()


@dataclass
class _Remote:
    """A connection the signaling dialer routes signals to."""

    cid: str
    pc: PeerConnection
    slot: Slot | None
    inbound: bool


@dataclass
class _Pending:
    """An inbound offer waiting for a limiter slot; its signals are buffered."""

    peer_id: str
    signals: list[dict[str, Any]]
    task: asyncio.Task[Any] | None = None
    resume: str | None = None


class SignalingDialer:
    """Dials peers through a :class:`SignalingClient`; accepts (or refuses) inbound offers.

    Every signal this dialer sends carries ``"pool": <connection id>``, a random
    id per RTCPeerConnection, so a redial is told apart from a renegotiation and
    late signals of a closed connection are dropped. Signals without the key
    belong to someone else (the chat app) and are left alone.

    An offer under an unknown connection id from another peer asks ``limiter``
    for an *inbound* slot (deadline ``inbound_timeout``): granted → a polite
    PeerConnection answers it and ``incoming`` fires with ``(peer_id, pc)``;
    refused or timed out → the offer is dropped and the dialling side is told
    ``{"pool": cid, "refused": reason}``, which fails its dial with
    LimitExceeded. Malformed ``pool`` signals raise nothing: they are counted in
    ``bad_signals`` and reported as a SignalingError on the ``error`` event.

    Events: ``incoming`` (peer_id, pc), ``refused`` (peer_id, reason),
    ``peer-gone`` (peer_id), ``error`` (SignalingError).
    """

    def __init__(self, client: SignalingClient, *, limiter: ConnectionLimiter | None = None,
                 ice_servers: list[IceServer] | None = None, timeout: float = 15.0,
                 inbound_timeout: float = 5.0, max_buffered: int = 64,
                 resume_window: float = 30.0) -> None:
        self.client = client
        self.limiter = limiter
        self.ice_servers = ice_servers
        self.timeout = timeout
        self.inbound_timeout = inbound_timeout
        self.max_buffered = max_buffered
        self.events = Emitter()
        self.connections: dict[str, _Remote] = {}  # peer id -> its current connection
        self._pending: dict[str, _Pending] = {}  # connection id -> inbound offer waiting
        self._refusals: dict[str, str] = {}  # connection id -> why the peer refused our dial
        self.resume_window = resume_window
        self._orphans: dict[str, tuple[Any, asyncio.TimerHandle]] = {}
        self.resumed = 0
        self.bad_signals = 0
        self.stale_signals = 0
        self.inbound_accepted = 0
        self.inbound_refused = 0
        self.dials = 0
        self._closed = False
        client.events.on("signal", self._on_signal)
        client.events.on("peer-left", self._on_peer_left)

    # ------------------------------------------------------------------ dialling

    def _new_pc(self, peer_id: str, cid: str, *, polite: bool,
                resume: str | None = None) -> PeerConnection:
        client = self.client

        def signal(message: dict[str, Any]) -> Any:
            extra = {"resume": resume} if resume is not None and "description" in message else {}
            return client.send_signal(peer_id, {**message, "pool": cid, **extra})

        return PeerConnection(signal=signal, polite=polite, ice_servers=self.ice_servers)

    async def dial(self, peer_id: str, resume: str | None = None) -> PeerConnection:
        """Dial ``peer_id``; with ``resume`` (a session's ``resume_token``) the answering
        side resumes its multiplexer session with that id on the new connection."""
        if self._closed:
            raise ConnectionClosedError("the dialer is closed")
        current = self.connections.get(peer_id)
        if current is not None:
            if current.inbound:
                raise LocalProtocolError(f"peer {peer_id!r} already has an inbound connection to us")
            self.hang_up(peer_id, current.pc)
        self.dials += 1
        cid = secrets.token_hex(8)
        # The dialling side offers and is impolite; the answering side is polite.
        pc = self._new_pc(peer_id, cid, polite=False, resume=resume)
        self.connections[peer_id] = _Remote(cid, pc, None, inbound=False)
        pc.events.on("connectionstatechange",
                      lambda state: self._forget(peer_id, cid) if state == "closed" else None)
        try:
            await _wait_ready(pc, self.timeout)
        except BaseException as exc:
            reason = self._refusals.pop(cid, None)
            self.hang_up(peer_id, pc)
            if reason is not None:
                raise LimitExceeded(f"peer {peer_id!r} refused the connection: {reason}") from None
            if isinstance(exc, TimeoutError) and not isinstance(exc, OperationTimeout):
                raise DialTimeout(peer_id, self.timeout) from None
            raise
        return pc

    def hang_up(self, peer_id: str, pc: PeerConnection) -> None:
        remote = self.connections.get(peer_id)
        if remote is not None and remote.pc is pc:
            self._forget(peer_id, remote.cid)
            if not self._closed:
                spawn(self._send_quietly(peer_id, {"pool": remote.cid, "bye": True}), "pool: bye")
        pc.close()
        _count_hang_up()

    async def _send_quietly(self, peer_id: str, data: dict[str, Any]) -> None:
        try:
            await self.client.send_signal(peer_id, data)
        except PyAppError:
            pass  # signaling is gone: the remote notices through ICE consent instead

    def _orphan(self, peer_id: str, pc: PeerConnection) -> None:
        """Close an answered connection but keep its multiplexer session for
        ``resume_window`` seconds, in case the peer redials and asks to resume it."""
        session = pc.detach_multiplexer()
        pc.close()
        if session is None or session.failed:
            return
        previous = self._orphans.pop(peer_id, None)
        if previous is not None:
            previous[1].cancel()
            previous[0].fail("superseded by a newer connection from the same peer")
        handle = asyncio.get_event_loop().call_later(
            self.resume_window, self._expire_orphan, peer_id, session)
        self._orphans[peer_id] = (session, handle)

    def _expire_orphan(self, peer_id: str, session: Any) -> None:
        entry = self._orphans.get(peer_id)
        if entry is not None and entry[0] is session:
            del self._orphans[peer_id]
            session.fail(f"peer {peer_id!r} did not come back within {self.resume_window:g} s")

    def _take_orphan(self, peer_id: str, token: str | None) -> Any:
        entry = self._orphans.get(peer_id)
        if token is None or entry is None or entry[0].session_id.hex() != token:
            return None
        del self._orphans[peer_id]
        entry[1].cancel()
        return entry[0]

    def _forget(self, peer_id: str, cid: str) -> None:
        remote = self.connections.get(peer_id)
        if remote is not None and remote.cid == cid:
            del self.connections[peer_id]
            if remote.slot is not None:
                remote.slot.release()

    # ------------------------------------------------------------------ inbound

    def _bad(self, peer_id: str, why: str) -> None:
        self.bad_signals += 1
        self.events.emit("error", SignalingError(f"bad pool signal from {peer_id}: {why}"))

    def _on_signal(self, sender: str, data: Any) -> None:
        if not isinstance(data, dict) or "pool" not in data:
            return  # not ours
        cid = data.get("pool")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
            self._bad(sender, "connection id must be a string of 1-64 characters")
            return
        resume = data.get("resume")
        if resume is not None and (not isinstance(resume, str) or len(resume) != 16):
            self._bad(sender, "resume must be a 16-character session id")
            return
        body = {k: v for k, v in data.items() if k not in ("pool", "resume")}
        kinds = [k for k in ("description", "candidate", "bye", "refused") if k in body]
        if len(kinds) != 1 or len(body) != 1:
            self._bad(sender, f"expected one of description/candidate/bye/refused, got {sorted(body)[:5]}")
            return
        kind = kinds[0]
        remote = self.connections.get(sender)
        if remote is not None and remote.cid == cid:
            if kind == "bye":
                self._forget(sender, cid)
                if remote.inbound:
                    self._orphan(sender, remote.pc)  # the peer may be redialling
                else:
                    remote.pc.close()
            elif kind == "refused":
                self._refusals[cid] = str(body["refused"])[:200]
                remote.pc.close()
            else:
                spawn(self._apply_signal(sender, remote.pc, body), f"pool signal from {sender}")
            return
        pending = self._pending.get(cid)
        if pending is not None:
            if pending.peer_id != sender:
                self._bad(sender, "connection id belongs to another peer")
            elif kind == "bye":
                if pending.task is not None:
                    pending.task.cancel()
                del self._pending[cid]
            elif len(pending.signals) >= self.max_buffered:
                self._bad(sender, f"more than {self.max_buffered} signals before the offer was accepted")
            else:
                pending.signals.append(body)
            return
        description = body.get("description")
        if kind == "description" and isinstance(description, dict) and description.get("type") == "offer":
            if self._closed:
                return
            pending = _Pending(sender, [body], resume=resume)
            self._pending[cid] = pending
            pending.task = spawn(self._accept(sender, cid, pending), f"pool: inbound offer from {sender}")
            return
        # A candidate or bye of a connection already closed: expected, harmless.
        self.stale_signals += 1

    async def _apply_signal(self, sender: str, pc: PeerConnection, body: dict[str, Any]) -> None:
        try:
            await pc.handle_signal(body)
        except ConnectionClosedError:
            self.stale_signals += 1
        except (LocalProtocolError, PyAppError) as exc:
            self._bad(sender, str(exc))

    async def _accept(self, sender: str, cid: str, pending: _Pending) -> None:
        slot: Slot | None = None
        try:
            if self.limiter is not None:
                slot = await self.limiter.request_connection(
                    sender, inbound=True, timeout=self.inbound_timeout)
        except LimitExceeded as exc:
            self._pending.pop(cid, None)
            self.inbound_refused += 1
            reason = str(exc).removeprefix("connection limiter: ")
            self.events.emit("refused", sender, reason)
            await self._send_quietly(sender, {"pool": cid, "refused": reason})
            return
        except asyncio.CancelledError:
            self._pending.pop(cid, None)
            raise
        self._pending.pop(cid, None)
        if self._closed:
            if slot is not None:
                slot.release()
            return
        old = self.connections.get(sender)
        if old is not None:
            # The peer redialled: its previous connection is dead to it.
            self._forget(sender, old.cid)
            self._orphan(sender, old.pc)
        pc = self._new_pc(sender, cid, polite=True)
        self.connections[sender] = _Remote(cid, pc, slot, inbound=True)
        self.inbound_accepted += 1
        session = self._take_orphan(sender, pending.resume)
        if session is not None:
            pc.adopt_multiplexer(session)  # before `incoming`: the app sees the resumed session
            self.resumed += 1

        def on_state(state: str) -> None:
            if state in ("failed", "closed"):
                self._forget(sender, cid)
                if state == "failed":
                    self._orphan(sender, pc)

        pc.events.on("connectionstatechange", on_state)
        self.events.emit("incoming", sender, pc)
        for body in pending.signals:
            await self._apply_signal(sender, pc, body)

    def _on_peer_left(self, peer_id: str) -> None:
        remote = self.connections.get(peer_id)
        if remote is not None:
            self._forget(peer_id, remote.cid)
            remote.pc.close()
        for cid, pending in list(self._pending.items()):
            if pending.peer_id == peer_id and pending.task is not None:
                pending.task.cancel()
                self._pending.pop(cid, None)
        self.events.emit("peer-gone", peer_id)

    def close(self) -> None:
        """Close every connection this dialer made or accepted; stop listening."""
        self._closed = True
        self.client.events.off("signal", self._on_signal)
        self.client.events.off("peer-left", self._on_peer_left)
        for pending in list(self._pending.values()):
            if pending.task is not None:
                pending.task.cancel()
        self._pending.clear()
        for peer_id, remote in list(self.connections.items()):
            self._forget(peer_id, remote.cid)
            spawn(self._send_quietly(peer_id, {"pool": remote.cid, "bye": True}), "pool: bye")
            remote.pc.close()
        for session, handle in self._orphans.values():
            handle.cancel()
            session.fail("the dialer closed")
        self._orphans.clear()


# ---------------------------------------------------------------------- pool


class PooledConnection:
    """The pool's handle on one peer: the current PeerConnection, its slot, its supervisor.

    With reconnection on, ``pc`` changes when the supervisor redials; hold on
    to the :class:`PooledConnection` (or the lease), not to the PeerConnection.
    Events: ``connection`` (the new PeerConnection after a redial),
    ``reconnect`` (a :class:`~pyapp.core.reconnect.ReconnectEvent`), ``closed`` (reason).
    """

    def __init__(self, pool: ConnectionPool, peer_id: str, pc: PeerConnection,
                 slot: Slot | None) -> None:
        self.pool = pool
        self.peer_id = peer_id
        self.pc = pc
        self.slot = slot
        self.events = Emitter()
        self.closed = False
        self.close_reason: str | None = None
        self.supervisor: ReconnectSupervisor | None = None
        self._sctp_owner: ProxyOwner | None = None
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

    def _watch_sctp(self, pc: PeerConnection) -> None:
        # The remote closing its RTCPeerConnection aborts the SCTP association
        # at once, while ICE only notices after consent freshness fails (~15-30 s).
        if self._sctp_owner is not None:
            self._sctp_owner.close()
            self._sctp_owner = None
        sctp = pc.js_pc.sctp
        if is_null(sctp):
            return
        owner = self._sctp_owner = ProxyOwner(f"sctp transport to {self.peer_id}")

        def on_state(_event: Any) -> None:
            if str(sctp.state) == "closed" and not self.closed and self.pc is pc:
                if self.supervisor is not None and pc.ice_connection_state != "connected":
                    # The path is down and SCTP gave up retransmitting: not the peer
                    # hanging up. Redial (and resume) instead of dropping the peer.
                    self.supervisor.transport_dead()
                    return
                self._gone("peer closed the connection", failed=False)

        owner.listen(sctp, "statechange", on_state)

    def _on_new_pc(self, pc: PeerConnection) -> None:
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
        if self._sctp_owner is not None:
            self._sctp_owner.close()
            self._sctp_owner = None
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

    ``lease.pc`` is the live PeerConnection (it may change across a redial, so
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
    def pc(self) -> PeerConnection:
        """The live PeerConnection; raises ConnectionClosedError once the connection is gone."""
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
        self._timer = _CoreTimer(self.core.get_timer, lambda now: self._apply(self.core.handle_timer(now)))
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
        self._apply(self.core.get_connection(waiter_id, peer_id, now, deadline=deadline))
        try:
            connection = await future
        except asyncio.CancelledError:
            self._waiters.pop(waiter_id, None)
            self._apply(self.core.cancel(waiter_id, self._timer.now()))
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
        self._apply(self.core.report_quality(peer_id, score, self._timer.now()))

    def reconfigure(self, **limits: Any) -> None:
        """Change limits at runtime (``max_size``, ``idle_timeout``, ``wait_timeout``, ...)."""
        self._apply(self.core.reconfigure(now=self._timer.now(), **limits))

    def close(self) -> None:
        """Close every connection, fail every waiter, cancel dials in progress."""
        if self._closed:
            return
        self._closed = True
        self._apply(self.core.close(self._timer.now()))
        for task in list(self._dials.values()):
            task.cancel()
        self._dials.clear()
        self._timer.cancel()

    # ------------------------------------------------------------------ plumbing

    def _release(self, waiter_id: int) -> None:
        self._apply(self.core.release(waiter_id, self._timer.now()))

    def _connection_gone(self, connection: PooledConnection, reason: str, failed: bool) -> None:
        now = self._timer.now()
        self.events.emit("gone", connection.peer_id, reason)
        if failed:
            error = ConnectionClosedError(f"connection to {connection.peer_id!r} failed: {reason}")
            self._apply(self.core.connection_failed(connection.peer_id, error, now, connection=connection))
        else:
            self._apply(self.core.connection_closed(connection.peer_id, now, connection=connection))

    def _apply(self, actions: list[PoolAction]) -> None:
        for action in actions:
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
                    self._apply(self.core.release(action.waiter_id, self._timer.now()))
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
                self._apply(self.core.dial_failed(peer_id, exc, self._timer.now()))
            return
        self._dials.pop(peer_id, None)
        connection = PooledConnection(self, peer_id, pc, slot)
        if self.reconnect is not None:
            connection.events.on("reconnect",
                                 lambda event: self.events.emit("reconnect", peer_id, event))
        self._apply(self.core.dial_succeeded(peer_id, connection, self._timer.now()))

    def __repr__(self) -> str:
        s = self.stats
        return f"<ConnectionPool size={s.size} idle={s.idle} leased={s.leased} waiting={s.waiting}>"
