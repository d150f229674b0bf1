"""``PeerConnection``: an RTCPeerConnection driven from Python, with perfect negotiation.

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
from typing import TYPE_CHECKING, Any

import js

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, await_js, call_js, is_null, js_object, spawn
from pyapp.browser.datachannel import DataChannel
from pyapp.core.framing import Reliability
from pyapp.core.negotiation import NegotiationState
from pyapp.core.scheduler import Priority
from pyapp.exceptions import (
    BrowserError,
    ConnectionClosedError,
    InvalidArgumentError,
    LocalProtocolError,
    OperationTimeout,
)

if TYPE_CHECKING:
    from pyapp.browser.auth import AuthResult
    from pyapp.browser.identity import Identity
    from pyapp.browser.monitor import QualityCallback, QualityMonitor
    from pyapp.browser.mux import MultiplexedChannel, MuxSession
    from pyapp.core.stats import ConnectionStatistics

__all__ = ["PeerConnection", "WebRtcConnection", "IceServer", "SignalFn"]

SignalFn = Callable[[dict[str, Any]], Awaitable[None] | None]
IceServer = dict[str, Any]
"""``{"urls": ["stun:host:3478"], "username": "...", "credential": "..."}``"""

PRIORITIES = ("very-low", "low", "medium", "high")


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
        raise ConnectionClosedError("peer connection is closed")

    getStats = createDataChannel = addTrack = removeTrack = restartIce = _closed
    setLocalDescription = setRemoteDescription = addIceCandidate = _closed


def _description_dict(desc: Any) -> dict[str, str]:
    return {"type": str(desc.type), "sdp": str(desc.sdp)}


class PeerConnection:
    """Python face of one RTCPeerConnection.

    Events (``pc.events.on(name, callback)``): ``connectionstatechange``,
    ``iceconnectionstatechange``, ``signalingstatechange`` (callback gets the new
    state), ``datachannel`` (a :class:`DataChannel` the peer opened), ``track``
    (the JS RTCTrackEvent), ``error`` (an exception from negotiation).
    """

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
        self._mux: MuxSession | None = None
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
    def closed(self) -> bool:
        return self._closed

    def _state_listener(self, name: str) -> Callable[[Any], None]:
        getter = {"connectionstatechange": "connectionState",
                  "iceconnectionstatechange": "iceConnectionState",
                  "signalingstatechange": "signalingState"}[name]

        def listener(_event: Any) -> None:
            self._state_changed.set()
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
            raise LocalProtocolError("this PeerConnection has no signal function")
        result = self._signal_fn(message)
        if inspect.isawaitable(result):
            await result

    async def _on_negotiation_needed(self, _event: Any) -> None:
        if self._closed:
            return
        self.negotiation.making_offer = True
        try:
            await await_js(self.js_pc.setLocalDescription())
            await self._send_signal({"description": _description_dict(self.js_pc.localDescription)})
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
            raise ConnectionClosedError("peer connection is closed")
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
            await await_js(self.js_pc.setLocalDescription())
            await self._send_signal({"description": _description_dict(self.js_pc.localDescription)})

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
            raise ConnectionClosedError("peer connection is closed")
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
            raise ConnectionClosedError("peer connection is closed")
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

    # ------------------------------------------------------------------ multiplexing (issue 3)

    def multiplexer(self, **options: Any) -> MuxSession:
        """This connection's :class:`~pyapp.browser.mux.MuxSession` (created on first use).

        Both peers must call it (it creates two negotiated data channels). Options
        (first call only) go to MuxSession, e.g. ``high_water``, ``inbox_limit``,
        ``max_message_bytes``.
        """
        if self._mux is None:
            if self._closed:
                raise ConnectionClosedError("peer connection is closed")
            from pyapp.browser.mux import MuxSession

            self._mux = MuxSession(self, **options)
        elif options:
            raise LocalProtocolError("the multiplexer already exists; options apply on first use")
        return self._mux

    def detach_multiplexer(self) -> MuxSession | None:
        """Take the MuxSession off this connection (to resume it on another one) so that
        closing this connection does not fail its channels."""
        session, self._mux = self._mux, None
        if session is not None:
            session.transport_lost()
        return session

    def adopt_multiplexer(self, session: MuxSession) -> None:
        """Continue ``session`` (detached from a previous connection to the same peer) here.

        Both peers adopt their session on the new connection; every reliable
        message not yet acknowledged is replayed and duplicates are dropped.
        """
        if self._closed:
            raise ConnectionClosedError("peer connection is closed")
        if self._mux is not None:
            raise LocalProtocolError("this connection already has a multiplexer")
        session.resume_on(self)
        self._mux = session

    def create_multiplexed_channel(self, channel_id: int | None = None, *, label: str = "",
                                   reliability: Reliability | None = None,
                                   priority: Priority | None = None) -> MultiplexedChannel:
        """Open a logical channel over this connection's multiplexer (seed API).

        Example::

            orders = pc.create_multiplexed_channel(label="orders")
            await orders.send(b"bid 42")
        """
        return self.multiplexer().create_multiplexed_channel(
            channel_id, label=label, reliability=reliability, priority=priority)

    def create_data_channel_with_reliability(self, label: str,
                                             reliability: Reliability) -> MultiplexedChannel:
        """A logical channel with a reliability (seed API).

        Example::

            ticks = pc.create_data_channel_with_reliability("ticks", DataChannelReliability.UNRELIABLE)
        """
        return self.multiplexer().create_data_channel_with_reliability(label, reliability)

    def create_data_channel_with_priority(self, label: str, priority: Priority,
                                          reliability: Reliability | None = None) -> MultiplexedChannel:
        """A logical channel with a priority, and optionally a reliability (seed API).

        Example::

            urgent = pc.create_data_channel_with_priority("cancel", DataChannelPriority.HIGH)
        """
        return self.multiplexer().create_data_channel_with_priority(label, priority, reliability)

    def add_track(self, track: Any, *streams: Any) -> Any:
        """``pc.addTrack(track, ...streams)``; returns the JS RTCRtpSender."""
        if self._closed:
            raise ConnectionClosedError("peer connection is closed")
        return call_js(self.js_pc.addTrack, track, *streams)

    def get_senders(self) -> list[Any]:
        return list(self.js_pc.getSenders())

    async def get_stats_raw(self) -> list[dict[str, Any]]:
        """``getStats()`` as a list of plain dicts (the report is a JS Map)."""
        report = await await_js(self.js_pc.getStats())
        return [value.to_py() if hasattr(value, "to_py") else dict(value)
                for value in report.values()]

    # ------------------------------------------------------------------ mobile & power (issue 6)

    @property
    def media_tuner(self) -> Any:
        """This connection's :class:`pyapp.browser.media.MediaTuner` (created on first use)."""
        tuner = getattr(self, "_media_tuner", None)
        if tuner is None:
            from pyapp.browser.media import MediaTuner

            tuner = self._media_tuner = MediaTuner(self)
        return tuner

    async def set_mobile_options(self, is_mobile: bool) -> None:
        """Mobile video caps on every video sender and track (seed 4.1); False restores desktop.

        Mobile: ``maxBitrate`` 128 kbit/s and ``maxFramerate`` 15 on every encoding,
        ``applyConstraints({width: 320, height: 240, frameRate: 15})`` on the video
        tracks. Tracks added later get the current settings. Example::

            await pc.set_mobile_options(read_device_profile().is_mobile)
        """
        from pyapp.browser.media import MOBILE_CAPS

        if is_mobile:
            await self.media_tuner.apply(MOBILE_CAPS)
        else:
            await self.media_tuner.restore()

    async def set_battery_aware_options(self, power: Any = None) -> Any:
        """Let the battery policy cap this connection's video (seed 4.2); returns the manager.

        ``power`` is a :class:`pyapp.browser.power.PowerManager`; without one the
        page-wide manager (``PowerManager.shared()``) is used. Example::

            power = await PowerManager.open()
            await pc.set_battery_aware_options(power)   # 64 kbit/s @ 10 fps below 20 %
        """
        from pyapp.browser.power import PowerManager

        if power is None:
            power = await PowerManager.shared()
        power.add_video(self.media_tuner)
        if self._mux is not None:
            # Power saving pauses VERY_LOW bulk and unreliable low-priority traffic.
            power.register(self._mux)
        await power.settled()
        return power

    # ------------------------------------------------------------------ statistics & quality (issue 7)

    async def get_statistics(self) -> ConnectionStatistics:
        """A getStats snapshot, parsed (see :func:`pyapp.browser.stats.get_statistics`).

        Example::

            stats = await pc.get_statistics()
            print(stats.bytes_sent, stats.round_trip_time, stats.data_channels_opened)
        """
        from pyapp.browser.stats import get_statistics

        return await get_statistics(self)

    @property
    def quality_monitor(self) -> QualityMonitor | None:
        """The monitor started by :meth:`start_connection_quality_monitoring`, if any."""
        monitor: QualityMonitor | None = getattr(self, "_quality_monitor", None)
        return monitor

    def start_connection_quality_monitoring(self, interval: float = 1.0,
                                            callback: QualityCallback | None = None,
                                            **options: Any) -> QualityMonitor:
        """Poll quality every ``interval`` s and call ``callback(ConnectionQuality)`` (seed 5.2).

        Replaces a monitor started earlier. Options go to
        :class:`~pyapp.browser.monitor.QualityMonitor` (``probe``, ``history`` ...).

        Example::

            monitor = pc.start_connection_quality_monitoring(1.0, lambda q: print(q.label))
            monitor.set_interval(5.0)
            pc.stop_connection_quality_monitoring()
        """
        from pyapp.browser.monitor import QualityMonitor

        self.stop_connection_quality_monitoring()
        monitor = QualityMonitor(self, interval, callback, **options)
        monitor.start()
        self._quality_monitor: QualityMonitor | None = monitor
        return monitor

    def stop_connection_quality_monitoring(self) -> None:
        """Stop and drop the monitor (no-op without one)."""
        monitor = self.quality_monitor
        if monitor is not None:
            self._quality_monitor = None
            monitor.close()

    # ------------------------------------------------------------------ security (issue 4)

    async def authenticate(self, identity: Identity, **options: Any) -> AuthResult:
        """Mutually authenticate the peer (see :func:`pyapp.browser.auth.authenticate`).

        Returns an :class:`~pyapp.browser.auth.AuthResult`; on any failure closes
        this connection and raises AuthenticationError with a ``reason``.
        Options: ``expected_peer_id``, ``known_peers``, ``contact``, ``timeout``.

        Example::

            me = await load_identity()
            result = await pc.authenticate(me, expected_peer_id="abcd-efgh-...", timeout=10)
            print(result.peer_id)
        """
        from pyapp.browser.auth import authenticate

        return await authenticate(self, identity, **options)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close every channel and the connection; release every JS listener."""
        if self._closed:
            return
        self._closed = True
        local, remote = self.local_description, self.remote_description
        if self._mux is not None:
            self._mux.fail("connection closed")
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
            self._mux = None
            self._signal_fn = None
            self.js_pc = _ClosedPeerConnection(local, remote)

    def __repr__(self) -> str:
        return f"<PeerConnection {self.connection_state} polite={self.polite}>"


WebRtcConnection = PeerConnection
"""The seed's name for :class:`PeerConnection`."""
