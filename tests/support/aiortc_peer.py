"""A standard WebRTC peer for interop tests: aiortc + pyapp.core, over the real signaling server.

Nothing here imports ``pyapp.browser``: the peer speaks the signaling protocol
(:mod:`pyapp.core.signaling`) over an aiohttp WebSocket, runs an aiortc
RTCPeerConnection (no ICE servers: host candidates only; aiortc skips
127.0.0.1, so the pages reach it on the machine's own non-loopback address),
and authenticates/encrypts with the sans-I/O core and the ``cryptography``
oracle. Playwright's sync API owns the main thread's event loop, so the peer
runs on its own loop in a thread (:class:`PeerThread`).

Example (inside a test, with ``server`` the real dev server)::

    t = PeerThread()
    sig = t.run(SignalingPeer.connect(server.url, "room-1"))
    peer = AiortcPeer(sig)
    ...
    t.run(peer.close()); t.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from pyapp.core.security.fingerprint import remote_fingerprints, sdp_fingerprints
from pyapp.core.security.handshake import Handshake, HandshakeComplete, HandshakeFailed
from pyapp.core.security.interface import KeyAgreementAlgorithm, SigningKey
from pyapp.core.security.keys import Role
from pyapp.core.security.reasons import AuthReason, auth_error
from pyapp.core.signaling import (
    Join,
    PeerJoined,
    PeerLeft,
    RelayedSignal,
    Signal,
    Welcome,
    encode,
    parse_server_message,
)
from tests.support.oracle_crypto import OracleCrypto

T = TypeVar("T")

AUTH_LABEL = "pyapp-auth"
AUTH_PROTOCOL = "pyapp-auth/1"
CLOSED = object()
"""Put in a channel's inbox when it closes."""

SdpFilter = Callable[[str], str]


class PeerThread:
    """An asyncio loop on its own thread; :meth:`run` blocks, :meth:`submit` does not."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aiortc-peer", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class SignalingPeer:
    """A client of the real signaling server (pyapp.core.signaling over aiohttp)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 welcome: Welcome) -> None:
        self._session = session
        self._ws = ws
        self.welcome = welcome
        self.peer_id = welcome.peer_id
        self.joined: asyncio.Queue[str] = asyncio.Queue()
        self.left: list[str] = []
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}
        self._early: dict[str, list[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Future[None]] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, base_url: str, room: str) -> SignalingPeer:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(re.sub("^http", "ws", base_url) + "/ws",
                                      headers={"Origin": base_url})
        await ws.send_str(encode(Join(room=room)))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"signaling socket closed before the welcome: {msg!r}")
            parsed = parse_server_message(msg.data)
            if isinstance(parsed, Welcome):
                return cls(session, ws, parsed)

    def on_signal(self, sender: str, handler: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Route ``sender``'s signals to ``handler`` (in order; earlier ones are replayed)."""
        self._handlers[sender] = handler
        early = self._early.pop(sender, [])
        if early:
            async def replay() -> None:
                for data in early:
                    await handler(data)

            self._tasks.append(asyncio.ensure_future(replay()))

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            parsed = parse_server_message(msg.data)
            if isinstance(parsed, RelayedSignal):
                handler = self._handlers.get(parsed.sender)
                if handler is None:
                    self._early.setdefault(parsed.sender, []).append(parsed.data)
                else:
                    await handler(parsed.data)
            elif isinstance(parsed, PeerJoined):
                self.joined.put_nowait(parsed.peer_id)
            elif isinstance(parsed, PeerLeft):
                self.left.append(parsed.peer_id)

    async def send_signal(self, to: str, data: dict[str, Any]) -> None:
        await self._ws.send_str(encode(Signal(to=to, data=data)))

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._session.close()


class Channel:
    """An aiortc data channel with an inbox (``receive``) and an awaitable open."""

    def __init__(self, dc: RTCDataChannel) -> None:
        self.dc = dc
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._open = asyncio.Event()
        if dc.readyState == "open":
            self._open.set()
        dc.on("open", self._open.set)
        dc.on("message", self.inbox.put_nowait)
        dc.on("close", lambda: self.inbox.put_nowait(CLOSED))

    @property
    def label(self) -> str:
        return str(self.dc.label)

    @property
    def id(self) -> int | None:
        return self.dc.id

    async def wait_open(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._open.wait(), timeout)

    def send(self, data: bytes | str) -> None:
        self.dc.send(data)

    async def receive(self, timeout: float = 10.0) -> bytes | str:
        item = await asyncio.wait_for(self.inbox.get(), timeout)
        if item is CLOSED:
            raise ConnectionError(f"data channel {self.label!r} closed")
        return item


class AiortcPeer:
    """One aiortc RTCPeerConnection to one page, signaled through :class:`SignalingPeer`.

    ``sdp_filter`` rewrites every description this peer *sends* (e.g. to cut
    the fingerprint lines to one); its own local description stays aiortc's.
    """

    def __init__(self, signaling: SignalingPeer, remote_id: str, *,
                 sdp_filter: SdpFilter | None = None) -> None:
        self.signaling = signaling
        self.remote_id = remote_id
        self.sdp_filter = sdp_filter
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.incoming: asyncio.Queue[Channel] = asyncio.Queue()
        self.channels: list[Channel] = []
        self.sent_sdp: list[str] = []
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)
        signaling.on_signal(remote_id, self.handle_signal)

    def _on_datachannel(self, dc: RTCDataChannel) -> None:
        ch = Channel(dc)
        self.channels.append(ch)
        self.incoming.put_nowait(ch)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._failed.set()

    def create_channel(self, label: str, **options: Any) -> Channel:
        ch = Channel(self.pc.createDataChannel(label, **options))
        self.channels.append(ch)
        return ch

    async def accept(self, label: str, timeout: float = 10.0) -> Channel:
        """The next channel the page opened with ``label`` (others stay in ``channels``)."""
        for ch in self.channels:
            if ch.label == label and ch.dc.negotiated is False and not getattr(ch, "_taken", False):
                ch._taken = True  # type: ignore[attr-defined]
                return ch
        while True:
            ch = await asyncio.wait_for(self.incoming.get(), timeout)
            if ch.label == label and not getattr(ch, "_taken", False):
                ch._taken = True  # type: ignore[attr-defined]
                return ch

    async def _send_description(self) -> None:
        desc = self.pc.localDescription
        sdp = self.sdp_filter(desc.sdp) if self.sdp_filter else desc.sdp
        self.sent_sdp.append(sdp)
        await self.signaling.send_signal(self.remote_id,
                                         {"description": {"type": desc.type, "sdp": sdp}})

    async def dial(self) -> None:
        """Send an offer (create the channels first: aiortc needs one for the SCTP m-line)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send_description()  # aiortc gathers first: candidates are in the SDP

    async def handle_signal(self, data: dict[str, Any]) -> None:
        if "description" in data:
            desc = data["description"]
            await self.pc.setRemoteDescription(RTCSessionDescription(desc["sdp"], desc["type"]))
            if desc["type"] == "offer":
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send_description()
        elif "candidate" in data:
            cand = data["candidate"]
            if not cand or not cand.get("candidate"):
                return  # end of candidates
            ice = candidate_from_sdp(cand["candidate"].split(":", 1)[1])
            ice.sdpMid = cand.get("sdpMid")
            ice.sdpMLineIndex = cand.get("sdpMLineIndex")
            await self.pc.addIceCandidate(ice)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        waiters = [asyncio.ensure_future(self._connected.wait()),
                   asyncio.ensure_future(self._failed.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not self._connected.is_set():
            raise ConnectionError(f"aiortc peer connection is {self.pc.connectionState}")

    async def close(self) -> None:
        await self.pc.close()


def keep_one_fingerprint(which: str = "sha-256") -> SdpFilter:
    """An SDP filter that keeps only the ``which`` a=fingerprint line(s)."""

    def cut(sdp: str) -> str:
        lines = sdp.split("\r\n")
        return "\r\n".join(line for line in lines
                           if not line.startswith("a=fingerprint:")
                           or line.lower().startswith(f"a=fingerprint:{which}"))

    return cut


async def authenticate(peer: AiortcPeer, identity: SigningKey, role: Role, *,
                       control: Channel | None = None, crypto: OracleCrypto | None = None,
                       timeout: float = 10.0,
                       ephemeral_alg: KeyAgreementAlgorithm = KeyAgreementAlgorithm.X25519,
                       **options: Any) -> tuple[HandshakeComplete, Channel]:
    """pyapp's handshake from the aiortc side, on the ``pyapp-auth`` channel.

    The OFFERER creates the control channel (or passes ``control``), the
    ANSWERER adopts the page's. Raises ``AuthenticationError`` with its reason
    (after sending the handshake's ALERT, as the page does). ``options`` go to
    :class:`~pyapp.core.security.handshake.Handshake` (``expected_peer_id=`` ...).
    """
    crypto = crypto or OracleCrypto()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    local_fps = sdp_fingerprints(peer.pc.localDescription.sdp)
    remote_fp = remote_fingerprints(peer.pc.remoteDescription.sdp)
    if control is None:
        if role is Role.OFFERER:
            control = peer.create_channel(AUTH_LABEL, protocol=AUTH_PROTOCOL)
        else:
            control = await peer.accept(AUTH_LABEL, timeout)
    await control.wait_open(max(0.1, deadline - loop.time()))
    hs = Handshake(crypto, role, identity, local_fps, remote_fp, now=loop.time(),
                   timeout=deadline - loop.time(), ephemeral_alg=ephemeral_alg, **options)
    await hs.start()
    while True:
        for msg in hs.data_to_send():
            control.send(msg)
        event = hs.next_event()
        if isinstance(event, HandshakeComplete):
            return event, control
        if isinstance(event, HandshakeFailed):
            raise event.error
        timer = hs.get_timer()
        assert timer is not None
        try:
            data = await control.receive(max(0.0, timer - loop.time()))
        except TimeoutError:
            hs.handle_timer(loop.time())
            continue
        except ConnectionError as exc:
            hs.connection_lost(str(exc))
            continue
        await hs.receive_message(data.encode() if isinstance(data, str) else data, loop.time())


__all__ = [
    "AUTH_LABEL",
    "AiortcPeer",
    "AuthReason",
    "Channel",
    "PeerThread",
    "SignalingPeer",
    "authenticate",
    "auth_error",
    "keep_one_fingerprint",
]
