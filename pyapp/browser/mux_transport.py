"""The negotiated data channels under a :class:`~pyapp.browser.mux.MuxSession`.

Opening them (``pyapp-mux``, ``pyapp-mux-u`` and ``pyapp-mux-h``), the transport
hello (``TRANSPORT_HELLO``) that holds every frame until the peer's channels
exist, the urgent transport's hello that tells whether the peer has
``pyapp-mux-h`` at all, and the transmit loop that packs the core's frames into
data-channel messages under each channel's high-water mark. This is the private
base of :class:`~pyapp.browser.mux.MuxSession`; use the session.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    a, b = await connected_pair()
    session = a.multiplexer()
    await session.wait_open(10)      # both transports open, the peer's hello heard
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pyapp._events import Emitter
from pyapp.browser._ffi import spawn
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.timer import now as _now
from pyapp.core.framing import HEADER_SIZE, MAX_FRAGMENT_PAYLOAD, Transport
from pyapp.core.mux import Multiplexer, OutgoingFrame
from pyapp.core.mux_buffer import BufferTuner
from pyapp.exceptions import ConnectionClosedError, RemoteProtocolError

if TYPE_CHECKING:
    from pyapp.browser.peer import PeerConnection

# Internal module: no __all__; the constants are exported by pyapp.browser.mux.

RELIABLE_TRANSPORT_ID = 1000
"""SCTP stream id of the negotiated reliable transport (both sides create it)."""
UNRELIABLE_TRANSPORT_ID = 1001
"""SCTP stream id of the negotiated unreliable transport."""
URGENT_TRANSPORT_ID = 1002
"""SCTP stream id of the negotiated urgent transport (HIGH reliable channels, see ``URGENT_LABEL``)."""
HELLO_PREFIX = b"PYMX\x01"
TRANSPORT_HELLO = HELLO_PREFIX
"""Sent on the reliable transport until the peer's arrives, before any frame.

Both transports are negotiated channels (``negotiated: true``): a side's channel
opens as soon as the SCTP association is up, possibly before the peer has
created its own, and a message sent into that gap is dropped by the peer's
browser. So each side repeats this hello (backing off to 4/s) until it hears
the peer's, and only then lets the multiplexer transmit. It cannot be mistaken
for a frame: frames start with version byte 0x01, this with ``P``.

The hello carries the sender's 8-byte session id (``HELLO_PREFIX + session_id``).
A session resumed on a fresh connection checks that the peer's id is the one it
had before: a peer that lost its session state (a fresh session) makes ours fail
loudly instead of replaying into the void."""
URGENT_HEADROOM = 64 * 1024
"""Bytes above a transport's high-water mark that urgent frames (control frames,
HIGH channels' DATA) may still use while bulk data waits for ``bufferedamountlow``."""
_MAX_FRAME = _ONE_FRAME = HEADER_SIZE + MAX_FRAGMENT_PAYLOAD
DEFAULT_BATCH_BYTES = 4 * _MAX_FRAME
"""Default ``batch_bytes``: four full fragments with their headers (65,600 bytes), so a
64 KiB message leaves in one data-channel message, not split 3 + 1 across two (as a
64 KiB limit did). The negotiated maxMessageSize caps it (aiortc's is 65,536)."""
_RELIABLE, _UNRELIABLE = Transport.RELIABLE, Transport.UNRELIABLE
RELIABLE_LABEL = "pyapp-mux"
"""Label of the reliable, ordered transport (control frames and reliable channels' DATA)."""
UNRELIABLE_LABEL = "pyapp-mux-u"
"""Label of the unordered transport (unreliable channels' DATA)."""
URGENT_LABEL = "pyapp-mux-h"
"""Label of the urgent transport: reliable, ordered, its own SCTP stream, every frame of
HIGH reliable channels once the peer's hello on it was heard.

Chromium sends one SCTP message of a stream after another and switches streams only
between whole messages (no RFC 8260 interleaving), so a HIGH frame on this stream
waits for at most the one message being sent, instead of everything queued on the
reliable stream. Each side sends ``HELLO_PREFIX + session_id`` on it with each of its
reliable-transport hellos (just before them) and once more when it heard the peer's
reliable hello; the first message that arrives on it (hello or frame) makes the
session call :meth:`~pyapp.core.mux.Multiplexer.use_urgent_transport`. A peer that
has no such channel (an older pyapp, a third-party peer) never answers: its browser
drops what arrives on a stream it has no channel for, and HIGH channels keep riding
the reliable transport, as before."""


class _SessionTransports:
    """Transports, hello and transmit loop of a MuxSession (its private base)."""

    mux: Multiplexer
    pc: PeerConnection
    reliable: DataChannel
    unreliable: DataChannel
    urgent: DataChannel | None
    urgent_transport_enabled: bool
    events: Emitter
    buffer_tuner: BufferTuner
    high_water: int
    low_water: int
    unreliable_max_retransmits: int
    batch_bytes: int
    session_id: bytes
    peer_session_id: bytes | None
    _batch_limit: int
    _failed: BaseException | None
    _held: OutgoingFrame | None
    _hello_task: asyncio.Task[Any] | None
    _lost: bool
    _open: bool
    _peer_ready: bool
    _pumping: bool
    _transports_open: asyncio.Future[None]

    # Provided by MuxSession.
    def _pump(self) -> None:
        raise NotImplementedError

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _schedule_pump(self) -> None:
        raise NotImplementedError

    def _record_error(self, error: RemoteProtocolError) -> None:
        raise NotImplementedError

    def transport_lost(self) -> None:
        raise NotImplementedError

    def fail(self, reason: str) -> Any:
        raise NotImplementedError

    def _attach(self, pc: PeerConnection) -> None:
        self.pc = pc
        self.reliable = pc.create_data_channel(RELIABLE_LABEL, negotiated=True, id=RELIABLE_TRANSPORT_ID)
        self.unreliable = pc.create_data_channel(
            UNRELIABLE_LABEL, negotiated=True, id=UNRELIABLE_TRANSPORT_ID, ordered=False,
            max_retransmits=self.unreliable_max_retransmits)
        # Created with the others, before any hello: once the peer hears our reliable
        # hello, our urgent channel exists too, so what it sends there is not lost.
        self.urgent = (pc.create_data_channel(URGENT_LABEL, negotiated=True, id=URGENT_TRANSPORT_ID)
                       if self.urgent_transport_enabled else None)
        if self.urgent is not None:
            urgent = self.urgent
            self._set_marks(urgent)
            urgent.events.on("messages", self._on_urgent_frames)
            urgent.events.on("open", self._on_urgent_open)
            urgent.events.on("close", self._on_transport_close)
            urgent.events.on("bufferedamountlow", self._pump)
        for channel in (self.reliable, self.unreliable):
            self._set_marks(channel)
            channel.events.on("messages", self._on_shared_frames)
            channel.events.on("open", self._on_transport_open)
            channel.events.on("close", self._on_transport_close)
        self.unreliable.events.on("bufferedamountlow", self._pump)
        self.reliable.events.on("bufferedamountlow", self._on_reliable_low)
        self._apply_buffer_marks()
        self._on_transport_open()

    def _set_marks(self, channel: DataChannel) -> None:
        """The session's ``high_water`` / ``low_water`` on one transport."""
        channel.high_water = self.high_water
        channel.low_water = self.low_water
        channel.js_channel.bufferedAmountLowThreshold = self.low_water

    def _apply_buffer_marks(self) -> None:
        """The reliable transport's marks come from ``buffer_tuner`` (see pyapp.core.mux_buffer)."""
        tuner = self.buffer_tuner
        self.reliable.high_water = tuner.high
        self.reliable.low_water = tuner.low
        self.reliable.js_channel.bufferedAmountLowThreshold = tuner.low

    def _on_reliable_low(self) -> None:
        # What is still buffered as we refill says whether the buffer ran dry first.
        if self.buffer_tuner.refilled(self.reliable.buffered_amount):
            self._apply_buffer_marks()
        self._take_urgent_first()
        self._pump()

    def _take_urgent_first(self) -> None:
        """Work through what waits in the urgent transport's JS inbox before bulk work.

        Triage (see ``_receive``) puts HIGH frames first only within one batch; on
        their own transport they come in a batch of their own, whose hand-over is a
        task queued behind the reliable inbox's (a big batch of bulk) or a refill of
        the send buffer. Both call this first, so an urgent message that came in
        meanwhile is taken before them (measured: docs/performance/network.md).
        """
        urgent = self.urgent
        # Before the peer is ready too: its urgent hello, sent just before the reliable
        # one, then turns the urgent transport on before wait_open() returns.
        if urgent is not None and (self.mux.urgent_transport or not self._peer_ready):
            urgent.flush_received()

    def _transports(self) -> list[DataChannel]:
        """Every underlying data channel of the current connection."""
        channels = [self.reliable, self.unreliable]
        if self.urgent is not None:
            channels.append(self.urgent)
        return channels

    def _say_urgent_hello(self) -> None:
        """Our hello on the urgent transport (see ``URGENT_LABEL``), when it is open."""
        urgent = self.urgent
        if urgent is not None and urgent.ready_state == "open":
            try:
                urgent.send_nowait(HELLO_PREFIX + self.session_id)
            except ConnectionClosedError:
                pass  # its close event reports the loss (_on_transport_close)

    def _on_urgent_open(self) -> None:
        # Normally open with the others; if later, greet the peer on it now.
        if self._peer_ready and self._open:
            self._say_urgent_hello()

    def _check_open(self) -> bool:
        self._open = (not self._lost and self.reliable.ready_state == "open"
                      and self.unreliable.ready_state == "open")
        return self._open

    def _on_transport_open(self) -> None:
        if not self._check_open():
            return
        size = self.pc.max_message_size
        if size:
            self.mux.set_max_message_size(size)
        # Read once per transport (an FFI round trip), not on every pump.
        self._batch_limit = min(self.batch_bytes, size or 65536)
        if self._peer_ready:
            self._hello_and_go()  # the peer's hello arrived before our open event
        elif self._hello_task is None or self._hello_task.done():
            self._hello_task = spawn(self._say_hello(), "mux transport hello")

    async def _say_hello(self) -> None:
        """Repeat TRANSPORT_HELLO until the peer's arrives (see ``TRANSPORT_HELLO``)."""
        delay = 0.02
        while not self._peer_ready and self._open and self._failed is None:
            self._say_urgent_hello()
            try:
                self.reliable.send_nowait(HELLO_PREFIX + self.session_id)
            except ConnectionClosedError:
                return
            await asyncio.sleep(delay)
            delay = min(0.25, delay * 1.5)

    def _on_hello(self, peer_session: bytes | None) -> None:
        if peer_session is not None:
            if self.peer_session_id is None:
                self.peer_session_id = peer_session
            elif peer_session != self.peer_session_id:
                self.fail("the peer's multiplexer started afresh: it cannot resume this session")
                return
        self._on_peer_ready()

    def _on_peer_ready(self) -> None:
        """We heard the peer: its channels exist, so nothing we send now is lost."""
        if self._peer_ready:
            return
        self._peer_ready = True
        if self._open:
            self._hello_and_go()
        # else: our channels are still opening; _on_transport_open finishes this.

    def _hello_and_go(self) -> None:
        # One more hello tells the peer we are ready even if every earlier one of
        # ours was dropped (sent before the peer had created its channels). The
        # urgent one first: the peer's urgent channel, if it has one, exists now.
        self._say_urgent_hello()
        try:
            self.reliable.send_nowait(HELLO_PREFIX + self.session_id)
        except ConnectionClosedError:
            self.transport_lost()
            return
        if not self._transports_open.done():
            self._transports_open.set_result(None)
        self.events.emit("transport", "up")
        self._pump()

    def _on_frames(self, messages: list[bytes | memoryview | str]) -> None:
        """Messages from a transport, as many as arrived since the page last ran."""
        datagrams: list[bytes | memoryview] = []
        for data in messages:
            if isinstance(data, str):
                self._record_error(RemoteProtocolError("text message on a mux transport"))
                continue
            if data[:5] == HELLO_PREFIX and len(data) in (5, 13):
                if datagrams:
                    self._receive(datagrams)
                    datagrams = []
                self._on_hello(bytes(data[5:]) or None)
                continue
            if not self._peer_ready:
                self._on_peer_ready()  # the peer only sends frames once it heard our hello
            datagrams.append(data)
        if datagrams:
            self._receive(datagrams)

    def _on_shared_frames(self, messages: list[bytes | memoryview | str]) -> None:
        """Messages on the reliable or unreliable transport: urgent ones waiting go first."""
        self._take_urgent_first()
        self._on_frames(messages)

    def _on_urgent_frames(self, messages: list[bytes | memoryview | str]) -> None:
        """Messages on the urgent transport: the first one says the peer has it.

        What they call for (an answer, ACKs) is transmitted at once, not at the end
        of the task, which may be queued behind bulk work (as triage does).
        """
        if not self.mux.urgent_transport:
            self.mux.use_urgent_transport()
            self.events.emit("transport", "urgent")
        self._on_frames(messages)
        if self._peer_ready and self._failed is None:
            self._pump()

    def _receive(self, datagrams: list[bytes | memoryview]) -> None:
        """Feed the core; HIGH channels' frames first when there is more than one frame.

        A page that was busy finds many messages waiting (the browser queues them
        for it without limit), bulk data ahead of an urgent one: the core's
        ``triage`` takes HIGH channels' frames out first, and what they call for
        (an answer, ACKs) is transmitted before the rest is worked through.
        """
        mux = self.mux
        now = _now()
        if len(datagrams) == 1 and len(datagrams[0]) <= _ONE_FRAME:
            mux.receive_datagram(datagrams[0], now)
        else:
            first, rest = mux.triage(datagrams)
            receive = mux.receive_datagram
            for frame in first:
                receive(frame, now)
            if first and rest:
                self._dispatch()
                self._pump()
            for data in rest:  # whole messages, or what is left of one after triage
                receive(data, now)
        self._dispatch()
        self._schedule_pump()

    def _on_transport_close(self) -> None:
        if self._failed is not None:
            return
        if not self._transports_open.done():
            self._transports_open.set_exception(ConnectionClosedError("mux transports closed"))
            self._transports_open.exception()
        self.transport_lost()

    def _transmit(self) -> None:
        """Send frames until the core has none or a transport is above high water.

        Consecutive frames for the same transport are packed into one message of
        at most ``batch_bytes`` (see :mod:`pyapp.core.framing`), but no bulk frame
        is packed behind an urgent one (a control frame or HIGH DATA): the peer
        sees a message only once all of it has arrived. Once a transport is too
        full for one more fragment, only urgent frames are taken from the core
        (``next_frame(urgent_only=True)``), using up to ``URGENT_HEADROOM`` bytes
        above the high-water mark: a HIGH message then waits behind the bulk data
        already in the browser's buffer, not also behind its drain to low water.
        """
        if self._pumping or self._failed is not None or not self._open or not self._peer_ready:
            return
        self._pumping = True
        mux = self.mux
        reliable, unreliable = self.reliable, self.unreliable
        urgent_channel = self.urgent or reliable  # URGENT frames exist only with self.urgent
        limit = self._batch_limit
        batch: list[bytes] = []
        batch_size = 0
        batch_channel: DataChannel = reliable
        tail_urgent = False
        urgent_only = False
        now = _now()
        try:
            while True:
                frame = self._held
                if frame is None:
                    need = batch_size + _MAX_FRAME
                    if not urgent_only and not (reliable.has_room(need) and unreliable.has_room(need)):
                        urgent_only = True
                    if urgent_only and not (reliable.has_room(need, URGENT_HEADROOM)
                                            and unreliable.has_room(need, URGENT_HEADROOM)):
                        break
                    frame = mux.next_frame(now, urgent_only, True)  # small messages packed
                    if frame is None:
                        break
                transport = frame.transport
                channel = (reliable if transport is _RELIABLE else
                           unreliable if transport is _UNRELIABLE else urgent_channel)
                size = len(frame.data)
                urgent = frame.urgent
                if batch and (channel is not batch_channel or batch_size + size > limit
                              or (tail_urgent and not urgent)):
                    self._send_batch(batch_channel, batch, batch_size)
                    batch, batch_size = [], 0
                if not channel.has_room(batch_size + size, URGENT_HEADROOM if urgent else 0):
                    self._held = frame  # resumes on that channel's bufferedamountlow
                    break
                self._held = None
                batch.append(frame.data)
                batch_size += size
                batch_channel = channel
                tail_urgent = urgent
            if batch:
                self._send_batch(batch_channel, batch, batch_size)
        except ConnectionClosedError:
            self.transport_lost()
        finally:
            self._pumping = False

    @staticmethod
    def _send_batch(channel: DataChannel, batch: list[bytes], size: int) -> None:
        channel.send_nowait(batch[0] if len(batch) == 1 else b"".join(batch), size)
