"""Sans-I/O multiplexer: many logical channels over two (or three) RTCDataChannels.

The sans-I/O convention of ``pyapp.core`` (h11's and aioquic's):

* feed input: every message that arrives on either underlying data channel
  goes to :meth:`Multiplexer.receive_datagram` (or ``receive_frame`` for one
  frame); local commands (``open_channel``, ``send``, ``close_channel`` ...);
* pull events: :meth:`Multiplexer.next_event` until it returns None;
* pull output: :meth:`Multiplexer.next_frame` until it returns None, sending
  each frame on the transport it names;
* timers: :meth:`Multiplexer.get_timer` says when to call
  :meth:`Multiplexer.handle_timer` (message lifetimes, the reorder timeout,
  the drain deadline of a closing unreliable channel).

Nothing is returned as a side channel; time only comes in as ``now`` arguments.

Example (two peers wired back to back)::

    >>> from pyapp.core.mux import MessageReceived, Multiplexer, Priority, Reliability, Role
    >>> a, b = Multiplexer(Role.INITIATOR), Multiplexer(Role.RESPONDER)
    >>> def pump(src, dst):
    ...     while (frame := src.next_frame(now=0.0)) is not None:
    ...         dst.receive_frame(frame.data, now=0.0)
    ...     return list(iter(dst.next_event, None))
    >>> cid = a.open_channel("chat", Reliability.RELIABLE, Priority.HIGH)
    >>> a.send(cid, "hello", now=0.0)
    >>> [type(e).__name__ for e in pump(a, b)]
    ['ChannelOpened', 'MessageReceived']
    >>> [type(e).__name__ for e in pump(b, a)]   # ACCEPT and ACK flow back
    ['ChannelAccepted']
    >>> a.channel_stats(cid).unacked_messages
    0

The pieces: :mod:`pyapp.core.mux_events` (what it reports),
:mod:`pyapp.core.mux_channel` (per-channel state), :mod:`pyapp.core.mux_lifecycle`
(the channel state machine, with its transition table), :mod:`pyapp.core.mux_receive`
(reassembly), :mod:`pyapp.core.mux_send` (ACKs, the send window, DATA fragments),
:mod:`pyapp.core.mux_input` (frames in: ``receive_frame``, ``receive_datagram``,
``triage``), :mod:`pyapp.core.mux_transports` (which transport a channel rides --
RELIABLE, UNRELIABLE, or URGENT for HIGH channels when both sides have it -- loss,
resume) and this module (the API and sending).

Delivery guarantees: reliable channels carry a per-channel message sequence;
the receiver acknowledges cumulatively (ACK = next expected sequence). Every
reliable message stays in a replay buffer from ``send`` until acknowledged.
After :meth:`Multiplexer.transport_lost` / :meth:`Multiplexer.transport_restored`
each side re-sends its unacknowledged messages flagged REPLAY and the receiver
drops the duplicates, so nothing is lost or delivered twice.

Receive window choice: no credit frames. The app consumes each message as it
is returned (nothing delivered stays buffered here); what the mux holds is
reassembly state, bounded per message (``max_message_bytes``) and per channel
(``receive_buffer_limit``) -- past either limit that channel is reset with
reason "message too large" / "receive buffer overflow". Transport-level flow
control is the browser's SCTP window; see ``docs/wire-format.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyapp.core.framing import (
    FLAG_TEXT,
    HEADER_SIZE,
    SEQ_MASK,
    Reliability,
    Transport,
    encode_ack,
    encode_close,
    encode_open,
)
from pyapp.core.mux_channel import Channel, OutMessage
from pyapp.core.mux_events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    ChannelState,
    ChannelStats,
    DeliveryFailed,
    Event,
    MessageDropped,
    MessageReceived,
    MessagesReceived,
    MuxStats,
    OutgoingFrame,
    ProtocolErrorEvent,
    Role,
    SendWindowOpened,
)
from pyapp.core.mux_transports import MuxTransports
from pyapp.core.scheduler import Priority
from pyapp.exceptions import (
    ConnectionClosedError,
    DeliveryError,
    InvalidArgumentError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    SendQueueFull,
)

__all__ = [
    "ChannelAccepted",
    "ChannelClosed",
    "ChannelOpened",
    "ChannelReset",
    "ChannelState",
    "ChannelStats",
    "DeliveryFailed",
    "Event",
    "MessageDropped",
    "MessageReceived",
    "MessagesReceived",
    "MuxStats",
    "Multiplexer",
    "OutgoingFrame",
    "Priority",
    "ProtocolErrorEvent",
    "Reliability",
    "Role",
    "SendQueueFull",
    "SendWindowOpened",
    "Transport",
]

_HIGH = Priority.HIGH


def _message_view(data: object) -> tuple[bytes, int]:
    """What ``send`` queues for ``data``, and its flags: ``str`` is sent as text."""
    if isinstance(data, str):
        return data.encode(), FLAG_TEXT
    if isinstance(data, bytes):
        return data, 0
    if isinstance(data, bytearray | memoryview):
        return bytes(data), 0  # the caller may mutate it after send
    raise InvalidArgumentError(
        f"data must be bytes, bytearray, memoryview or str, got {type(data).__name__}")


class Multiplexer(MuxTransports):
    """Logical channels over a reliable, an unreliable and (optionally) an urgent RTCDataChannel.

    :param role: INITIATOR (even ids) or RESPONDER (odd ids).
    :param max_message_size: the SCTP transport's maxMessageSize; frames never exceed it.
    :param send_queue_limit: per-channel bytes queued before ``send`` refuses (reliable:
        SendQueueFull) or drops old messages (unreliable). A message is always accepted
        into an empty queue, whatever its size.
    :param max_message_bytes: largest message, sent or received (reassembly limit).
    :param receive_buffer_limit: per-channel bytes held in reassembly.
    :param replay_buffer_limit: total unacknowledged reliable bytes before ``send``
        raises DeliveryError (a message is always accepted when the buffer is empty).
    :param max_channels: channels the peer may have open at once.
    :param reorder_window: unreliable channels: a partial message is given up once a
        message this many sequence numbers newer has been seen.
    :param inflight_limit: reliable DATA bytes sent but not yet acknowledged before
        channels below HIGH wait for ACKs (HIGH channels and control frames are
        exempt). Bounds the peer's unprocessed backlog; 0 disables.
    :param reorder_timeout: unreliable channels: seconds without a fragment after which a
        partial message is given up, and a sequence gap counted as lost (see get_timer).
    :param drain_timeout: unreliable channels: seconds a peer's CLOSE waits for the DATA
        it overtook before the missing messages are counted as lost and the close applies.
    :param batch_events: a run of whole messages of one channel that arrived packed in
        one data-channel message comes out as one MessagesReceived instead of one
        MessageReceived each (same messages, same order).

    Bad arguments raise :class:`~pyapp.exceptions.InvalidArgumentError`.
    """

    # ------------------------------------------------------------------ configuration

    @property
    def fragment_size(self) -> int:
        """Largest DATA payload per frame: min(16 KiB, max_message_size - header)."""
        return self._fragment_size

    def set_max_message_size(self, size: int) -> None:
        """Apply the negotiated SCTP maxMessageSize (takes effect from the next fragment)."""
        self._apply_max_message_size(size)

    # ------------------------------------------------------------------ events

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None when there is none for now.

        Call it until it returns None after every input (``receive_frame``,
        ``receive_datagram``, ``handle_timer``) and every local command.
        """
        events = self._events
        return events.popleft() if events else None

    # ------------------------------------------------------------------ local API

    def open_channel(
        self, label: str, reliability: Reliability = Reliability.RELIABLE,
        priority: Priority = Priority.MEDIUM, channel_id: int | None = None,
    ) -> int:
        """Open a channel and return its id; data may be sent on it right away.

        ``channel_id`` picks the id (it must have this side's parity: even for the
        INITIATOR, odd for the RESPONDER, and be free); by default one is allocated.
        """
        self._check_usable()
        if not isinstance(reliability, Reliability) or not isinstance(priority, Priority):
            raise InvalidArgumentError(
                f"reliability must be a Reliability and priority a Priority, got "
                f"{reliability!r}, {priority!r}")
        if channel_id is None:
            cid = self._allocate_id()
        else:
            if not isinstance(channel_id, int) or not 0 <= channel_id <= 0xFFFF:
                raise InvalidArgumentError(f"channel id must be a u16 (0..65535), got {channel_id!r}")
            if channel_id % 2 != self._parity:
                side = "even" if self._parity == 0 else "odd"
                raise InvalidArgumentError(
                    f"channel id {channel_id} has the peer's parity; this side ({self.role.name}) "
                    f"opens {side} ids, so both peers can open channels at once without clashes")
            if channel_id in self._channels or channel_id in self._tombstones:
                raise LocalProtocolError(
                    f"channel id {channel_id} is in use or recently closed: pick another or let "
                    "the multiplexer allocate one (channel_id=None)")
            cid = channel_id
        urgent = self._urgent_peer and priority is _HIGH and reliability.reliable
        frame = encode_open(cid, label, reliability, priority, urgent_stream=urgent)
        if len(frame) > self._max_message_size:
            raise MessageTooLargeError(len(frame), self._max_message_size)
        ch = Channel(cid, label, reliability, priority, True, ChannelState.OPENING)
        self._channels[cid] = ch
        self._route(ch, urgent)
        self._control.append(frame)
        return cid

    def send(self, channel_id: int, data: bytes | bytearray | memoryview | str, now: float) -> None:
        """Queue one message. ``str`` is sent as text, anything else as binary.

        Raises ConnectionClosedError (channel closing/closed), MessageTooLargeError,
        SendQueueFull (reliable channel, queue full: wait for SendWindowOpened) or
        DeliveryError (replay buffer full: the peer is not acknowledging). On an
        unreliable channel a full queue drops whole messages instead (MessageDropped).
        """
        ch = self._channel(channel_id)
        if ch.state is not ChannelState.OPEN and ch.state is not ChannelState.OPENING:
            raise ConnectionClosedError(f"channel {channel_id} is {ch.state.value}")
        view, flags = _message_view(data)
        size = len(view)
        if size > self._max_message_bytes:
            raise MessageTooLargeError(size, self._max_message_bytes)
        queued = ch.queued_bytes
        if queued and queued + size > self._send_limit:
            if ch.reliable:
                ch.wanted = size
                self._waiting.add(ch)
                raise SendQueueFull(channel_id, size, queued, self._send_limit)
            if not self._make_room(ch, size):
                ch.messages_dropped += 1
                self._events.append(MessageDropped(channel_id, False, "send queue full", size))
                return
        if ch.reliable:
            if self._replay_bytes and self._replay_bytes + size > self._replay_limit:
                ch.wanted = size
                self._waiting.add(ch)
                raise DeliveryError(
                    f"replay buffer full: {self._replay_bytes} unacknowledged bytes "
                    f"(limit {self._replay_limit})", 1,
                )
            msg = OutMessage(ch.next_seq, view, flags, now)
            ch.next_seq = (ch.next_seq + 1) & SEQ_MASK
            ch.unacked.append(msg)
            ch.unacked_bytes += size
            self._replay_bytes += size
        else:
            # Unreliable: numbered when its first fragment goes out (next_frame), so
            # the numbers on the wire have no holes for messages dropped here, and a
            # gap the receiver sees is a loss in transit.
            msg = OutMessage(-1, view, flags, now)
            if ch.lifetime is not None:
                self._timed.add(ch)
        ch.queue.append(msg)
        ch.queued_bytes += size
        if not ch.scheduled:
            self._wake(ch)

    def send_many(self, channel_id: int, messages: Sequence[bytes | bytearray | memoryview | str],
                  now: float) -> int:
        """Queue ``messages`` in order, each as its own message, as many as fit now.

        Returns how many were queued. Each is checked and queued as :meth:`send`
        would (``str`` as text, anything else as binary), but a reliable channel
        that cannot take the next one (send queue or replay buffer full) stops
        there instead of raising: the count is then short, and a SendWindowOpened
        for this channel follows once that message fits. An unreliable channel
        takes every message (a full queue drops old ones, as with ``send``).
        ConnectionClosedError, MessageTooLargeError and InvalidArgumentError are
        raised for the message at fault; the ones before it stay queued.
        """
        ch = self._channel(channel_id)
        if not ch.reliable:
            for data in messages:
                self.send(channel_id, data, now)
            return len(messages)
        if ch.state is not ChannelState.OPEN and ch.state is not ChannelState.OPENING:
            raise ConnectionClosedError(f"channel {channel_id} is {ch.state.value}")
        send_limit, replay_limit, max_bytes = self._send_limit, self._replay_limit, self._max_message_bytes
        queue, unacked = ch.queue, ch.unacked
        seq, queued, replay = ch.next_seq, ch.queued_bytes, self._replay_bytes
        count = 0
        try:
            for data in messages:
                if type(data) is bytes:
                    view, flags = data, 0
                else:
                    view, flags = _message_view(data)
                size = len(view)
                if size > max_bytes:
                    raise MessageTooLargeError(size, max_bytes)
                if (queued and queued + size > send_limit) or (replay and replay + size > replay_limit):
                    ch.wanted = size
                    self._waiting.add(ch)
                    break
                msg = OutMessage(seq, view, flags, now)
                seq = (seq + 1) & SEQ_MASK
                unacked.append(msg)
                queue.append(msg)
                queued += size
                replay += size
                count += 1
        finally:
            if count:
                ch.next_seq = seq
                ch.unacked_bytes += queued - ch.queued_bytes
                ch.queued_bytes = queued
                self._replay_bytes = replay
                if not ch.scheduled:
                    self._wake(ch)
        return count

    def can_send(self, channel_id: int, size: int) -> bool:
        """True when ``send`` of ``size`` bytes would be queued now (not refused or dropped).

        When False, a SendWindowOpened event for this channel follows once it would be.
        """
        ch = self._channel(channel_id)
        if ch.state is not ChannelState.OPEN and ch.state is not ChannelState.OPENING:
            return False
        if self._fits(ch, size):
            return True
        ch.wanted = max(size, 1)
        self._waiting.add(ch)
        return False

    def send_queue_bytes(self, channel_id: int) -> int:
        """Payload bytes queued on the channel and not yet handed out by next_frame."""
        return self._channel(channel_id).queued_bytes

    def close_channel(self, channel_id: int) -> None:
        """Close gracefully: queued data is still sent, then CLOSE. Idempotent."""
        ch = self._channel(channel_id)
        if ch.state is ChannelState.OPEN or ch.state is ChannelState.OPENING:
            ch.state = ChannelState.CLOSING
            ch.close_requested = True
            self._waiting.discard(ch)
            if not ch.scheduled:
                self._wake(ch)

    def reset_channel(self, channel_id: int, reason: str) -> int:
        """Abort a channel at once; returns how many of our messages were abandoned."""
        ch = self._channel(channel_id)
        undelivered = ch.undelivered()
        self._queue_reset(ch.id, reason)
        self._remove(ch, ChannelState.RESET)
        return undelivered

    def channel_state(self, channel_id: int) -> ChannelState:
        """Current state of a live channel."""
        return self._channel(channel_id).state

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """Ids of every live channel."""
        return tuple(self._channels)

    def channel_stats(self, channel_id: int) -> ChannelStats:
        """Snapshot of a live channel's counters."""
        return self._channel(channel_id).snapshot()

    def stats(self) -> MuxStats:
        """Snapshot of the connection-wide counters."""
        return MuxStats(
            len(self._channels), self._frames_sent, self._bytes_sent, self._frames_received,
            self._bytes_received, self._frames_ignored, self._errors, self._unattributed,
            self._resets, self._replay_bytes,
        )

    # ------------------------------------------------------------------ transport

    def next_frame(self, now: float, urgent_only: bool = False, pack: bool = False) -> OutgoingFrame | None:
        """The next frame to transmit, or None. Control frames first, then DATA by DRR.

        ``urgent_only``: only control frames and HIGH channels' DATA (frames with
        ``urgent`` set), served ahead of the DRR cycle -- for a transmitter whose
        transport is full of bulk data, so urgent frames need not wait behind it.

        ``pack``: when a reliable channel's turn starts with a whole message, the
        whole messages queued behind it follow in the same ``data``, each its own
        DATA frame, back to back, up to ``HEADER_SIZE + fragment_size`` bytes in
        all (one fragment's worth, so the DRR turn and the SCTP message size are
        kept). The way to send many small messages: one call and one data-channel
        message for many. Such data must be fed to :meth:`receive_datagram`.
        """
        if not self._up:
            return None
        if self._control:
            data = self._control.popleft()
            self._frames_sent += 1
            self._bytes_sent += len(data)
            cid = (data[2] << 8) | data[3]
            return OutgoingFrame(self._transport_of(cid), data, cid, True)
        if self._pending_acks:
            cid, seq = self._pending_acks.popitem()
            data = encode_ack(cid, seq)
            self._frames_sent += 1
            self._bytes_sent += len(data)
            return OutgoingFrame(self._transport_of(cid), data, cid, True)
        sched = self._sched
        while True:
            ch = sched.select_high() if urgent_only else sched.select()
            if ch is None:
                return None
            queue = ch.queue
            if (queue and ch.reliable and self._inflight_limit
                    and self._inflight >= self._inflight_limit and ch.priority is not _HIGH
                    and queue[0].offset == 0):
                # Wait for ACKs (see inflight_limit); woken by _on_ack. Only between
                # messages: the peer acknowledges whole messages, so parking in the
                # middle of one larger than the limit would never be woken.
                sched.served(ch, 0, False)
                ch.scheduled = False
                self._window_parked.append(ch)
                continue
            if queue and (ch.reliable or ch.accepted):
                frame = self._data_frame(ch, now, pack)
                if frame is None:
                    continue  # an expired unreliable message was dropped
                return frame
            if not queue and ch.close_requested and not ch.close_sent:
                sched.served(ch, HEADER_SIZE, False)
                ch.scheduled = False
                # Unreliable: the drain point lets the peer wait for DATA this CLOSE
                # overtakes on the other transport (see mux_lifecycle).
                data = encode_close(ch.id, replay=ch.close_replay,
                                    drain=None if ch.reliable else ch.next_seq)
                self._close_sent(ch)
                self._frames_sent += 1
                self._bytes_sent += len(data)
                return OutgoingFrame(self._transport_of(ch.id), data, ch.id, True)
            # Nothing sendable yet (unreliable channel still OPENING): park it.
            sched.served(ch, 0, False)
            ch.scheduled = False

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (on the clock of ``now``), or None.

        Deadlines: an unsent message on a channel with ``max_packet_life_time``
        expires; a partial unreliable message or a sequence gap saw nothing for
        ``reorder_timeout``; a closing unreliable channel's ``drain_timeout``.
        """
        if not self._timed:
            return None  # the common case (reliable traffic only): no work per call
        deadline: float | None = None
        for ch in list(self._timed):
            when = self._deadline(ch)
            if when is None:
                self._timed.discard(ch)
            elif deadline is None or when < deadline:
                deadline = when
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now``; events and frames follow from the pull methods."""
        for ch in list(self._timed):
            if ch.id not in self._channels or self._channels[ch.id] is not ch:
                self._timed.discard(ch)
                continue
            if ch.lifetime is not None and ch.queue:
                self._expire_queue(ch, now)
            if ch.partials or ch.missing:
                self._expire_reassembly(ch, now)
            if ch.drain_deadline is not None and (now >= ch.drain_deadline or self._drained(ch)):
                try:
                    self._complete_drain(ch)
                except RemoteProtocolError as exc:  # the peer's CLOSE was bad after all
                    self._protocol_error(exc, now)
            if ch.id in self._channels and self._deadline(ch) is None:
                self._timed.discard(ch)
