"""Multiplexed logical channels over one PeerConnection (the browser side of :mod:`pyapp.core.mux`).

A :class:`MuxSession` owns three negotiated RTCDataChannels on a PeerConnection —
``pyapp-mux`` (reliable, ordered), ``pyapp-mux-u`` (``ordered: false``,
``maxRetransmits: 0``) and ``pyapp-mux-h`` (reliable, ordered: HIGH reliable
channels, once the peer's hello on it shows it has one, see :data:`URGENT_LABEL`)
— and runs the sans-I/O :class:`~pyapp.core.mux.Multiplexer` over them. Every logical channel (:class:`MultiplexedChannel`) gets a u16 id
(even ids for the impolite/initiating side, odd for the polite side), a
reliability, a priority, and its own counters.

The pump follows aioquic's adapter shape: on any input (a frame from either
data channel, a local send, ``bufferedamountlow``), feed the core, dispatch its
events, then transmit frames until the core has none or the data channel that
a frame needs is above its high-water mark; a frame that does not fit waits
for that channel's ``bufferedamountlow``. So the browser's ``bufferedAmount``
stays bounded however much is queued, and the scheduler (not the SCTP buffer)
decides what goes next. The reliable transport's mark is kept low (64 KiB,
raised towards ``high_water`` only when the buffer runs dry before a refill:
:class:`~pyapp.core.mux_buffer.BufferTuner`), since a HIGH message waits behind
whatever bulk data is already in it; control frames and HIGH data may exceed
the mark by ``URGENT_HEADROOM`` and never have bulk packed behind them. A batch
of received messages is worked through HIGH channels first
(:meth:`~pyapp.core.mux.Multiplexer.triage`), and what they call for (an echo,
ACKs) is transmitted before the rest.

Receive side: each logical channel has an inbox bounded by ``inbox_limit``
bytes. A consumer that falls that far behind gets its channel reset with the
reason ``"receive queue overflow"`` (the sender sees ChannelResetError); the
other channels are not affected. This is the documented per-channel queue
limit (no credit window; see docs/wire-format.md).

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    from pyapp.browser.mux import DataChannelPriority, DataChannelReliability
    a, b = await connected_pair()
    orders = a.create_data_channel_with_priority("orders", DataChannelPriority.HIGH)
    await orders.send(b"buy 1 BTC")
    incoming = await b.multiplexer().accept()     # the peer's side of "orders"
    print(await incoming.receive())
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import js

from pyapp._events import Emitter
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.end_of_task import end_of_task
from pyapp.browser.mux_channel import MultiplexedChannel
from pyapp.browser.mux_transport import (
    DEFAULT_BATCH_BYTES,
    HELLO_PREFIX,
    RELIABLE_LABEL,
    RELIABLE_TRANSPORT_ID,
    TRANSPORT_HELLO,
    UNRELIABLE_LABEL,
    UNRELIABLE_TRANSPORT_ID,
    URGENT_LABEL,
    URGENT_TRANSPORT_ID,
    _SessionTransports,
)
from pyapp.browser.timer import TimerDriver
from pyapp.core.mux import (
    ChannelAccepted,
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    ChannelStats,
    DeliveryFailed,
    Event,
    MessageDropped,
    MessageReceived,
    MessagesReceived,
    Multiplexer,
    MuxStats,
    OutgoingFrame,
    Priority,
    ProtocolErrorEvent,
    Reliability,
    Role,
    SendWindowOpened,
)
from pyapp.core.mux_buffer import BufferTuner
from pyapp.exceptions import (
    ChannelResetError,
    ConnectionClosedError,
    DeliveryError,
    InvalidArgumentError,
    LocalProtocolError,
    OperationTimeout,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from pyapp.browser.peer import PeerConnection

__all__ = [
    "MuxSession",
    "MultiplexedChannel",
    "DataChannelReliability",
    "DataChannelPriority",
    "RELIABLE_TRANSPORT_ID",
    "HELLO_PREFIX",
    "UNRELIABLE_TRANSPORT_ID",
    "URGENT_TRANSPORT_ID",
    "TRANSPORT_HELLO",
    "RELIABLE_LABEL",
    "UNRELIABLE_LABEL",
    "URGENT_LABEL",
    "RESERVED_PREFIX",
    "is_reserved_label",
    "supports_priority_hint",
]

DataChannelReliability = Reliability
"""Documented alias of :class:`~pyapp.core.framing.Reliability`: ``DataChannelReliability.RELIABLE`` / ``.UNRELIABLE``, or
``DataChannelReliability(ordered=..., max_retransmits=..., max_packet_life_time=...)``."""
DataChannelPriority = Priority
"""Documented alias of :class:`~pyapp.core.scheduler.Priority`: ``VERY_LOW``, ``LOW``, ``MEDIUM``, ``HIGH``."""

RESERVED_PREFIX = "pyapp-"
"""Logical channel labels with this prefix belong to the library, never to accept()."""

_PRIORITY_HINT = {Priority.VERY_LOW: "very-low", Priority.LOW: "low",
                  Priority.MEDIUM: "medium", Priority.HIGH: "high"}


_FLOW_EVENTS = (SendWindowOpened, ChannelAccepted, MessageDropped)


def is_reserved_label(label: str) -> bool:
    """Whether ``label`` is reserved for the library (see :data:`RESERVED_PREFIX`)."""
    return label.startswith(RESERVED_PREFIX)


def supports_priority_hint() -> bool:
    """Whether this browser implements ``priority`` in RTCDataChannelInit (webrtc-priority)."""
    return bool(js.Reflect.has(js.RTCDataChannel.prototype, "priority"))


class MuxSession(_SessionTransports):
    """The multiplexer of one connection: two data channels, many logical channels.

    Create it with :meth:`PeerConnection.multiplexer` (both peers must), which
    picks the role from the perfect-negotiation role so ids never clash.
    Events (``session.events.on``): ``channel`` (a MultiplexedChannel the peer
    opened), ``protocol-error`` (RemoteProtocolError), ``dropped``
    (MessageDropped), ``delivery-failed`` (DeliveryFailed), ``transport`` ("up"/"down").

    Channels whose label starts with ``pyapp-`` are the library's own
    (:meth:`serve_reserved`) and never come out of :meth:`accept`. Peer
    protocol errors are also logged (logger ``pyapp.mux``, once per channel,
    rate-limited), so the reason a channel was reset shows in the console.
    The core's timer (message lifetimes, reorder timeout, close drain) runs on
    one :class:`~pyapp.browser.timer.TimerDriver`.
    """

    def __init__(self, pc: PeerConnection, role: Role | None = None, *,
                 high_water: int = 256 * 1024, low_water: int = 64 * 1024, min_high_water: int = 64 * 1024,
                 inbox_limit: int = 64 * 1024 * 1024, unreliable_max_retransmits: int = 0,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, urgent_transport: bool = True,
                 **mux_options: Any) -> None:
        self.role = role if role is not None else (Role.RESPONDER if pc.polite else Role.INITIATOR)
        mux_options.setdefault("batch_events", True)  # runs of small messages: one event each
        self.mux = Multiplexer(self.role, **mux_options)
        self.events = Emitter()
        self.inbox_limit = inbox_limit
        self.high_water = high_water
        self.low_water = low_water
        self.buffer_tuner = BufferTuner(min(min_high_water, high_water), high_water)
        """Marks of the reliable transport's send buffer, between ``min_high_water`` and ``high_water``."""
        self.unreliable_max_retransmits = unreliable_max_retransmits
        self.urgent_transport_enabled = urgent_transport
        """Whether this side offers the urgent transport (``pyapp-mux-h``); False acts as an
        older pyapp would (for tests and for peers that mishandle unknown streams)."""
        self.channels: dict[int, MultiplexedChannel] = {}
        self.protocol_errors: list[RemoteProtocolError] = []
        self.delivery_failures: list[DeliveryFailed] = []
        self.dropped: list[MessageDropped] = []
        self.paused_drops = 0
        self._incoming: deque[MultiplexedChannel] = deque()
        self._incoming_changed = asyncio.Event()
        self._reserved_handlers: dict[str, Callable[[MultiplexedChannel], None]] = {}
        self._dispatching = False
        self._timer = TimerDriver(self.mux.get_timer, self._on_timer)
        self._held: OutgoingFrame | None = None
        self.session_id = os.urandom(8)
        """Random id of this session; sent in the transport hello."""
        self.peer_session_id: bytes | None = None
        """The peer's session id, from its hello (kept across a resume)."""
        self._peer_ready = False
        self._hello_task: asyncio.Task[Any] | None = None
        self._lost = False
        self._open = False
        self.batch_bytes = batch_bytes
        self._batch_limit = min(batch_bytes, DEFAULT_BATCH_BYTES)
        self._pumping = False
        self._pump_scheduled = False
        self._failed: BaseException | None = None
        self._paused: set[Priority] = set()
        self._paused_unreliable: set[Priority] = set()
        self._unpaused: asyncio.Event = asyncio.Event()
        self._unpaused.set()
        self._hold_delivery = False
        self._held_events: list[Event] = []
        self._transports_open: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.pc: PeerConnection = pc
        self.reliable: DataChannel
        self.unreliable: DataChannel
        self.urgent: DataChannel | None = None
        self._attach(pc)

    # ------------------------------------------------------------------ transports

    @property
    def transports_open(self) -> bool:
        """Both underlying data channels are open."""
        return self._open

    @property
    def urgent_transport(self) -> bool:
        """The peer has the urgent transport (``pyapp-mux-h``): HIGH reliable channels opened
        from now on ride it (see :data:`~pyapp.browser.mux.URGENT_LABEL`)."""
        return self.mux.urgent_transport

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until both underlying data channels are open."""
        await asyncio.wait_for(asyncio.shield(self._transports_open), timeout)

    @property
    def resume_token(self) -> str | None:
        """What a redial offer carries so the peer can pick the session to resume."""
        return None if self.peer_session_id is None else self.peer_session_id.hex()

    @property
    def failed(self) -> bool:
        """True once :meth:`fail` ran (the session cannot resume)."""
        return self._failed is not None

    def transport_lost(self) -> None:
        """The data channels died: keep every unacknowledged message for a resume."""
        if self._failed is not None or self._lost:
            return
        self._lost = True
        self._open = False
        self.mux.transport_lost()
        self._held = None
        self.events.emit("transport", "down")

    def resume_on(self, pc: PeerConnection) -> None:
        """Continue on a fresh connection to the same peer (after a redial).

        Both peers must call it on their new PeerConnection; every reliable
        message the other side has not acknowledged is sent again and duplicates
        are dropped, so nothing is lost or delivered twice.
        """
        if self._failed is not None:
            raise ConnectionClosedError(f"mux session failed: {self._failed}")
        self.transport_lost()
        for channel in self._transports():
            channel.events.clear()
            if not channel.closed:
                channel.close()
        self._transports_open = asyncio.get_event_loop().create_future()
        self.mux.transport_restored()
        self._lost = False
        self._peer_ready = False
        self._attach(pc)

    # ------------------------------------------------------------------ pump

    def _after_local_action(self) -> None:
        self._dispatch()
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        """Pump once, at the end of this task, whatever the task queued.

        A burst of sends (or a batch of received frames and the ACKs they call
        for) then leaves packed into a few data-channel messages instead of one
        message per frame: measured on 5,000 100-byte sends, 9,050 SCTP messages
        before. The page's :func:`~pyapp.browser.end_of_task.end_of_task` queue runs it
        (a MessageChannel task, as ``call_soon`` is, but one cheap entry into
        Python for every session's pump instead of an asyncio callback each).
        """
        if not self._pump_scheduled:
            self._pump_scheduled = True
            end_of_task().call(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        if self._failed is None:
            self._pump()

    def _pump(self) -> None:
        """Transmit what the core has, hand out its events, re-arm its timer."""
        self._transmit()
        self._dispatch()
        self._timer.rearm()  # the core's get_timer(): lifetimes, reorder timeout, drains

    def _on_timer(self, now: float) -> None:
        if self._failed is not None:
            return
        self.mux.handle_timer(now)
        self._dispatch()
        self._pump()

    # ------------------------------------------------------------------ events

    def _dispatch(self) -> None:
        """Take every event the core has queued (in order) and act on it.

        Not re-entered: a callback that sends (an echo) queues new events, which
        the loop already running picks up, so the stack stays flat.
        """
        if self._dispatching:
            return
        self._dispatching = True
        try:
            next_event = self.mux.next_event
            while (event := next_event()) is not None:
                self._handle(event)
        finally:
            self._dispatching = False

    def _handle(self, event: Event) -> None:
        if self._hold_delivery and not isinstance(event, _FLOW_EVENTS):
            # Hold everything the peer caused (in order) except flow-control news.
            self._held_events.append(event)
            return
        if isinstance(event, MessageReceived):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._deliver(event.data)
        elif isinstance(event, MessagesReceived):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._deliver_many(event.messages)
        elif isinstance(event, SendWindowOpened):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._window.set()
        elif isinstance(event, ChannelOpened):
            channel = MultiplexedChannel(self, event.channel_id, event.label,
                                         event.reliability, event.priority, local=False)
            channel._accepted.set_result(None)
            self.channels[event.channel_id] = channel
            self._on_peer_channel(channel)
        elif isinstance(event, ChannelAccepted):
            channel = self.channels.get(event.channel_id)
            if channel is not None and not channel._accepted.done():
                channel._accepted.set_result(None)
                channel.events.emit("open")
        elif isinstance(event, ChannelClosed):
            channel = self.channels.pop(event.channel_id, None)
            if channel is not None:
                channel._finish(None, event.stats)
        elif isinstance(event, ChannelReset):
            channel = self.channels.pop(event.channel_id, None)
            if channel is not None:
                channel._finish(ChannelResetError(event.channel_id, event.reason), event.stats)
        elif isinstance(event, ProtocolErrorEvent):
            self._record_error(event.error)
        elif isinstance(event, MessageDropped):
            self.dropped.append(event)
            del self.dropped[:-1000]
            self.events.emit("dropped", event)
        elif isinstance(event, DeliveryFailed):
            self.delivery_failures.append(event)
            self.events.emit("delivery-failed", event)

    def _record_error(self, error: RemoteProtocolError) -> None:
        self.protocol_errors.append(error)
        del self.protocol_errors[:-1000]
        self.events.emit("protocol-error", error)

    def _reset_local(self, channel: MultiplexedChannel, reason: str) -> None:
        try:
            self.mux.reset_channel(channel.channel_id, reason)
        except (LocalProtocolError, ConnectionClosedError):
            pass  # already gone in the core; finish our side below
        self.channels.pop(channel.channel_id, None)
        channel._finish(ChannelResetError(channel.channel_id, reason), channel.last_stats)
        self._after_local_action()

    # ------------------------------------------------------------------ channels

    def create_multiplexed_channel(self, channel_id: int | None = None, *, label: str = "",
                                   reliability: Reliability | None = None,
                                   priority: Priority | None = None) -> MultiplexedChannel:
        """Open a logical channel (documented API name). ``channel_id`` (u16) must have this side's
        parity (even for the impolite peer, odd for the polite one); default: allocated."""
        reliability = reliability if reliability is not None else Reliability.RELIABLE
        priority = priority if priority is not None else Priority.MEDIUM
        if self._failed is not None:
            raise ConnectionClosedError(f"mux session failed: {self._failed}")
        cid = self.mux.open_channel(label, reliability, priority, channel_id)
        channel = MultiplexedChannel(self, cid, label, reliability, priority, local=True)
        self.channels[cid] = channel
        self._after_local_action()
        return channel

    def create_data_channel_with_reliability(self, label: str,
                                             reliability: Reliability) -> MultiplexedChannel:
        """A logical channel with the given reliability (documented API name)."""
        return self.create_multiplexed_channel(label=label, reliability=reliability)

    def create_data_channel_with_priority(self, label: str, priority: Priority,
                                          reliability: Reliability | None = None) -> MultiplexedChannel:
        """A logical channel with the given priority (and optionally reliability) (documented API name)."""
        return self.create_multiplexed_channel(label=label, priority=priority, reliability=reliability)

    def _on_peer_channel(self, channel: MultiplexedChannel) -> None:
        handler = self._reserved_handlers.get(channel.label)
        if handler is not None:
            handler(channel)
            return
        self._incoming.append(channel)
        self._incoming_changed.set()
        # Until every library part uses serve_reserved(), reserved channels are still
        # announced here (the probe responder listens); accept() never returns them.
        self.events.emit("channel", channel)

    def serve_reserved(self, label: str, handler: Callable[[MultiplexedChannel], None]) -> None:
        """Hand every channel the peer opens with the reserved ``label`` to ``handler``.

        Labels starting with ``pyapp-`` belong to the library (the quality probe
        uses ``pyapp-probe``); such channels never reach :meth:`accept`. Those the
        peer opened before the handler was installed are handed over now.
        """
        if not is_reserved_label(label):
            raise InvalidArgumentError(
                f"label must start with {RESERVED_PREFIX!r} to be reserved, got {label!r}")
        self._reserved_handlers[label] = handler
        early = [c for c in self._incoming if c.label == label]
        for channel in early:
            self._incoming.remove(channel)
            handler(channel)

    def _pop_incoming(self) -> MultiplexedChannel | None:
        for channel in self._incoming:
            if not is_reserved_label(channel.label):
                self._incoming.remove(channel)
                return channel
        return None

    async def accept(self, timeout: float | None = None) -> MultiplexedChannel:
        """The next logical channel the peer opened (never one with a reserved label).

        Several concurrent ``accept()`` calls are served in call order, one
        channel each. Raises ConnectionClosedError once the session failed.
        """
        async def wait() -> MultiplexedChannel:
            while True:
                channel = self._pop_incoming()
                if channel is not None:
                    return channel
                if self._failed is not None:
                    raise ConnectionClosedError(f"mux session failed: {self._failed}")
                self._incoming_changed.clear()
                await self._incoming_changed.wait()
        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise OperationTimeout(f"no channel from the peer within {timeout} s",
                                   operation="accept", timeout=timeout) from None

    # ------------------------------------------------------------------ power saving & auth gating

    def set_paused_priorities(self, priorities: set[Priority] | frozenset[Priority] | None = None, *,
                              bulk: bool | None = None,
                              unreliable_low_priority: bool | None = None) -> None:
        """Pause sending on some channels (power saving; the battery policy calls this).

        ``priorities``: channels of these priorities are paused. ``bulk=True``
        pauses VERY_LOW channels; ``unreliable_low_priority=True`` pauses the
        unreliable LOW and VERY_LOW channels. While paused, a reliable channel's
        ``send`` waits (nothing is lost); an unreliable channel's messages are
        dropped and counted in ``paused_drops`` (loss-tolerant by contract).

        Example::

            session.set_paused_priorities(bulk=True, unreliable_low_priority=True)
            session.set_paused_priorities(set())          # resume everything
        """
        if priorities is not None:
            self._paused = set(priorities)
            self._paused_unreliable = set()
        if bulk is not None:
            self._paused = {Priority.VERY_LOW} if bulk else set()
        if unreliable_low_priority is not None:
            self._paused_unreliable = ({Priority.LOW, Priority.VERY_LOW}
                                       if unreliable_low_priority else set())
        # Only reliable senders wait, and only on ``_paused``.
        if self._paused:
            self._unpaused.clear()
        else:
            self._unpaused.set()

    @property
    def paused_priorities(self) -> frozenset[Priority]:
        """Priorities whose channels are paused (reliable and unreliable)."""
        return frozenset(self._paused)

    def _is_paused(self, channel: MultiplexedChannel) -> bool:
        if channel.priority in self._paused:
            return True
        return not channel.reliability.reliable and channel.priority in self._paused_unreliable

    async def _wait_unpaused(self, channel: MultiplexedChannel) -> bool:
        """Wait while the channel is paused; False means: drop this message."""
        while self._is_paused(channel):
            if not channel.reliability.reliable:
                self.paused_drops += 1
                return False
            self._unpaused.clear()
            await self._unpaused.wait()
        return True

    def hold_delivery(self) -> None:
        """Hold inbound application messages and channels (until authentication succeeds)."""
        self._hold_delivery = True

    def release_delivery(self) -> None:
        """Deliver what was held, in order, and stop holding."""
        self._hold_delivery = False
        held, self._held_events = self._held_events, []
        for event in held:
            self._handle(event)
        self._dispatch()

    # ------------------------------------------------------------------ stats & end

    def stats(self) -> MuxStats:
        return self.mux.stats()

    def channel_stats(self) -> list[tuple[str, ChannelStats]]:
        """(label, counters) for every live logical channel."""
        out = []
        for channel in list(self.channels.values()):
            stats = channel.stats
            if stats is not None:
                out.append((channel.label, stats))
        return out

    def fail(self, reason: str) -> list[DeliveryFailed]:
        """The peer is gone for good: end every channel; undelivered messages are reported.

        Pending and future ``send`` calls raise DeliveryError/ChannelResetError;
        the returned DeliveryFailed events list the messages that never arrived.
        """
        if self._failed is not None:
            return []
        self.mux.fail_all(reason)
        events = list(iter(self.mux.next_event, None))
        self._failed = DeliveryError(reason, sum(len(e.messages) for e in events
                                                 if isinstance(e, DeliveryFailed)))
        self._timer.cancel()
        failures = [e for e in events if isinstance(e, DeliveryFailed)]
        for failure in failures:
            channel = self.channels.get(failure.channel_id)
            if channel is not None:
                channel._finish(failure.error, channel.last_stats)
        for event in events:
            self._handle(event)
        for channel in list(self.channels.values()):
            channel._finish(ConnectionClosedError(reason), channel.last_stats)
        self.channels.clear()
        self._unpaused.set()
        self._incoming_changed.set()
        return failures

    def close(self) -> None:
        """Close every logical channel gracefully and stop (the PeerConnection stays)."""
        for channel in list(self.channels.values()):
            channel.close()
        self._pump()

