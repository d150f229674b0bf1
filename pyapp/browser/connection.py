"""``Connection``: one connection to one peer, and the features on it.

A :class:`Connection` owns a thin :class:`~pyapp.browser.peer.PeerConnection`
(the RTCPeerConnection wrapper: negotiation, channels, tracks, states, events)
and composes the features as plain attributes:

* ``mux`` -- the :class:`~pyapp.browser.mux.MuxSession` (``multiplexer()`` makes it);
* ``media`` -- the :class:`~pyapp.browser.media.MediaTuner` (video caps);
* ``power`` -- the :class:`~pyapp.browser.power.PowerManager` it follows, if any;
* ``monitor`` -- the running :class:`~pyapp.browser.monitor.QualityMonitor`, if any;
* ``security`` -- the :class:`~pyapp.browser.auth.SecurityState` (authentication
  and the encrypted channels).

Features get what they need from the wrapper's public surface (``peer``); the
wrapper imports no feature. A Connection also offers the wrapper's own surface
(``create_data_channel``, ``events``, ``connection_state``, ``close`` ...), so it
can stand wherever a PeerConnection stood.

Example (in the page)::

    from pyapp.browser import Connection, DataChannelReliability

    conn = Connection(signal=lambda msg: client.send_signal(peer, msg), polite=True)
    orders = conn.create_multiplexed_channel(label="orders")
    ticks = conn.create_data_channel_with_reliability("ticks", DataChannelReliability.UNRELIABLE)
    await conn.wait_connected(10)
    result = await conn.authenticate(identity)
    monitor = conn.start_connection_quality_monitoring(1.0, lambda q: print(q.label))
    conn.close()
"""

from __future__ import annotations

from typing import Any

from pyapp.browser.auth import AuthResult, SecurityState, authenticate
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import Identity
from pyapp.browser.media import MOBILE_CAPS, MediaTuner
from pyapp.browser.monitor import QualityCallback, QualityMonitor
from pyapp.browser.mux import MultiplexedChannel, MuxSession
from pyapp.browser.peer import CLOSED_MESSAGE, IceServer, PeerConnection, SignalFn
from pyapp.browser.power import PowerManager
from pyapp.browser.probing import ProbeResponder
from pyapp.browser.secure import receive_encrypted as _receive_encrypted
from pyapp.browser.secure import send_encrypted as _send_encrypted
from pyapp.browser.stats import get_statistics
from pyapp.core.framing import Reliability
from pyapp.core.negotiation import NegotiationState
from pyapp.core.scheduler import Priority
from pyapp.core.stats import ConnectionStatistics
from pyapp.exceptions import ConnectionClosedError, LocalProtocolError

__all__ = ["Connection", "WebRtcConnection"]


class Connection:
    """One peer connection with pyapp's features; see the module docstring.

    ``Connection(signal, polite=..., ice_servers=..., ice_transport_policy=...)``
    builds its PeerConnection (same arguments); ``Connection(peer=pc)`` wraps
    an existing one.
    """

    def __init__(self, signal: SignalFn | None = None, *, polite: bool = True,
                 ice_servers: list[IceServer] | None = None,
                 ice_transport_policy: str = "all",
                 peer: PeerConnection | None = None) -> None:
        if peer is None:
            peer = PeerConnection(signal, polite=polite, ice_servers=ice_servers,
                                  ice_transport_policy=ice_transport_policy)
        elif signal is not None or ice_servers is not None:
            raise LocalProtocolError(
                "give either peer= (an existing PeerConnection) or the arguments to build one, "
                "not both")
        self.peer = peer
        """The RTCPeerConnection wrapper this connection owns."""
        self.mux: MuxSession | None = None
        """The multiplexer, once :meth:`multiplexer` made it (or one was adopted)."""
        self.power: PowerManager | None = None
        """The power manager this connection's video follows (:meth:`set_battery_aware_options`)."""
        self.monitor: QualityMonitor | None = None
        """The monitor :meth:`start_connection_quality_monitoring` started, if any."""
        self.security = SecurityState()
        """Authentication status and session keys; the encrypted-channel cache."""
        self.probe_responder: ProbeResponder | None = None
        """What echoes the peer's quality probes on ``mux`` (:func:`~pyapp.browser.probing.answer_probes`)."""
        self._media: MediaTuner | None = None
        peer.bind_connection(self)
        peer.events.on("closing", self._on_closing)

    # ------------------------------------------------------------------ the wrapper's surface

    @property
    def events(self) -> Any:
        """The wrapper's events (see :class:`~pyapp.browser.peer.PeerConnection`)."""
        return self.peer.events

    @property
    def channels(self) -> list[DataChannel]:
        return self.peer.channels

    @property
    def negotiation(self) -> NegotiationState:
        return self.peer.negotiation

    @property
    def ice_servers(self) -> list[IceServer]:
        return self.peer.ice_servers

    @property
    def connection_state(self) -> str:
        return self.peer.connection_state

    @property
    def ice_connection_state(self) -> str:
        return self.peer.ice_connection_state

    @property
    def signaling_state(self) -> str:
        return self.peer.signaling_state

    @property
    def sctp_state(self) -> str | None:
        return self.peer.sctp_state

    @property
    def local_description(self) -> dict[str, str] | None:
        return self.peer.local_description

    @property
    def remote_description(self) -> dict[str, str] | None:
        return self.peer.remote_description

    @property
    def polite(self) -> bool:
        return self.peer.polite

    @property
    def max_message_size(self) -> int | None:
        return self.peer.max_message_size

    @property
    def closed(self) -> bool:
        return self.peer.closed

    async def wait_for_state(self, wanted: str, timeout: float | None = None) -> None:
        await self.peer.wait_for_state(wanted, timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self.peer.wait_connected(timeout)

    async def handle_signal(self, message: dict[str, Any]) -> None:
        await self.peer.handle_signal(message)

    def restart_ice(self) -> None:
        self.peer.restart_ice()

    def create_data_channel(self, label: str, **options: Any) -> DataChannel:
        """A plain RTCDataChannel (see :meth:`PeerConnection.create_data_channel`)."""
        return self.peer.create_data_channel(label, **options)

    def add_track(self, track: Any, *streams: Any) -> Any:
        return self.peer.add_track(track, *streams)

    def remove_track(self, sender: Any) -> None:
        self.peer.remove_track(sender)

    def get_senders(self) -> list[Any]:
        return self.peer.get_senders()

    def get_transceivers(self) -> list[Any]:
        return self.peer.get_transceivers()

    def get_stats_report(self) -> Any:
        return self.peer.get_stats_report()

    async def get_stats_raw(self) -> list[dict[str, Any]]:
        return await self.peer.get_stats_raw()

    # ------------------------------------------------------------------ multiplexing

    def multiplexer(self, **options: Any) -> MuxSession:
        """This connection's :class:`~pyapp.browser.mux.MuxSession` (created on first use).

        Both peers must call it (it creates the negotiated data channels). Options
        (first call only) go to MuxSession, e.g. ``high_water``, ``inbox_limit``,
        ``max_message_bytes``.
        """
        if self.mux is None:
            if self.peer.closed:
                raise ConnectionClosedError(CLOSED_MESSAGE)
            self.mux = MuxSession(self.peer, **options)
            if self.power is not None:
                self.power.register(self.mux)
        elif options:
            raise LocalProtocolError(
                "the multiplexer already exists; options apply on the first multiplexer() call only")
        return self.mux

    def detach_multiplexer(self) -> MuxSession | None:
        """Take the MuxSession off this connection (to resume it on another one) so that
        closing this connection does not fail its channels."""
        session, self.mux = self.mux, None
        if session is not None:
            session.transport_lost()
        return session

    def adopt_multiplexer(self, session: MuxSession) -> None:
        """Continue ``session`` (detached from a previous connection to the same peer) here.

        Both peers adopt their session on the new connection; every reliable
        message not yet acknowledged is replayed and duplicates are dropped.
        """
        if self.peer.closed:
            raise ConnectionClosedError(CLOSED_MESSAGE)
        if self.mux is not None:
            raise LocalProtocolError(
                "this connection already has a multiplexer: detach_multiplexer() it first")
        previous = session.pc.connection  # the connection the session ran on until now
        session.resume_on(self.peer)
        self.mux = session
        if previous is not self and previous.probe_responder is not None:
            # The responder belongs to the session: it keeps answering on the new path.
            if previous.probe_responder.session is session:
                self.probe_responder, previous.probe_responder = previous.probe_responder, None

    def create_multiplexed_channel(self, channel_id: int | None = None, *, label: str = "",
                                   reliability: Reliability | None = None,
                                   priority: Priority | None = None) -> MultiplexedChannel:
        """Open a logical channel over this connection's multiplexer.

        Example::

            orders = conn.create_multiplexed_channel(label="orders")
            await orders.send(b"bid 42")
        """
        return self.multiplexer().create_multiplexed_channel(
            channel_id, label=label, reliability=reliability, priority=priority)

    def create_data_channel_with_reliability(self, label: str,
                                             reliability: Reliability) -> MultiplexedChannel:
        """A logical channel with a reliability.

        Example::

            ticks = conn.create_data_channel_with_reliability("ticks", DataChannelReliability.UNRELIABLE)
        """
        return self.multiplexer().create_data_channel_with_reliability(label, reliability)

    def create_data_channel_with_priority(self, label: str, priority: Priority,
                                          reliability: Reliability | None = None) -> MultiplexedChannel:
        """A logical channel with a priority, and optionally a reliability.

        Example::

            urgent = conn.create_data_channel_with_priority("cancel", DataChannelPriority.HIGH)
        """
        return self.multiplexer().create_data_channel_with_priority(label, priority, reliability)

    # ------------------------------------------------------------------ media & power

    @property
    def media(self) -> MediaTuner:
        """This connection's :class:`~pyapp.browser.media.MediaTuner` (created on first use)."""
        if self._media is None:
            self._media = MediaTuner(self.peer)
        return self._media

    async def set_mobile_options(self, is_mobile: bool) -> None:
        """Mobile video caps on every video sender and track; False restores desktop.

        Mobile: ``maxBitrate`` 128 kbit/s and ``maxFramerate`` 15 on every encoding,
        ``applyConstraints({width: 320, height: 240, frameRate: 15})`` on the video
        tracks. Tracks added later get the current settings. Example::

            await conn.set_mobile_options(read_device_profile().is_mobile)
        """
        if is_mobile:
            await self.media.apply(MOBILE_CAPS)
        else:
            await self.media.restore()

    async def set_battery_aware_options(self, power: PowerManager | None = None) -> PowerManager:
        """Let the battery policy cap this connection's video; returns the manager.

        ``power`` is a :class:`pyapp.browser.power.PowerManager`; without one the
        page-wide manager (``PowerManager.shared()``) is used. Power saving also
        pauses the multiplexer's VERY_LOW bulk and unreliable low-priority traffic.
        Example::

            power = await PowerManager.open()
            await conn.set_battery_aware_options(power)   # 64 kbit/s @ 10 fps below 20 %
        """
        if power is None:
            power = await PowerManager.shared()
        self.power = power
        power.add_video(self.media)
        if self.mux is not None:
            power.register(self.mux)
        await power.settled()
        return power

    # ------------------------------------------------------------------ statistics & quality

    async def get_statistics(self) -> ConnectionStatistics:
        """A getStats snapshot, parsed, with the multiplexer's channels.

        Example::

            stats = await conn.get_statistics()
            print(stats.bytes_sent, stats.round_trip_time, stats.data_channels_opened)
        """
        return await get_statistics(self.peer, session=self.mux)

    def start_connection_quality_monitoring(self, interval: float = 1.0,
                                            callback: QualityCallback | None = None,
                                            **options: Any) -> QualityMonitor:
        """Poll quality every ``interval`` s and call ``callback(ConnectionQuality)``.

        Replaces a monitor started earlier. Options go to
        :class:`~pyapp.browser.monitor.QualityMonitor` (``probe``, ``history`` ...);
        ``probe=True`` makes the multiplexer (the peer must make its own too).

        Example::

            monitor = conn.start_connection_quality_monitoring(1.0, lambda q: print(q.label))
            monitor.set_interval(5.0)
            conn.stop_connection_quality_monitoring()
        """
        self.stop_connection_quality_monitoring()
        if options.get("probe") and self.mux is None:
            self.multiplexer()
        monitor = QualityMonitor(self, interval, callback, session=self.mux, **options)
        monitor.start()
        self.monitor = monitor
        return monitor

    def stop_connection_quality_monitoring(self) -> None:
        """Stop and drop the monitor (no-op without one)."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.close()

    @property
    def quality_monitor(self) -> QualityMonitor | None:
        """Same as :attr:`monitor` (the name callers used before the facade existed)."""
        return self.monitor

    # ------------------------------------------------------------------ security

    async def authenticate(self, identity: Identity, **options: Any) -> AuthResult:
        """Mutually authenticate the peer (see :func:`pyapp.browser.auth.authenticate`).

        Returns an :class:`~pyapp.browser.auth.AuthResult`; on any failure closes
        this connection and raises AuthenticationError with a ``reason``.
        Options: ``expected_peer_id``, ``known_peers``, ``contact``, ``timeout``.

        Example::

            me = await load_identity()
            result = await conn.authenticate(me, expected_peer_id="abcd-efgh-...", timeout=10)
            print(result.peer_id)
        """
        return await authenticate(self.peer, identity, **options)

    async def send_encrypted(self, channel: Any, message: bytes | str,
                             key: bytes | None = None) -> None:
        """Seal ``message`` with this connection's session keys (or ``key``) and send it on ``channel``.

        ``channel`` is a DataChannel or MultiplexedChannel of this connection;
        see :func:`pyapp.browser.secure.send_encrypted`.
        """
        session = None if key is not None else self.security.session
        await _send_encrypted(channel, message, key, session=session)

    async def receive_encrypted(self, channel: Any, key: bytes | None = None) -> bytes:
        """The next message on ``channel``, opened (``DecryptionError`` if it does not open)."""
        session = None if key is not None else self.security.session
        return await _receive_encrypted(channel, key, session=session)

    # ------------------------------------------------------------------ lifetime

    def _on_closing(self) -> None:
        # The wrapper is closing (our close(), or someone closed the wrapper):
        # fail the features first, so their channels report "connection closed".
        self.stop_connection_quality_monitoring()
        if self.mux is not None:
            self.mux.fail("connection closed")
            self.mux = None
        if self._media is not None and self.power is not None:
            self.power.unregister(self._media)
        self.security.close()

    def close(self) -> None:
        """Close the features, every channel and the connection; release every JS listener."""
        self.peer.close()

    def __repr__(self) -> str:
        return f"<Connection {self.peer.connection_state} polite={self.peer.polite} mux={self.mux is not None}>"


def _facade_of(peer: PeerConnection) -> Connection:
    return Connection(peer=peer)


PeerConnection.facade_factory = _facade_of

WebRtcConnection = Connection
"""The original API's name for :class:`Connection` (a documented alias)."""
