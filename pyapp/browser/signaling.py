"""``SignalingClient``: the page's WebSocket client for the signaling server.

It joins a room, relays signals to named peers, and reconnects by itself after a
drop (exponential backoff), rejoining the room under the same peer id so the
other peers' connections are not disturbed. Signals sent while disconnected are
queued (bounded) and flushed on reconnect. A heartbeat (ping/pong) detects a
dead server that the browser has not noticed yet.

When the server refuses something (a rate limit, a full room, too many
connections from this address, a message too large ...) it sends an ``error``
with a code and, if it also closes the socket, a close whose reason names that
code. Both become :class:`~pyapp.exceptions.SignalingRefusedError` (``code``,
``text``, ``ref``, ``close_code``): emitted as the ``error`` event, and raised by
:meth:`SignalingClient.join` when the join is refused. After a close the server
explained, the reconnect waits at least ``refused_backoff`` seconds.

Example (in the page)::

    client = SignalingClient(default_url())
    client.events.on("signal", lambda sender, data: print(sender, data))
    welcome = await client.join("lobby")
    print("I am", welcome.peer_id, "and see", welcome.peers)
    await client.send_signal(welcome.peers[0], {"hello": 1})
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import js

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, call_js, spawn
from pyapp.browser.timer import now as _now
from pyapp.core.signaling import (
    ErrorMessage,
    IceServers,
    Join,
    Leave,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    RelayedSignal,
    Signal,
    Welcome,
    encode,
    parse_server_message,
    refusal,
    refusal_from_close,
)
from pyapp.exceptions import (
    ConnectionClosedError,
    LocalProtocolError,
    OperationTimeout,
    SignalingError,
    SignalingRefusedError,
    SignalingUnreachableError,
)

__all__ = ["SignalingClient", "default_url"]


def default_url() -> str:
    """``ws(s)://<this page's host>/ws``."""
    loc = js.location
    scheme = "wss" if str(loc.protocol) == "https:" else "ws"
    return f"{scheme}://{loc.host}/ws"


class SignalingClient:
    """Events (``client.events.on(name, cb)``): ``state`` (connecting/open/reconnecting/closed),
    ``welcome`` (Welcome), ``ice-servers`` (the new :attr:`ice_servers` list: fresh TURN
    credentials from a welcome or a push), ``peer-joined`` / ``peer-left`` (peer id), ``signal`` (sender, data),
    ``error`` (:class:`SignalingRefusedError` for what the server refused, with its
    ``code``; another :class:`SignalingError` for a malformed server message),
    ``reconnect-failed`` (the :class:`SignalingError` of a failed reconnect attempt,
    usually :class:`SignalingUnreachableError`; the next one waits twice as long,
    ``min_backoff`` up to ``max_backoff`` seconds).
    """

    def __init__(self, url: str, *, reconnect: bool = True, min_backoff: float = 0.25,
                 max_backoff: float = 8.0, ping_interval: float = 10.0,
                 ping_timeout: float = 5.0, max_queued: int = 256,
                 refused_backoff: float = 2.0) -> None:
        self.url = url
        self.reconnect = reconnect
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_queued = max_queued
        self.refused_backoff = refused_backoff
        self.last_refusal: SignalingRefusedError | None = None
        """The last refusal the server sent (error message or explained close)."""
        self.events = Emitter()
        self.state = "closed"
        self.room: str | None = None
        self.peer_id: str | None = None
        self.peers: set[str] = set()
        self.reconnects = 0
        self.ice_servers: list[dict[str, Any]] = []
        """The newest ICE servers (TURN credentials) from the server, for new connections."""
        self.ice_expires: int | None = None
        """Unix time the credentials in :attr:`ice_servers` stop working (None: no TURN)."""
        self._ws: Any = None
        self._owner: ProxyOwner | None = None
        self._closing = False
        self._attempt: asyncio.Future[bool] | None = None
        """The current socket's outcome: True once it opened, False if it closed before."""
        self._attempt_close: tuple[int, str] = (1006, "")
        self._ever_opened = False
        self._welcome: asyncio.Future[Welcome] | None = None
        self._queue: deque[str] = deque()
        self._ping_task: asyncio.Task[Any] | None = None
        self._reconnect_task: asyncio.Task[Any] | None = None
        self._last_pong = 0.0
        self._ping_id = 0

    # ------------------------------------------------------------------ socket

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.events.emit("state", state)

    def _open_socket(self) -> None:
        self._set_state("connecting" if self.reconnects == 0 else "reconnecting")
        self._attempt = asyncio.get_event_loop().create_future()
        self._ws = call_js(js.WebSocket.new, self.url)
        owner = self._owner = ProxyOwner("signaling socket")
        owner.listen(self._ws, "open", self._on_open)
        owner.listen(self._ws, "message", self._on_message)
        owner.listen(self._ws, "close", self._on_close)

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the WebSocket (no-op if open).

        Raises :class:`SignalingUnreachableError` as soon as the socket closes before
        opening (nothing listens there, or the server refused the upgrade), the
        server's :class:`SignalingRefusedError` if it closed it with a reason, and
        :class:`~pyapp.exceptions.OperationTimeout` if it neither opens nor closes
        within ``timeout`` seconds. A reconnect already under way is waited for.
        """
        if self._closing:
            raise ConnectionClosedError("signaling client is closed: make a new SignalingClient")
        if self.state == "open":
            return
        if self._ws is None:
            self._open_socket()
        assert self._attempt is not None
        await self._await_attempt(self._attempt, timeout)

    async def _await_attempt(self, attempt: asyncio.Future[bool], timeout: float) -> None:
        try:
            opened = await asyncio.wait_for(asyncio.shield(attempt), timeout)
        except TimeoutError:
            raise OperationTimeout(
                f"the signaling connection to {self.url} neither opened nor failed within "
                f"{timeout} s: check the network and the server, or raise the timeout",
                operation="signaling connect", timeout=timeout) from None
        if not opened:
            code, reason = self._attempt_close
            refused = refusal_from_close(code, reason)
            if refused is not None:
                raise refused
            raise SignalingUnreachableError(self.url, code, reason)

    def _on_open(self, _event: Any) -> None:
        self._set_state("open")
        self._ever_opened = True
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(True)
        self._last_pong = _now()
        if self._ping_task is None or self._ping_task.done():
            self._ping_task = spawn(self._ping_loop(), "signaling heartbeat")
        if self.room is not None:  # a reconnect: rejoin under the same id
            self._raw_send(encode(Join(room=self.room, peer_id=self.peer_id)))
        while self._queue and self.room is None:
            self._raw_send(self._queue.popleft())

    def _on_close(self, event: Any) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        self._ws = None
        code = int(getattr(event, "code", 1006) or 1006)
        reason = str(getattr(event, "reason", "") or "")
        if self._attempt is not None and not self._attempt.done():
            self._attempt_close = (code, reason)
            self._attempt.set_result(False)  # wakes connect() or the reconnect loop now
        refused = refusal_from_close(code, reason) if not self._closing else None
        if refused is not None:
            self._refused(refused)
        reconnecting = self._reconnect_task is not None and not self._reconnect_task.done()
        if reconnecting and not self._closing:
            return  # the loop saw the failed attempt; it backs off and tries again
        if self._closing or not self.reconnect or not self._ever_opened:
            # Never opened: connect() reports it (SignalingUnreachableError); no retries
            # behind the caller's back.
            self._set_state("closed")
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(refused or ConnectionClosedError(
                    f"signaling closed (code {code}): {reason or 'no reason given'}"))
            return
        self._set_state("reconnecting")
        if self._reconnect_task is None or self._reconnect_task.done():
            first = max(self.min_backoff, self.refused_backoff) if refused else self.min_backoff
            self._reconnect_task = spawn(self._reconnect_loop(first), "signaling reconnect")

    def _refused(self, error: SignalingRefusedError) -> None:
        self.last_refusal = error
        if error.ref == "join" and self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)
        self.events.emit("error", error)

    async def _reconnect_loop(self, first: float | None = None) -> None:
        """Retry after ``first`` s, doubling up to ``max_backoff`` while attempts fail."""
        delay = first if first is not None else self.min_backoff
        while not self._closing:
            await asyncio.sleep(delay)
            if self._closing:
                return
            if self._ws is None:
                self.reconnects += 1
                self._open_socket()
            assert self._attempt is not None
            try:
                await self._await_attempt(self._attempt, 10.0)
                return
            except OperationTimeout:
                if self._ws is not None:  # a socket that hangs: give up on it, try a new one
                    self._ws.close(4002, "connect timeout")
            except SignalingError as exc:
                self.events.emit("reconnect-failed", exc)
            delay = min(self.max_backoff, max(delay * 2, self.min_backoff))

    async def _ping_loop(self) -> None:
        while not self._closing and self._ws is not None:
            await asyncio.sleep(self.ping_interval)
            if self._ws is None or self.state != "open":
                return
            if _now() - self._last_pong > self.ping_interval + self.ping_timeout:
                self._ws.close(4000, "heartbeat timeout")  # _on_close reconnects
                return
            self._ping_id += 1
            self._raw_send(encode(Ping(id=self._ping_id)))

    def _raw_send(self, text: str) -> None:
        if self._ws is None or self.state != "open":
            if len(self._queue) >= self.max_queued:
                raise LocalProtocolError(
                    f"signaling is down and {self.max_queued} messages are already queued")
            self._queue.append(text)
            return
        call_js(self._ws.send, text)

    # ------------------------------------------------------------------ messages

    def _on_message(self, event: Any) -> None:
        try:
            msg = parse_server_message(str(event.data))
        except SignalingError as exc:
            self.events.emit("error", exc)
            return
        if isinstance(msg, Welcome):
            self.room, self.peer_id = msg.room, msg.peer_id
            self.peers = set(msg.peers)
            self._set_ice_servers(msg.ice_servers, msg.ice_expires)
            while self._queue:
                self._raw_send(self._queue.popleft())
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(msg)
            self.events.emit("welcome", msg)
        elif isinstance(msg, IceServers):
            self._set_ice_servers(msg.ice_servers, msg.expires)
        elif isinstance(msg, PeerJoined):
            self.peers.add(msg.peer_id)
            self.events.emit("peer-joined", msg.peer_id)
        elif isinstance(msg, PeerLeft):
            self.peers.discard(msg.peer_id)
            self.events.emit("peer-left", msg.peer_id)
        elif isinstance(msg, RelayedSignal):
            self.events.emit("signal", msg.sender, msg.data)
        elif isinstance(msg, Pong):
            self._last_pong = _now()
        elif isinstance(msg, ErrorMessage):
            self._refused(refusal(msg))

    def _set_ice_servers(self, servers: tuple[dict[str, Any], ...], expires: int | None) -> None:
        self.ice_servers = [dict(s) for s in servers]
        self.ice_expires = expires
        if servers:
            self.events.emit("ice-servers", self.ice_servers)

    # ------------------------------------------------------------------ API

    async def join(self, room: str, timeout: float = 10.0) -> Welcome:
        """Join ``room``; returns the server's welcome (your id and the peers there).

        Raises :class:`SignalingRefusedError` if the server refuses the join
        (``room-full``, ``join-rate-limited``, ``room-rate-limited`` ...) or closes
        the connection with a reason before answering.
        """
        await self.connect(timeout)
        if self.room is not None:
            raise LocalProtocolError(f"already in room {self.room!r}")
        self._welcome = asyncio.get_event_loop().create_future()
        self._raw_send(encode(Join(room=room)))
        try:
            return await asyncio.wait_for(asyncio.shield(self._welcome), timeout)
        except TimeoutError:
            raise OperationTimeout(
                f"the signaling server at {self.url} did not answer the join of {room!r} "
                f"within {timeout} s: check that it is healthy, or raise the timeout",
                operation="signaling join", timeout=timeout) from None

    async def send_signal(self, to: str, data: dict[str, Any]) -> None:
        """Relay ``data`` to peer ``to`` (queued while reconnecting)."""
        if self._closing:
            raise ConnectionClosedError("signaling client is closed")
        self._raw_send(encode(Signal(to=to, data=data)))

    def leave(self) -> None:
        if self.room is not None and self.state == "open":
            self._raw_send(encode(Leave()))
        self.room = self.peer_id = None
        self.peers.clear()

    def drop_connection(self) -> None:
        """Close the socket as a network drop would (used by tests); it reconnects."""
        if self._ws is not None:
            self._ws.close(4001, "dropped")

    def close(self) -> None:
        """Leave, close the socket and stop reconnecting."""
        self.leave()
        self._closing = True
        for task in (self._ping_task, self._reconnect_task):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            self._ws.close(1000, "bye")
        else:
            self._set_state("closed")
