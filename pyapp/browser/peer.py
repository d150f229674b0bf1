"""``PeerConnection``: the thin wrapper of one RTCPeerConnection, with perfect negotiation.

It knows negotiation, data channels, tracks, states and events, and nothing of
pyapp's features: :class:`~pyapp.browser.connection.Connection` composes those
(multiplexer, media, power, stats, monitoring, security) around one wrapper.

Signaling is pluggable: give the connection a ``signal`` callable that delivers
a JSON-able dict to the remote peer (e.g. through
:class:`pyapp.browser.signaling.SignalingClient`), and feed what the remote
sends into :meth:`PeerConnection.handle_signal`. Either side may create data
channels or add tracks at any time; offers that collide are resolved by the
polite/impolite roles (:mod:`pyapp.core.negotiation`).

Example (in the page)::

    pc = PeerConnection(signal=lambda msg: client.send_signal(peer, msg), polite=True)
    chat = pc.create_data_channel("chat")
    await pc.wait_connected(timeout=10)
    await chat.send("hello")
    pc.close()
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import js

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, await_js, call_js, is_null, js_object, spawn
from pyapp.browser.datachannel import DataChannel
from pyapp.core.negotiation import NegotiationState
from pyapp.exceptions import (
    BrowserError,
    ConnectionClosedError,
    InvalidArgumentError,
    LocalProtocolError,
    OperationTimeout,
)

if TYPE_CHECKING:
    from pyapp.browser.connection import Connection

__all__ = ["CLOSED_MESSAGE", "IceServer", "PeerConnection", "SignalFn"]

SignalFn = Callable[[dict[str, Any]], Awaitable[None] | None]
IceServer = dict[str, Any]
"""``{"urls": ["stun:host:3478"], "username": "...", "credential": "..."}``"""

PRIORITIES = ("very-low", "low", "medium", "high")

POLITE_FIRST_OFFER_DELAY = 0.25
"""Seconds the polite side waits before its first offer, for the impolite side's.

Glare on the very first negotiation makes the polite side roll its offer back
and answer; Chromium 156 then sometimes gathers no candidate for that answer
(gathering stays "gathering", ICE never starts, and an ICE restart does not
bring it back: about 1 in 30 loopback glares). Letting the impolite side offer
first avoids the rollback; if no offer comes, the polite side offers itself.
"""

CLOSED_MESSAGE = ("the peer connection is closed; open a new Connection to the peer "
                  "(a ConnectionPool redials by itself)")
"""What :class:`~pyapp.exceptions.ConnectionClosedError` says when a closed connection is used."""


class _ClosedPeerConnection:
    """Stands in for the RTCPeerConnection after ``close()``.

    Dropping the JsProxy lets the browser free the RTCPeerConnection as soon as
    Python's refcount lets go of it, instead of whenever Python's cycle
    collector runs: Chromium refuses new connections once a page holds about
    500 (closed ones count until collected).
    """

    connectionState = "closed"
    iceConnectionState = "closed"
    iceGatheringState = "complete"
    signalingState = "closed"
    sctp = None

    def __init__(self, local: dict[str, str] | None, remote: dict[str, str] | None) -> None:
        # The last descriptions stay readable (e.g. to inspect fingerprints after a failure).
        self.localDescription = None if local is None else SimpleNamespace(**local)
        self.remoteDescription = None if remote is None else SimpleNamespace(**remote)

    def close(self) -> None:
        pass

    def addEventListener(self, *_args: Any) -> None:
        pass

    def removeEventListener(self, *_args: Any) -> None:
        pass

    def getSenders(self) -> list[Any]:
        return []

    def getReceivers(self) -> list[Any]:
        return []

    def getTransceivers(self) -> list[Any]:
        return []

    def _closed(self, *_args: Any) -> Any:
        raise ConnectionClosedError(CLOSED_MESSAGE)

    getStats = createDataChannel = addTrack = removeTrack = restartIce = _closed
    setLocalDescription = setRemoteDescription = addIceCandidate = _closed


def _description_dict(desc: Any) -> dict[str, str]:
    return {"type": str(desc.type), "sdp": str(desc.sdp)}


# setLocalDescription(), then read localDescription in the same microtask. Read a
# task later (where Python resumes), a colliding remote offer applied meanwhile
# (the polite side's implicit rollback) has already replaced it with null.
_SET_LOCAL_JS = """
await pc.setLocalDescription();
const d = pc.localDescription;
return d ? [d.type, d.sdp] : null;"""
_SET_LOCAL: Any = None


async def _set_local_description(js_pc: Any) -> dict[str, str] | None:
    """``setLocalDescription()``; the description it set, or None when it was rolled back at once."""
    global _SET_LOCAL
    if _SET_LOCAL is None:
        _SET_LOCAL = js.eval("(async function (pc) {" + _SET_LOCAL_JS + "})")
    result = await await_js(_SET_LOCAL(js_pc))
    if is_null(result):
        return None
    kind, sdp = result
    return {"type": str(kind), "sdp": str(sdp)}


class PeerConnection:
    """Python face of one RTCPeerConnection.

    Events (``pc.events.on(name, callback)``): ``connectionstatechange``,
    ``iceconnectionstatechange``, ``signalingstatechange``, ``sctpstatechange``
    (callback gets the new state), ``negotiationneeded`` (no argument),
    ``datachannel`` (a :class:`DataChannel` the peer opened), ``track`` (the JS
    RTCTrackEvent), ``error`` (an exception from negotiation), ``closing`` (no
    argument; :meth:`close` started, channels still open).
    """

    #: Builds the facade for :attr:`connection`; set by :mod:`pyapp.browser.connection`.
    facade_factory: ClassVar[Callable[[PeerConnection], Connection] | None] = None

    def __init__(self, signal: SignalFn | None = None, *, polite: bool = True,
                 ice_servers: list[IceServer] | None = None,
                 ice_transport_policy: str = "all") -> None:
        self._signal_fn = signal
        self.negotiation = NegotiationState(polite=polite)
        self.ice_servers = list(ice_servers or [])  # no public STUN by default
        config = {"iceServers": self.ice_servers, "iceTransportPolicy": ice_transport_policy}
        self.js_pc = call_js(js.RTCPeerConnection.new, js_object(config))
        self.events = Emitter()
        self.channels: list[DataChannel] = []
        self._connection: Connection | None = None
        self._sctp: Any = None
        self._owner = ProxyOwner("peer connection")
        self._signal_lock = asyncio.Lock()
        self._state_changed = asyncio.Event()
        self._closed = False
        for name in ("connectionstatechange", "iceconnectionstatechange", "signalingstatechange"):
            self._owner.listen(self.js_pc, name, self._state_listener(name))
        self._owner.listen(self.js_pc, "negotiationneeded", self._on_negotiation_needed)
        self._owner.listen(self.js_pc, "icecandidate", self._on_ice_candidate)
        self._owner.listen(self.js_pc, "datachannel", self._on_datachannel)
        self._owner.listen(self.js_pc, "track", lambda ev: self.events.emit("track", ev))

    # ------------------------------------------------------------------ state

    @property
    def connection_state(self) -> str:
        return str(self.js_pc.connectionState)

    @property
    def ice_connection_state(self) -> str:
        return str(self.js_pc.iceConnectionState)

    @property
    def signaling_state(self) -> str:
        return str(self.js_pc.signalingState)

    @property
    def local_description(self) -> dict[str, str] | None:
        desc = self.js_pc.localDescription
        return None if is_null(desc) else _description_dict(desc)

    @property
    def remote_description(self) -> dict[str, str] | None:
        desc = self.js_pc.remoteDescription
        return None if is_null(desc) else _description_dict(desc)

    @property
    def polite(self) -> bool:
        return self.negotiation.polite

    @property
    def max_message_size(self) -> int | None:
        """``pc.sctp.maxMessageSize`` once SCTP is negotiated, else None."""
        sctp = self.js_pc.sctp
        if is_null(sctp):
            return None
        size = sctp.maxMessageSize
        return None if is_null(size) or not size else int(size)

    @property
    def sctp_state(self) -> str | None:
        """``pc.sctp.state`` (``connecting``, ``connected``, ``closed``), None before SCTP exists."""
        sctp = self.js_pc.sctp
        return None if is_null(sctp) else str(sctp.state)

    @property
    def closed(self) -> bool:
        return self._closed

    def _watch_sctp(self) -> None:
        # pc.sctp appears with the first description that has a data section;
        # its statechange ("closed") is how a remote hang-up shows at once, while
        # ICE only notices after consent freshness fails (~15-30 s).
        if self._sctp is not None or self._closed:
            return
        sctp = self.js_pc.sctp
        if is_null(sctp):
            return
        self._sctp = sctp
        self._owner.listen(sctp, "statechange",
                           lambda _event: self.events.emit("sctpstatechange", str(sctp.state)))

    def _state_listener(self, name: str) -> Callable[[Any], None]:
        getter = {"connectionstatechange": "connectionState",
                  "iceconnectionstatechange": "iceConnectionState",
                  "signalingstatechange": "signalingState"}[name]

        def listener(_event: Any) -> None:
            self._state_changed.set()
            self._watch_sctp()
            self.events.emit(name, str(getattr(self.js_pc, getter)))

        return listener

    async def wait_for_state(self, wanted: str, timeout: float | None = None) -> None:
        """Wait until ``connection_state == wanted``; raise if the connection fails or closes.

        :class:`~pyapp.exceptions.OperationTimeout` after ``timeout`` seconds.
        """

        async def waiter() -> None:
            while True:
                state = self.connection_state
                if state == wanted:
                    return
                if state in ("failed", "closed") or self._closed:
                    raise ConnectionClosedError(f"connection is {state}, not {wanted}")
                self._state_changed.clear()
                await self._state_changed.wait()

        try:
            await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise OperationTimeout(
                f"connection is still {self.connection_state!r}, not {wanted!r}, after {timeout} s; "
                "check signaling and ICE servers (a peer behind NAT may need TURN)",
                operation=f"wait for {wanted}", timeout=timeout) from None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is ``connected``."""
        await self.wait_for_state("connected", timeout)

    # ------------------------------------------------------------------ signaling

    async def _send_signal(self, message: dict[str, Any]) -> None:
        if self._signal_fn is None:
            raise LocalProtocolError(
                "this PeerConnection has no signal function: pass signal= (a callable that "
                "delivers the message to the peer, e.g. SignalingClient.send_signal)")
        result = self._signal_fn(message)
        if inspect.isawaitable(result):
            await result

    async def _on_negotiation_needed(self, _event: Any) -> None:
        if self._closed:
            return
        self.events.emit("negotiationneeded")
        if self.negotiation.polite and is_null(self.js_pc.remoteDescription):
            await asyncio.sleep(POLITE_FIRST_OFFER_DELAY)
            if self._closed or not is_null(self.js_pc.remoteDescription) \
                    or self.signaling_state != "stable":
                return  # the peer offered: our channels ride on the answer
        self.negotiation.making_offer = True
        try:
            description = await _set_local_description(self.js_pc)
            if description is not None:
                await self._send_signal({"description": description})
        except Exception as exc:
            self.events.emit("error", exc)
            raise
        finally:
            self.negotiation.making_offer = False

    def _on_ice_candidate(self, event: Any) -> None:
        candidate = event.candidate
        payload = None if is_null(candidate) else candidate.toJSON().to_py()
        spawn(self._send_signal({"candidate": payload}), "sending an ICE candidate")

    def _on_datachannel(self, event: Any) -> None:
        channel = self._wrap_channel(event.channel)
        self.events.emit("datachannel", channel)

    async def handle_signal(self, message: dict[str, Any]) -> None:
        """Apply a message the remote peer signaled (a description or an ICE candidate).

        Messages are applied in arrival order. Raises BrowserError if the browser
        rejects a description; candidate errors for an ignored offer are expected
        and dropped.
        """
        if self._closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        async with self._signal_lock:
            if "description" in message:
                await self._apply_description(message["description"])
            elif "candidate" in message:
                await self._apply_candidate(message["candidate"])
            else:
                raise LocalProtocolError(f"unknown signal message keys: {sorted(message)}")

    async def _apply_description(self, desc: dict[str, Any]) -> None:
        kind = desc.get("type") if isinstance(desc, dict) else None
        if kind not in ("offer", "answer", "pranswer", "rollback") or not isinstance(desc.get("sdp", ""), str):
            raise LocalProtocolError(f"malformed session description: {str(desc)[:100]}")
        if self.negotiation.on_remote_description(kind, self.signaling_state) == "ignore":
            return
        self.negotiation.setting_remote_answer = kind == "answer"
        try:
            await await_js(self.js_pc.setRemoteDescription(js_object(desc)))
        finally:
            self.negotiation.setting_remote_answer = False
        if kind == "offer":
            answer = await _set_local_description(self.js_pc)
            if answer is not None:
                await self._send_signal({"description": answer})

    async def _apply_candidate(self, candidate: dict[str, Any] | None) -> None:
        try:
            if candidate is None:
                await await_js(self.js_pc.addIceCandidate())
            else:
                await await_js(self.js_pc.addIceCandidate(js_object(candidate)))
        except (BrowserError, ConnectionClosedError):
            if not self.negotiation.candidate_error_is_expected():
                raise

    def restart_ice(self) -> None:
        """Ask for an ICE restart; the next negotiation carries new ICE credentials."""
        if self._closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        call_js(self.js_pc.restartIce)

    # ------------------------------------------------------------------ channels & media

    def _wrap_channel(self, js_channel: Any) -> DataChannel:
        channel = DataChannel(js_channel, get_max_message_size=lambda: self.max_message_size)
        channel.peer_connection = self
        self.channels.append(channel)
        channel.events.on("close", lambda: self.channels.remove(channel) if channel in self.channels else None)
        return channel

    def create_data_channel(self, label: str, *, ordered: bool = True,
                            max_retransmits: int | None = None,
                            max_packet_life_time: int | None = None,
                            protocol: str = "", negotiated: bool = False,
                            id: int | None = None, priority: str | None = None) -> DataChannel:
        """Create an RTCDataChannel (all W3C ``RTCDataChannelInit`` knobs).

        ``priority`` (``very-low`` .. ``high``) is passed on as the webrtc-priority
        hint; browsers that do not implement it ignore it.
        """
        if self._closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        if max_retransmits is not None and max_packet_life_time is not None:
            raise InvalidArgumentError(
                "max_retransmits and max_packet_life_time are exclusive: give at most one of them")
        if priority is not None and priority not in PRIORITIES:
            raise InvalidArgumentError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        init: dict[str, Any] = {"ordered": ordered, "protocol": protocol, "negotiated": negotiated}
        if max_retransmits is not None:
            init["maxRetransmits"] = max_retransmits
        if max_packet_life_time is not None:
            init["maxPacketLifeTime"] = max_packet_life_time
        if id is not None:
            init["id"] = id
        if priority is not None:
            init["priority"] = priority
        js_channel = call_js(self.js_pc.createDataChannel, label, js_object(init))
        return self._wrap_channel(js_channel)

    def add_track(self, track: Any, *streams: Any) -> Any:
        """``pc.addTrack(track, ...streams)``; returns the JS RTCRtpSender."""
        if self._closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        return call_js(self.js_pc.addTrack, track, *streams)

    def remove_track(self, sender: Any) -> None:
        """``pc.removeTrack(sender)`` (no-op once closed)."""
        if not self._closed:
            call_js(self.js_pc.removeTrack, sender)

    def get_senders(self) -> list[Any]:
        return list(self.js_pc.getSenders())

    def get_transceivers(self) -> list[Any]:
        return list(self.js_pc.getTransceivers())

    def get_stats_report(self) -> Any:
        """Start ``getStats()``: the JS Promise of the report (a JS Map).

        Raises ConnectionClosedError when the connection is closed.
        """
        if self._closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        return call_js(self.js_pc.getStats)

    async def get_stats_raw(self) -> list[dict[str, Any]]:
        """``getStats()`` as a list of plain dicts (the report is a JS Map)."""
        report = await await_js(self.get_stats_report())
        return [value.to_py() if hasattr(value, "to_py") else dict(value)
                for value in report.values()]

    # ------------------------------------------------------------------ the facade

    @property
    def connection(self) -> Connection:
        """The :class:`~pyapp.browser.connection.Connection` that owns this wrapper.

        Made on first use for a bare PeerConnection. Prefer building a
        ``Connection`` directly: it holds the features (multiplexer, media,
        power, stats, monitoring, security).
        """
        if self._connection is None:
            factory = PeerConnection.facade_factory
            if factory is None:
                raise LocalProtocolError(
                    "no connection facade: import pyapp.browser (or pyapp.browser.connection) first")
            self._connection = factory(self)
        return self._connection

    def bind_connection(self, connection: Connection) -> None:
        """Called by the facade that owns this wrapper (one facade per wrapper)."""
        if self._connection is not None and self._connection is not connection:
            raise LocalProtocolError(
                "this PeerConnection already belongs to another Connection: use pc.connection")
        self._connection = connection

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close every channel and the connection; release every JS listener."""
        if self._closed:
            return
        self._closed = True
        local, remote = self.local_description, self.remote_description
        self.events.emit("closing")  # the facade fails its features before the channels close
        for channel in list(self.channels):
            channel.close()
        try:
            self.js_pc.close()
        finally:
            self._state_changed.set()
            self.events.emit("connectionstatechange", "closed")
            self.events.clear()
            self._owner.close()
            # Break reference cycles (channels <-> connection, the session, the
            # signal closure) so the RTCPeerConnection can be freed by refcounting
            # instead of waiting for Python's cycle collector: Chromium caps how
            # many RTCPeerConnections a page may hold alive.
            for channel in self.channels:
                channel.peer_connection = None
            self.channels.clear()
            self._sctp = None
            self._signal_fn = None
            self.js_pc = _ClosedPeerConnection(local, remote)

    def __repr__(self) -> str:
        return f"<PeerConnection {self.connection_state} polite={self.polite}>"

