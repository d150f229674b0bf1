"""One signaling client on the server: its socket, its outbound queue, its limits.

Delivery to a client never waits for that client. Messages for it go into a
bounded queue (messages and bytes) that one writer task empties; a client whose
queue overflows is dropped: it leaves its room at once (its peers get
``peer-left``), and its socket is closed with ``slow-consumer`` without waiting
for the backlog to drain.

Every refusal reaches the client: an ``error`` message with a code and a text
goes out first, then the close, whose reason names the same code. Closing never
resets the socket while the client is still sending: the server keeps reading
(and discarding) until the client's close frame and FIN arrive, or for at most
``Limits.close_timeout`` seconds, then aborts. aiohttp's own closes (a frame over
the size limit, invalid UTF-8, a protocol error) get the same treatment and a
reason, through :class:`SignalingSocket`.

Example (what ``web.server`` does per WebSocket)::

    ws = SignalingSocket(limits)
    await ws.prepare(request)
    session = ClientSession(ws, broker, store, limits, address)
    await session.run()          # returns once the socket is fully closed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from pyapp.core.signaling import (
    ErrorMessage,
    Join,
    Leave,
    Ping,
    Pong,
    ServerMessage,
    Signal,
    TokenBucket,
    Welcome,
    close_reason,
    encode,
    parse_client_message,
)
from pyapp.exceptions import BrokerUnavailable, RoomFull, SignalingMessageError, UnknownPeer
from web.broker import Broker
from web.limits import Limits, LimitStore, ThrottledLog
from web.turn import TurnIssuer

log = logging.getLogger("pyapp.server")
throttled_log = ThrottledLog(log)
"""What clients did wrong, for the operator; throttled, since a client can repeat it at will."""

__all__ = ["SignalingSocket", "ClientSession", "LINGERS", "track_lingers"]

_FAIR_SHARE = 16
"""Messages handled from one client before letting the others run."""

_CLOSE_EVENTS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)

_WRITE_NOW_LIMIT = 64 * 1024
"""Bytes the socket may hold unsent for :meth:`SignalingSocket.send_now` to add more (aiohttp's
own write limit); past it, messages wait in the client's queue and the writer waits for the drain."""


def _text_frame(text: str) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 section 5.2), as a server sends it."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class SignalingSocket(web.WebSocketResponse):
    """aiohttp's server WebSocket, with reasons on its own closes and a clean linger.

    aiohttp closes a socket itself when a frame is over ``max_msg_size`` (1009),
    a text frame is not UTF-8 (1007) or a frame breaks the protocol (1002), with
    an empty reason, and then closes the TCP connection at once; a client still
    sending (the rest of a 10 MB frame) then gets a reset that discards what the
    server sent it. Here those closes send an ``error`` message and a reason
    first, and every transport close lingers: FIN after the last byte, keep
    reading until the client's FIN or ``close_timeout``, then abort.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__(heartbeat=limits.heartbeat or None, max_msg_size=limits.max_message_bytes,
                         timeout=limits.close_timeout, compress=False)
        self.limits = limits
        self._linger: asyncio.Task[None] | None = None

    def _reasons(self) -> dict[int, tuple[str, str]]:
        return {
            WSCloseCode.MESSAGE_TOO_BIG: (
                "too-large", f"message larger than {self.limits.max_message_bytes} bytes"),
            WSCloseCode.INVALID_TEXT: ("bad-utf8", "text frame is not valid UTF-8"),
            WSCloseCode.PROTOCOL_ERROR: ("protocol-error", "frame breaks the WebSocket protocol"),
        }

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"",
                    drain: bool = True) -> bool:
        explained = self._reasons().get(code)
        if explained is not None and not message and not self.closed:
            error_code, text = explained
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_str(encode(ErrorMessage(code=error_code, message=text)))
            message = close_reason(error_code, text).encode()
        try:
            return await asyncio.wait_for(
                super().close(code=code, message=message, drain=False), self.limits.close_timeout)
        except TimeoutError:
            self.abort()
            return True

    def _close_transport(self) -> None:
        # aiohttp calls this to end the connection; linger instead of closing under the client.
        transport = self._req.transport if self._req is not None else None
        if transport is None or self._linger is not None:
            return
        task = self._linger = asyncio.ensure_future(_linger(transport, self.limits.close_timeout))
        tracked = self._req.app.get(LINGERS) if self._req is not None else None
        tasks = tracked if tracked is not None else _UNTRACKED
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def write_room(self) -> int:
        """Bytes :meth:`send_now` may add now: 0 once closed or past ``_WRITE_NOW_LIMIT`` unsent."""
        transport = self._req.transport if self._req is not None else None
        if self.closed or transport is None or transport.is_closing():
            return 0
        return max(0, _WRITE_NOW_LIMIT - transport.get_write_buffer_size())

    def send_now(self, texts: Iterable[str]) -> None:
        """Write text messages now, in one write (call when :meth:`write_room` is > 0).

        ``send_str`` writes one frame per call (a system call each, and it runs
        on the writer task's turn of the loop, one turn after the relay); this is
        one write for a backlog, at once. Compression is off (``__init__``), so
        the frames need no deflate state. ``send_str`` remains the way once the
        socket holds ``_WRITE_NOW_LIMIT`` unsent: it waits for the drain.
        """
        transport = self._req.transport if self._req is not None else None
        assert transport is not None
        transport.write(b"".join([_text_frame(text) for text in texts]))

    def abort(self) -> None:
        """Drop the connection now (the client is not reading, or the close timed out)."""
        transport = self._req.transport if self._req is not None else None
        if transport is not None:
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait for the linger to end (bounded by ``close_timeout``), then let go of the connection."""
        if self._linger is not None:
            await self._linger
        self._let_go()

    def _let_go(self) -> None:
        # aiohttp's connection keeps the heartbeat callback (a bound method of this
        # socket) after the connection is lost (aiohttp 3.14). That ties this socket, its request and
        # the connection's objects (some 40) in a cycle only the cyclic collector frees;
        # with clients connecting by the hundred per second (a reconnect flood), that
        # garbage is what made the collector's full passes long. The handler is done
        # with the socket, so the callback has nothing left to do.
        protocol = self._req.protocol if self._req is not None else None
        if protocol is not None and getattr(protocol, "_data_received_cb", None) is not None:
            protocol._data_received_cb = None
        # Its heartbeat timer may be armed again by data read just before the close
        # (a bound method of this socket, in a timer, in this socket: a cycle too).
        self._cancel_heartbeat()
        # The same for the error that closed it (a frame over the limit): its traceback
        # holds the frames that hold this socket. It has been logged; the frames go.
        error = self.exception()
        if error is not None:
            error.__traceback__ = None


LINGERS = web.AppKey("lingers", set[asyncio.Task[None]])
"""The app's lingering closes (see :func:`track_lingers`): awaited on cleanup."""

_UNTRACKED: set[asyncio.Task[None]] = set()
"""Lingers of an app without :func:`track_lingers` (kept referenced until they end)."""


def track_lingers(app: web.Application) -> None:
    """Keep the app's lingering closes in ``app[LINGERS]``; cleanup waits for them.

    Call before the app starts (``make_app`` should). On cleanup each linger is
    awaited: it ends on the client's FIN or after ``close_timeout`` (transport
    aborted), so none is left pending when the loop closes.
    """
    app[LINGERS] = set()
    app.on_cleanup.append(_end_lingers)


async def _end_lingers(app: web.Application) -> None:
    # Each linger ends by itself within its close_timeout; if cleanup is cancelled,
    # gather cancels them (each aborts its transport).
    tasks = set(app[LINGERS])
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


class _Lingering(asyncio.Protocol):
    """Stands in for aiohttp's protocol while a closed socket lingers.

    It reads and discards what the client still sends (nothing left unread when
    the socket closes, so the kernel sends no reset over what we sent), closes on
    the client's FIN, and resolves ``lost`` when the connection is gone; aiohttp's
    protocol still gets ``connection_lost`` for its own cleanup.
    """

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        del data  # the rest of what the client was sending: read, and dropped

    def eof_received(self) -> bool:
        return False  # the client's FIN: let the transport close

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.inner.connection_lost(exc)


async def _linger(transport: asyncio.BaseTransport, timeout: float) -> None:
    assert isinstance(transport, asyncio.WriteTransport)
    if transport.is_closing():
        return
    if transport.can_write_eof():
        # FIN after what is buffered: the client reads everything, then sees the end.
        try:
            transport.write_eof()
        except OSError:  # the client is already gone (reset): nothing left to linger for
            transport.abort()
            return
    watcher = _Lingering(transport.get_protocol())
    transport.set_protocol(watcher)
    if isinstance(transport, asyncio.ReadTransport) and not transport.is_reading():
        transport.resume_reading()  # aiohttp may have paused it; the FIN must be read
    try:
        await asyncio.wait_for(asyncio.shield(watcher.lost), timeout)
    except TimeoutError:
        transport.abort()  # the client never finished: drop it
    except asyncio.CancelledError:
        transport.abort()
        raise


class ClientSession:
    """One WebSocket client: limits, validates and relays what it sends; queues what it gets."""

    def __init__(self, ws: SignalingSocket, broker: Broker, store: LimitStore, limits: Limits,
                 address: str, clock: Callable[[], float] = time.monotonic,
                 turn: TurnIssuer | None = None) -> None:
        self.ws = ws
        self.turn = turn
        self._ice_refresh: asyncio.Task[None] | None = None
        self.broker = broker
        self.store = store
        self.limits = limits
        self.address = address
        self.clock = clock
        self.room: str | None = None
        self.peer_id: str | None = None
        self.bucket = TokenBucket(limits.messages_per_second, limits.burst, clock())
        self.strikes = 0
        self.closing: tuple[int, str] | None = None
        """(close code, reason) once the session decided to close."""
        self._queue: deque[str] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._receiving = False
        self._task: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._leaving: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ outbound

    async def deliver(self, message: ServerMessage) -> None:
        """The broker's callback: queue ``message``; never waits for this client."""
        self.deliver_nowait(message)

    def deliver_nowait(self, message: ServerMessage, at_once: bool = True) -> bool:
        """Queue ``message``; False if this client is closing or was just dropped for it.

        With ``at_once`` (a relay from another client) it is written now if the
        socket has room; without (this client's own replies, made while its
        messages are handled a batch at a time) it goes out on the writer's turn,
        with the rest of the batch's replies in one write.
        """
        if self.closing is not None:
            return False
        if isinstance(message, ErrorMessage) and message.code == "evicted":
            self.room = self.peer_id = None  # the broker already took it out of the room
        text = encode(message)
        if (len(self._queue) >= self.limits.queue_messages
                or self._queued_bytes + len(text) > self.limits.queue_bytes):
            throttled_log.warning("slow-consumer", "client %s at %s does not read (%d messages, "
                                  "%d bytes queued); dropping it", self.peer_id, self.address,
                                  len(self._queue), self._queued_bytes)
            self._leaving = asyncio.ensure_future(self.leave())
            self.refuse("slow-consumer", f"more than {self.limits.queue_messages} messages or "
                        f"{self.limits.queue_bytes} bytes waiting for you to read them",
                        WSCloseCode.POLICY_VIOLATION)
            return False
        self._push(text, at_once)
        return True

    def _push(self, text: str, at_once: bool = False) -> None:
        self._queue.append(text)
        self._queued_bytes += len(text)
        # Nothing older waiting and the socket has room: out now, not on the writer's turn.
        if not at_once or len(self._queue) > 1 or not self._flush():
            self._wakeup.set()

    def _flush(self) -> bool:
        """Write from the queue what the socket takes without waiting; True if none is left.

        What does not fit stays counted in the queue, so its limits still
        bound what a client that does not read holds (the socket's share is
        at most ``_WRITE_NOW_LIMIT`` and one message).
        """
        queue = self._queue
        room = self.ws.write_room()
        if room <= 0:
            return not queue
        batch: list[str] = []
        while queue and (not batch or len(queue[0]) <= room):
            text = queue.popleft()
            room -= len(text)
            self._queued_bytes -= len(text)
            batch.append(text)
        self.ws.send_now(batch)
        return not queue

    async def _write_loop(self) -> None:
        ws = self.ws
        queue = self._queue
        try:
            while True:
                while not queue:
                    if self.closing is not None:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self._flush():  # the backlog, in one write
                    continue
                text = queue.popleft()
                self._queued_bytes -= len(text)
                await ws.send_str(text)  # waits for the drain: this client reads slowly
        except (ConnectionError, RuntimeError) as exc:  # the transport went away under us
            log.debug("writer for %s stopped: %s", self.peer_id, exc)

    def refuse(self, code: str, text: str, close_code: int | None = None,
               ref: str | None = None) -> None:
        """Send ``error`` (past the queue limits); with ``close_code``, then close with its reason."""
        if self.closing is not None:
            return
        self._push(encode(ErrorMessage(code=code, message=text, ref=ref)))
        if close_code is not None:
            self.closing = (close_code, close_reason(code, text))
            self._wakeup.set()
            if self._receiving and self._task is not None:
                self._task.cancel()  # break out of receive(); run() closes

    # ------------------------------------------------------------------ inbound

    async def run(self) -> None:
        """Serve the client until its socket is closed (by either side)."""
        self._task = asyncio.current_task()
        self._writer = asyncio.ensure_future(self._write_loop())
        ws = self.ws
        unyielded = 0
        try:
            while self.closing is None:
                if unyielded >= _FAIR_SHARE:
                    # receive() does not suspend while frames are buffered: a client that
                    # sent thousands at once would hold the loop from everyone else.
                    unyielded = 0
                    await asyncio.sleep(0)
                unyielded += 1
                self._receiving = True
                try:
                    msg = await ws.receive()
                except asyncio.CancelledError:
                    if self.closing is None or self._task is None:
                        raise
                    self._task.uncancel()
                    break
                finally:
                    self._receiving = False
                if msg.type == WSMsgType.TEXT:
                    await self.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.refuse("bad-message", "binary messages are not part of the protocol")
                elif msg.type in _CLOSE_EVENTS:
                    if msg.type == WSMsgType.ERROR:
                        throttled_log.info("ws-error", "websocket error from %s at %s: %s",
                                           self.peer_id, self.address, ws.exception())
                    break
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        await self.leave()
        if self._leaving is not None:
            await self._leaving
        writer = self._writer
        assert writer is not None
        ws = self.ws
        if self.closing is not None and not ws.closed:
            code, reason = self.closing
            # What was queued before the refusal goes first, but never waits on a slow reader.
            self._wakeup.set()
            done, _ = await asyncio.wait({writer}, timeout=self.limits.close_timeout / 2)
            if not done:
                writer.cancel()
            await ws.close(code=code, message=reason.encode())
        else:
            if self.closing is None:
                self.closing = (WSCloseCode.OK, "")
            self._wakeup.set()
            if not ws.closed:
                await ws.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await ws.wait_closed()

    async def handle_text(self, text: str) -> None:
        if self.closing is not None:
            return
        wait = 0.0 if self.bucket.take(self.clock()) else 1.0 / self.limits.messages_per_second
        if not wait and self.limits.address_messages_per_second > 0:
            wait = await self.store.take(f"msg:{self.address}",
                                         self.limits.address_messages_per_second,
                                         float(max(1, self.limits.address_burst)))
        if wait:
            self.strikes += 1
            if self.strikes >= self.limits.flood_strikes:
                self.refuse("flooding", f"{self.strikes} messages in a row over the rate limit",
                            WSCloseCode.POLICY_VIOLATION)
            else:
                self.refuse("rate-limited",
                            f"over {self.limits.messages_per_second:g} messages/s per connection "
                            f"or {self.limits.address_messages_per_second:g} per address; "
                            f"message dropped, retry in {wait:.2f} s")
            return
        self.strikes = 0
        try:
            msg = parse_client_message(text)
        except SignalingMessageError as exc:
            self.refuse(exc.code, exc.reason)
            return
        try:
            await self._dispatch(msg)
        except BrokerUnavailable as exc:
            self.refuse("unavailable", f"{exc}; try again shortly")

    async def _dispatch(self, msg: object) -> None:
        if isinstance(msg, Ping):
            self.deliver_nowait(Pong(id=msg.id), at_once=False)
        elif isinstance(msg, Join):
            await self._join(msg)
        elif isinstance(msg, Leave):
            await self.leave()
        elif isinstance(msg, Signal):
            if self.room is None or self.peer_id is None:
                self.refuse("not-joined", "join a room before sending signals", ref="signal")
                return
            try:
                await self.broker.relay(self.room, self.peer_id, msg.to, msg.data)
            except UnknownPeer as exc:
                self.refuse("unknown-peer", str(exc), ref="signal")

    async def _join(self, msg: Join) -> None:
        if self.room is not None:
            self.refuse("already-joined", f"already in room {self.room!r}; leave first", ref="join")
            return
        limits = self.limits
        if limits.joins_per_minute > 0:
            wait = await self.store.take(f"join:{self.address}", limits.joins_per_minute / 60,
                                         float(limits.joins_per_minute))
            if wait:
                self.refuse("join-rate-limited", f"over {limits.joins_per_minute} joins/min from "
                            f"your address; retry in {wait:.1f} s", ref="join")
                return
        try:
            peer_id, others = await self.broker.join(msg.room, msg.peer_id, self.deliver)
        except RoomFull as exc:
            self.refuse("room-full", str(exc), ref="join")
            return
        if not others and limits.rooms_per_minute > 0:
            # Nobody else there: this join created the room.
            wait = await self.store.take(f"room:{self.address}", limits.rooms_per_minute / 60,
                                         float(limits.rooms_per_minute))
            if wait:
                await self.broker.leave(msg.room, peer_id)
                self.refuse("room-rate-limited", f"over {limits.rooms_per_minute} new rooms/min "
                            f"from your address; retry in {wait:.1f} s", ref="join")
                return
        if self.closing is not None:  # dropped while joining: do not stay listed
            await self.broker.leave(msg.room, peer_id)
            return
        self.room, self.peer_id = msg.room, peer_id
        grant = self.turn.grant(peer_id) if self.turn is not None else None
        self.deliver_nowait(Welcome(room=msg.room, peer_id=peer_id, peers=tuple(others),
                                    ice_servers=grant.ice_servers if grant else (),
                                    ice_expires=grant.expires if grant else None))
        if grant is not None and self.turn is not None:  # fresh TURN credentials while joined
            self._ice_refresh = self.turn.keep_fresh(peer_id, grant, self.deliver)

    async def leave(self) -> None:
        if self._ice_refresh is not None:
            self._ice_refresh.cancel()
            self._ice_refresh = None
        if self.room is not None and self.peer_id is not None:
            room, peer_id = self.room, self.peer_id
            self.room = self.peer_id = None
            await self.broker.leave(room, peer_id)
