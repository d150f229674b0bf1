"""How the pool makes connections: the :class:`Dialer` protocol and two dialers.

* :class:`SignalingDialer` -- the real signaling server; inbound offers from
  other peers go through the limiter as ``inbound`` requests and are queued or
  refused with a reason. A redial offer may name the peer's multiplexer session
  (``resume``) so both sides continue it on the new connection.
* :class:`LoopbackDialer` -- both ends in this page, for tests and benchmarks.

A dial returns a :class:`~pyapp.browser.connection.Connection` once both ends
see it connected; a dial that does not connect in time raises
:class:`~pyapp.exceptions.DialTimeout`.

Example (in the page)::

    from pyapp.browser.dialers import SignalingDialer
    from pyapp.browser.signaling import SignalingClient, default_url

    client = SignalingClient(default_url())
    await client.join("lobby")
    dialer = SignalingDialer(client)
    conn = await dialer.dial("some-peer-id")
    ...
    dialer.hang_up("some-peer-id", conn)
"""

from __future__ import annotations

import asyncio
import gc
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from pyapp._events import Emitter
from pyapp.browser._ffi import spawn
from pyapp.browser.connection import Connection
from pyapp.browser.limiter import ConnectionLimiter, Slot
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.peer import IceServer
from pyapp.browser.signaling import SignalingClient
from pyapp.exceptions import (
    ConnectionClosedError,
    DialTimeout,
    LimitExceeded,
    LocalProtocolError,
    OperationTimeout,
    PyAppError,
    SignalingError,
)

__all__ = ["BOOTSTRAP_LABEL", "Dialer", "LoopbackDialer", "SignalingDialer"]

BOOTSTRAP_LABEL = "pyapp-pool"
"""Label of the data channel a dialer opens to force negotiation (closed once open)."""

GC_EVERY = 32
"""Run the cycle collector after this many hang-ups (see :func:`_count_hang_up`)."""
_hang_ups = 0


def _count_hang_up() -> None:
    # A closed Connection sits in reference cycles (its channels and
    # callbacks point back at it) that only the cycle collector frees, and until
    # its JsProxy is freed the RTCConnection stays reachable from JS, where
    # Chromium counts it against a per-page limit ("Cannot create so many
    # Connections", ~500 here). A pool that churns connections must collect.
    global _hang_ups
    _hang_ups += 1
    if _hang_ups % GC_EVERY == 0:
        gc.collect()


class Dialer(Protocol):
    """How the pool opens and closes connections to peers."""

    async def dial(self, peer_id: str, resume: str | None = None) -> Connection:
        """Open a connection to ``peer_id`` and return it once ``connected``.

        ``resume`` (a MuxSession's ``resume_token``) asks the peer to continue its
        multiplexer session on the new connection. On failure or cancellation
        nothing may be left open.
        """
        ...

    def hang_up(self, peer_id: str, pc: Connection) -> None:
        """Close ``pc`` (and tell the remote, if the dialer can)."""
        ...


async def _wait_ready(pc: Connection, timeout: float) -> None:
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
        self.remotes: dict[str, Connection] = {}
        self.dials = 0
        self.fail_next: list[Exception] = []

    async def dial(self, peer_id: str, resume: str | None = None) -> Connection:
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
            # Drop closed remotes: Chromium counts every RTCConnection still
            # reachable from JS against its per-page limit ("Cannot create so
            # many Connections"), closed or not.
            if state == "closed" and self.remotes.get(peer_id) is b:
                del self.remotes[peer_id]

        a.events.on("connectionstatechange", on_local_state)
        b.events.on("connectionstatechange", on_remote_state)
        return a

    def hang_up(self, peer_id: str, pc: Connection) -> None:
        pc.close()
        _count_hang_up()


@dataclass
class _Remote:
    """A connection the signaling dialer routes signals to."""

    cid: str
    pc: Connection
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
    id per RTCConnection, so a redial is told apart from a renegotiation and
    late signals of a closed connection are dropped. Signals without the key
    belong to someone else (the chat app) and are left alone.

    An offer under an unknown connection id from another peer asks ``limiter``
    for an *inbound* slot (deadline ``inbound_timeout``): granted → a polite
    Connection answers it and ``incoming`` fires with ``(peer_id, pc)``;
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
                resume: str | None = None) -> Connection:
        client = self.client

        def signal(message: dict[str, Any]) -> Any:
            extra = {"resume": resume} if resume is not None and "description" in message else {}
            return client.send_signal(peer_id, {**message, "pool": cid, **extra})

        return Connection(signal=signal, polite=polite, ice_servers=self.ice_servers)

    async def dial(self, peer_id: str, resume: str | None = None) -> Connection:
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

    def hang_up(self, peer_id: str, pc: Connection) -> None:
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

    def _orphan(self, peer_id: str, pc: Connection) -> None:
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

    async def _apply_signal(self, sender: str, pc: Connection, body: dict[str, Any]) -> None:
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


