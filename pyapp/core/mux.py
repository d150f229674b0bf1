"""Sans-I/O multiplexer: many logical channels over two RTCDataChannels.

Feed every message that arrives on either underlying data channel to
:meth:`Multiplexer.receive_frame`, act on the events it returns, and send
whatever :meth:`Multiplexer.next_frame` hands out on the transport it names
until it returns None. Time only comes in as ``now`` arguments.

Example (two peers wired back to back)::

    >>> from pyapp.core.mux import MessageReceived, Multiplexer, Priority, Reliability, Role
    >>> a, b = Multiplexer(Role.INITIATOR), Multiplexer(Role.RESPONDER)
    >>> def pump(src, dst):
    ...     events = []
    ...     while (frame := src.next_frame(now=0.0)) is not None:
    ...         events += dst.receive_frame(frame.data, now=0.0)
    ...     return events
    >>> cid = a.open_channel("chat", Reliability.RELIABLE, Priority.HIGH)
    >>> a.send(cid, "hello", now=0.0)
    >>> [type(e).__name__ for e in pump(a, b)]
    ['ChannelOpened', 'MessageReceived']
    >>> [type(e).__name__ for e in pump(b, a)]   # ACCEPT and ACK flow back
    ['ChannelAccepted']
    >>> a.channel_stats(cid).unacked_messages
    0

Logical channel states (the only transitions; anything else is an error)::

    state           event                                   next state
    --------------  --------------------------------------  -----------------------------
    (none)          open_channel()                          OPENING  (OPEN queued)
    (none)          peer OPEN (peer's id parity)            OPEN     (ACCEPT queued, ChannelOpened)
    OPENING         peer ACCEPT                             OPEN     (ChannelAccepted)
    OPENING, OPEN   close_channel()                         CLOSING  (CLOSE sent after queued DATA)
    OPENING, OPEN   peer CLOSE                              CLOSE_RECEIVED (ChannelClosed by_peer)
    CLOSING         peer CLOSE, our CLOSE already sent      CLOSED   (ChannelClosed)
    CLOSING         peer CLOSE, our CLOSE not yet sent      CLOSE_RECEIVED (ChannelClosed)
    CLOSE_RECEIVED  our CLOSE sent, all DATA acked          CLOSED
    CLOSE_RECEIVED  our CLOSE sent, DATA unacked            (lingers until ACK or peer CLOSE)
    any             reset_channel() / bad peer input        RESET    (RESET queued, ChannelReset)
    any             peer RESET                              RESET    (ChannelReset by_peer)

CLOSED and RESET channels are forgotten; their id is remembered (a bounded
"tombstone" list) so frames that crossed the close/reset are ignored, not
treated as errors, and ids are not reused while tombstoned.

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

import enum
from collections import deque
from dataclasses import dataclass, field

from pyapp.core.framing import (
    FLAG_FIRST,
    FLAG_LAST,
    FLAG_REPLAY,
    FLAG_TEXT,
    HEADER,
    HEADER_SIZE,
    MAX_FRAGMENT_PAYLOAD,
    OPEN_FIXED,
    SEQ_MASK,
    VERSION,
    Frame,
    FrameType,
    Reliability,
    Transport,
    decode_frame,
    decode_open,
    decode_reason,
    encode_accept,
    encode_ack,
    encode_close,
    encode_open,
    encode_reset,
)
from pyapp.core.scheduler import DeficitRoundRobin, Priority
from pyapp.exceptions import (
    ConnectionClosedError,
    DeliveryError,
    FrameError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
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

_HALF = 1 << 31
_pack_header = HEADER.pack
_DATA = FrameType.DATA
_RELIABLE = Transport.RELIABLE
_HIGH = Priority.HIGH
_UNRELIABLE = Transport.UNRELIABLE


class Role(enum.Enum):
    """Which end of the connection this is; decides the channel id parity."""

    INITIATOR = "initiator"
    """the offerer / DTLS client: even channel ids (as RFC 8832 does for SCTP streams)"""
    RESPONDER = "responder"
    """the answerer: odd channel ids"""


class ChannelState(enum.Enum):
    """Life cycle of a logical channel; see the table in the module docstring."""

    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSE_RECEIVED = "close-received"
    CLOSED = "closed"
    RESET = "reset"


class SendQueueFull(LocalProtocolError):
    """``send`` on a reliable channel whose send queue is full; wait for SendWindowOpened."""

    def __init__(self, channel_id: int, size: int, queued: int, limit: int) -> None:
        super().__init__(
            f"channel {channel_id}: send queue full ({queued} bytes queued, "
            f"limit {limit}, message {size} bytes)"
        )
        self.channel_id = channel_id
        self.size = size
        self.queued = queued
        self.limit = limit


class OutgoingFrame:
    """One frame to send: put ``data`` on the data channel named by ``transport``."""

    __slots__ = ("channel_id", "data", "transport")

    def __init__(self, transport: Transport, data: bytes, channel_id: int) -> None:
        self.transport = transport
        """RELIABLE or UNRELIABLE underlying RTCDataChannel"""
        self.data = data
        """the complete frame, header included: exactly one data channel message"""
        self.channel_id = channel_id
        """the logical channel the frame belongs to (for logging/stats)"""

    def __repr__(self) -> str:
        return f"OutgoingFrame({self.transport.name}, {len(self.data)} bytes, ch {self.channel_id})"


# ----------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counters of one logical channel at one moment."""

    channel_id: int
    """the channel id"""
    label: str
    """label given at open"""
    state: ChannelState
    """state when the snapshot was taken"""
    priority: Priority
    """scheduling priority"""
    reliable: bool
    """True when the channel rides the reliable transport"""
    messages_sent: int
    """messages whose last fragment was handed out by next_frame"""
    bytes_sent: int
    """payload bytes handed out by next_frame"""
    messages_received: int
    """messages delivered to the app"""
    bytes_received: int
    """payload bytes delivered to the app"""
    queued_messages: int
    """messages waiting (entirely or partly) in the send queue"""
    queued_bytes: int
    """payload bytes not yet handed out by next_frame"""
    unacked_messages: int
    """reliable messages in the replay buffer (sent or queued, not yet acknowledged)"""
    unacked_bytes: int
    """bytes of those messages"""
    messages_dropped: int
    """outbound messages dropped (unreliable channel under pressure or past its lifetime)"""
    messages_incomplete: int
    """inbound unreliable messages discarded because fragments went missing"""
    duplicates_ignored: int
    """inbound replayed frames dropped as duplicates or late"""
    errors: int
    """protocol errors attributed to this channel"""
    frames_sent: int
    """DATA frames handed out"""
    frames_received: int
    """frames received for this channel"""
    queueing_delay_total: float
    """sum over sent messages of (time of last fragment out - time of send)"""
    queueing_delay_max: float
    """largest such delay"""
    messages_lost: int = 0
    """inbound unreliable messages of which no fragment ever arrived (a sequence gap
    older than the reorder window)"""

    @property
    def queueing_delay_mean(self) -> float:
        """Mean queueing delay per sent message (0.0 before any)."""
        return self.queueing_delay_total / self.messages_sent if self.messages_sent else 0.0


@dataclass(frozen=True, slots=True)
class MuxStats:
    """Connection-wide counters."""

    channels: int
    """logical channels currently known"""
    frames_sent: int
    """frames handed out by next_frame"""
    bytes_sent: int
    """wire bytes handed out (headers included)"""
    frames_received: int
    """frames passed to receive_frame"""
    bytes_received: int
    """wire bytes passed to receive_frame"""
    frames_ignored: int
    """frames dropped without error (crossed a close/reset, late, or transport down)"""
    protocol_errors: int
    """every peer protocol error"""
    unattributed_errors: int
    """errors that matched no live channel (garbage, unknown channel ...)"""
    channels_reset: int
    """channels reset, by either side"""
    replay_bytes: int
    """bytes held in the replay buffer (reliable, unacknowledged)"""


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything the multiplexer reports."""


@dataclass(frozen=True, slots=True)
class ChannelOpened(Event):
    """The peer opened a channel; it was accepted automatically."""

    channel_id: int
    """the new channel's id (peer's parity)"""
    label: str
    """label the peer gave"""
    reliability: Reliability
    """the peer's reliability settings"""
    priority: Priority
    """the peer's priority (also used for our sends on it)"""


@dataclass(frozen=True, slots=True)
class ChannelAccepted(Event):
    """The peer accepted a channel we opened."""

    channel_id: int
    """the channel id"""


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A complete message arrived."""

    channel_id: int
    """the channel it arrived on"""
    data: bytes | str
    """the message: ``str`` when sent as text, else ``bytes``"""


@dataclass(frozen=True, slots=True)
class ChannelClosed(Event):
    """A channel closed gracefully; all of the peer's data has been delivered."""

    channel_id: int
    """the channel id"""
    by_peer: bool
    """True when the peer started the close"""
    stats: ChannelStats
    """final counters"""


@dataclass(frozen=True, slots=True)
class ChannelReset(Event):
    """A channel was aborted: by the peer, or locally after a peer protocol error."""

    channel_id: int
    """the channel id"""
    reason: str
    """why (from the peer's RESET frame, or our error)"""
    by_peer: bool
    """True when the peer sent RESET"""
    undelivered: int
    """our messages that were queued or unacknowledged and are now abandoned"""
    stats: ChannelStats
    """final counters"""


@dataclass(frozen=True, slots=True)
class ProtocolErrorEvent(Event):
    """The peer sent something invalid. The frame was dropped; the connection lives on."""

    error: RemoteProtocolError
    """the typed error (usually a FrameError)"""
    channel_id: int | None
    """the channel it concerned, or None when unattributable"""


@dataclass(frozen=True, slots=True)
class MessageDropped(Event):
    """A whole message was dropped on an unreliable channel (never a partial one)."""

    channel_id: int
    """the channel id"""
    inbound: bool
    """True: an incoming message lost fragments; False: our send was dropped"""
    reason: str
    """one of: send queue full, lifetime expired, incomplete, late"""
    size: int
    """payload bytes of the dropped message (received bytes, when inbound)"""


@dataclass(frozen=True, slots=True)
class SendWindowOpened(Event):
    """A channel on which ``send`` failed or ``can_send`` said no can take that message now."""

    channel_id: int
    """the channel id"""
    available: int
    """bytes that can be queued before the send-queue limit"""


@dataclass(frozen=True, slots=True)
class DeliveryFailed(Event):
    """From :meth:`Multiplexer.fail_all`: messages that will never be delivered."""

    channel_id: int
    """the channel id"""
    reason: str
    """why the connection was given up"""
    messages: tuple[bytes | str, ...] = field(repr=False)
    """the undelivered messages, oldest first (reliable: unacknowledged; unreliable: queued)"""

    @property
    def error(self) -> DeliveryError:
        """The same as an exception, for an adapter to raise to waiting senders."""
        return DeliveryError(f"channel {self.channel_id}: {self.reason}", len(self.messages))


# -------------------------------------------------------------------------- internals


class _OutMessage:
    __slots__ = ("data", "done", "enqueued", "flags", "fragment", "offset", "seq", "size")

    def __init__(self, seq: int, data: memoryview, flags: int, enqueued: float) -> None:
        self.seq = seq
        self.data = data
        self.size = len(data)
        self.flags = flags  # FLAG_TEXT and, after a restore, FLAG_REPLAY
        self.enqueued = enqueued
        self.offset = 0
        self.fragment = 0
        self.done = False  # every fragment handed out at least once


class _Partial:
    """An unreliable message being reassembled (fragments may arrive in any order)."""

    __slots__ = ("fragments", "last", "size", "text")

    def __init__(self, text: int) -> None:
        self.fragments: dict[int, memoryview] = {}
        self.last = -1
        self.size = 0
        self.text = text


class _Channel:
    __slots__ = (
        "accepted",
        "bytes_received",
        "bytes_sent",
        "close_replay",
        "close_requested",
        "close_sent",
        "closed_reported",
        "delay_max",
        "delay_total",
        "delivered_seq",
        "duplicates",
        "errors",
        "finished",
        "finished_order",
        "frames_received",
        "frames_sent",
        "id",
        "label",
        "lifetime",
        "local",
        "messages_dropped",
        "messages_incomplete",
        "messages_lost",
        "messages_received",
        "messages_sent",
        "missing",
        "newest_seq",
        "next_seq",
        "partials",
        "parts",
        "parts_bytes",
        "parts_text",
        "priority",
        "queue",
        "queued_bytes",
        "recv_frag",
        "recv_seq",
        "reliability",
        "reliable",
        "scheduled",
        "state",
        "transport",
        "unacked",
        "unacked_bytes",
        "wanted",
    )

    def __init__(
        self, cid: int, label: str, reliability: Reliability, priority: Priority,
        local: bool, state: ChannelState,
    ) -> None:
        self.id = cid
        self.label = label
        self.reliability = reliability
        self.priority = priority
        self.reliable = reliability.reliable
        self.transport = reliability.transport
        life = reliability.max_packet_life_time
        self.lifetime = None if life is None else life / 1000.0
        self.local = local
        self.accepted = not local
        self.state = state
        self.scheduled = False
        self.close_requested = False
        self.close_sent = False
        self.close_replay = False
        self.closed_reported = False
        self.wanted = 0  # size a refused sender is waiting to queue (0: nobody waits)
        # send side
        self.queue: deque[_OutMessage] = deque()
        self.queued_bytes = 0
        self.unacked: deque[_OutMessage] = deque()  # reliable only; queue is a suffix of it
        self.unacked_bytes = 0
        self.next_seq = 0
        # receive side, reliable: strictly sequential
        self.recv_seq = 0
        self.recv_frag = 0
        self.parts: list[memoryview] = []
        self.parts_bytes = 0
        self.parts_text = 0
        # receive side, unreliable: several messages may be in flight
        self.partials: dict[int, _Partial] = {}
        self.finished: set[int] = set()
        self.finished_order: deque[int] = deque()
        self.newest_seq = -1  # newest sequence seen (-1: none yet)
        self.missing: set[int] = set()  # unreliable: sequence gaps not yet seen or given up
        self.messages_lost = 0
        self.delivered_seq = -1  # ordered unreliable: newest delivered (-1: none yet)
        # counters
        self.messages_sent = self.bytes_sent = self.frames_sent = 0
        self.messages_received = self.bytes_received = self.frames_received = 0
        self.messages_dropped = self.messages_incomplete = self.duplicates = self.errors = 0
        self.delay_total = self.delay_max = 0.0

    def partial_bytes(self) -> int:
        return self.parts_bytes + sum(p.size for p in self.partials.values())


def _behind(a: int, b: int) -> bool:
    """True when sequence ``a`` is before ``b`` (serial number arithmetic, RFC 1982)."""
    return 0 < ((b - a) & SEQ_MASK) < _HALF


# ------------------------------------------------------------------------ multiplexer


class Multiplexer:
    """Logical channels over one reliable and one unreliable RTCDataChannel.

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
    """

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int = 65536,
        send_queue_limit: int = 1 << 20,
        max_message_bytes: int = 128 << 20,
        receive_buffer_limit: int = 128 << 20,
        replay_buffer_limit: int = 128 << 20,
        max_channels: int = 1024,
        reorder_window: int = 16,
        inflight_limit: int = 256 << 10,
    ) -> None:
        if not isinstance(role, Role):
            raise LocalProtocolError(f"role must be a Role, got {role!r}")
        self.role = role
        self._parity = 0 if role is Role.INITIATOR else 1
        self._next_id = self._parity
        self._fragment_size = MAX_FRAGMENT_PAYLOAD
        self._max_message_size = 0
        self.set_max_message_size(max_message_size)
        self._send_limit = send_queue_limit
        self._max_message_bytes = max_message_bytes
        self._recv_limit = receive_buffer_limit
        self._replay_limit = replay_buffer_limit
        self._max_channels = max_channels
        self._window = reorder_window
        # Reliable DATA sent and not yet acknowledged, connection-wide. Below HIGH,
        # channels wait while it is at the limit: ACKs leave the receiver only when
        # its application has taken the message, so this bounds the receiver's
        # backlog (a browser delivers data-channel messages to the page however
        # far behind the page is) and with it the latency of HIGH messages.
        self._inflight_limit = inflight_limit
        self._inflight = 0
        self._window_parked: list[_Channel] = []

        self._channels: dict[int, _Channel] = {}
        self._tombstones: dict[int, ChannelState] = {}
        self._tombstone_order: deque[int] = deque()
        self._recent_resets: deque[tuple[int, str]] = deque(maxlen=256)
        self._control: deque[bytes] = deque()
        self._pending_acks: dict[int, int] = {}
        self._sched: DeficitRoundRobin[_Channel] = DeficitRoundRobin(
            MAX_FRAGMENT_PAYLOAD + HEADER_SIZE
        )
        self._waiting: set[_Channel] = set()
        self._events: list[Event] = []
        self._replay_bytes = 0
        self._up = True
        self._failed = False
        # counters
        self._frames_sent = self._bytes_sent = 0
        self._frames_received = self._bytes_received = self._frames_ignored = 0
        self._errors = self._unattributed = self._resets = 0

    # ------------------------------------------------------------------ configuration

    @property
    def fragment_size(self) -> int:
        """Largest DATA payload per frame: min(16 KiB, max_message_size - header)."""
        return self._fragment_size

    def set_max_message_size(self, size: int) -> None:
        """Apply the negotiated SCTP maxMessageSize (takes effect from the next fragment)."""
        if size < HEADER_SIZE + OPEN_FIXED.size + 64:
            raise LocalProtocolError(f"max_message_size {size} is too small")
        self._max_message_size = size
        self._fragment_size = min(MAX_FRAGMENT_PAYLOAD, size - HEADER_SIZE)

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
            raise LocalProtocolError("reliability must be a Reliability, priority a Priority")
        if channel_id is None:
            cid = self._allocate_id()
        else:
            if not isinstance(channel_id, int) or not 0 <= channel_id <= 0xFFFF:
                raise LocalProtocolError(f"channel id must be a u16, got {channel_id!r}")
            if channel_id % 2 != self._parity:
                side = "even" if self._parity == 0 else "odd"
                raise LocalProtocolError(
                    f"channel id {channel_id} has the peer's parity; this side ({self.role.name}) "
                    f"opens {side} ids, so both peers can open channels at once without clashes")
            if channel_id in self._channels or channel_id in self._tombstones:
                raise LocalProtocolError(f"channel id {channel_id} is in use or recently closed")
            cid = channel_id
        frame = encode_open(cid, label, reliability, priority)
        if len(frame) > self._max_message_size:
            raise MessageTooLargeError(len(frame), self._max_message_size)
        ch = _Channel(cid, label, reliability, priority, True, ChannelState.OPENING)
        self._channels[cid] = ch
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
        if isinstance(data, str):
            view = memoryview(data.encode())
            flags = FLAG_TEXT
        elif isinstance(data, bytes):
            view = memoryview(data)
            flags = 0
        elif isinstance(data, bytearray | memoryview):
            view = memoryview(bytes(data))  # the caller may mutate it after send
            flags = 0
        else:
            raise LocalProtocolError(f"cannot send {type(data).__name__}")
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
            msg = _OutMessage(ch.next_seq, view, flags, now)
            ch.unacked.append(msg)
            ch.unacked_bytes += size
            self._replay_bytes += size
        else:
            msg = _OutMessage(ch.next_seq, view, flags, now)
        ch.next_seq = (ch.next_seq + 1) & SEQ_MASK
        ch.queue.append(msg)
        ch.queued_bytes += size
        if not ch.scheduled:
            self._wake(ch)

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
        undelivered = self._undelivered_count(ch)
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
        return self._snapshot(self._channel(channel_id))

    def stats(self) -> MuxStats:
        """Snapshot of the connection-wide counters."""
        return MuxStats(
            len(self._channels), self._frames_sent, self._bytes_sent, self._frames_received,
            self._bytes_received, self._frames_ignored, self._errors, self._unattributed,
            self._resets, self._replay_bytes,
        )

    def pop_events(self) -> list[Event]:
        """Events produced outside receive_frame (by send, next_frame, ...)."""
        events = self._events
        self._events = []
        return events

    # ------------------------------------------------------------------ transport

    def next_frame(self, now: float) -> OutgoingFrame | None:
        """The next frame to transmit, or None. Control frames first, then DATA by DRR."""
        if not self._up:
            return None
        if self._control:
            data = self._control.popleft()
            self._frames_sent += 1
            self._bytes_sent += len(data)
            return OutgoingFrame(_RELIABLE, data, (data[2] << 8) | data[3])
        if self._pending_acks:
            cid, seq = self._pending_acks.popitem()
            data = encode_ack(cid, seq)
            self._frames_sent += 1
            self._bytes_sent += len(data)
            return OutgoingFrame(_RELIABLE, data, cid)
        sched = self._sched
        while True:
            ch = sched.select()
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
                msg = queue[0]
                offset = msg.offset
                if offset == 0 and ch.lifetime is not None and now - msg.enqueued > ch.lifetime:
                    # maxPacketLifeTime also covers time spent in our queue.
                    queue.popleft()
                    ch.queued_bytes -= msg.size
                    ch.messages_dropped += 1
                    self._events.append(MessageDropped(ch.id, False, "lifetime expired", msg.size))
                    if not queue and not ch.close_requested:
                        sched.served(ch, 0, False)
                        ch.scheduled = False
                    continue
                end = offset + self._fragment_size
                size = msg.size
                flags = msg.flags
                if offset == 0:
                    flags |= FLAG_FIRST
                if end >= size:
                    end = size
                    flags |= FLAG_LAST
                n = end - offset
                data = _pack_header(
                    VERSION, _DATA, ch.id, flags, 0, msg.seq, msg.fragment, n
                ) + msg.data[offset:end]
                msg.fragment += 1
                msg.offset = end
                if ch.reliable:
                    self._inflight += n
                ch.queued_bytes -= n
                ch.frames_sent += 1
                ch.bytes_sent += n
                if flags & FLAG_LAST:
                    queue.popleft()
                    msg.done = True
                    ch.messages_sent += 1
                    delay = now - msg.enqueued
                    ch.delay_total += delay
                    if delay > ch.delay_max:
                        ch.delay_max = delay
                active = bool(queue) or ch.close_requested
                sched.served(ch, n + HEADER_SIZE, active)
                if not active:
                    ch.scheduled = False
                if ch.wanted and self._fits(ch, ch.wanted):
                    self._window_opened(ch)
                self._frames_sent += 1
                self._bytes_sent += len(data)
                return OutgoingFrame(ch.transport, data, ch.id)
            if not queue and ch.close_requested and not ch.close_sent:
                sched.served(ch, HEADER_SIZE, False)
                ch.scheduled = False
                data = encode_close(ch.id, replay=ch.close_replay)
                self._close_sent(ch)
                self._frames_sent += 1
                self._bytes_sent += len(data)
                return OutgoingFrame(_RELIABLE, data, ch.id)
            # Nothing sendable yet (unreliable channel still OPENING): park it.
            sched.served(ch, 0, False)
            ch.scheduled = False

    def receive_frame(self, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
        """Process one message from either data channel; return the events it caused.

        Never raises for peer input: malformed frames become a ProtocolErrorEvent
        (plus a ChannelReset of the channel concerned, if any) and are counted.
        The returned list also carries events queued earlier (see pop_events).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"receive_frame needs bytes, got {type(data).__name__}")
        if not self._up or self._failed:
            # Frames from a transport declared lost may be stale; the replay covers them.
            self._frames_ignored += 1
            return self.pop_events()
        self._frames_received += 1
        self._bytes_received += len(data)
        try:
            frame = decode_frame(data)
            ftype = frame.type
            if ftype == _DATA:
                self._on_data(frame, now)
            elif ftype == FrameType.ACK:
                self._on_ack(frame)
            elif ftype == FrameType.OPEN:
                self._on_open(frame)
            elif ftype == FrameType.ACCEPT:
                self._on_accept(frame)
            elif ftype == FrameType.CLOSE:
                self._on_close(frame)
            else:
                self._on_reset(frame)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
        return self.pop_events()

    def receive_datagram(self, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
        """Process one data-channel message holding one or more whole frames.

        Senders may pack consecutive frames for the same transport into one
        message (each frame is self-delimiting through its header's length
        field; fragments stay at most 16 KiB). A frame whose declared length
        runs past the end of the message makes the rest of the message
        untrustworthy: it is one protocol error (resetting that frame's channel
        when the header names one) and the rest of the message is dropped.
        """
        view = data if type(data) is memoryview else memoryview(data)
        size = len(view)
        if size <= HEADER_SIZE + MAX_FRAGMENT_PAYLOAD and (
            size < HEADER_SIZE or HEADER_SIZE + ((view[14] << 8) | view[15]) == size
        ):
            return self.receive_frame(view, now)  # the common case: one frame
        events: list[Event] = []
        offset = 0
        while offset < size:
            if size - offset < HEADER_SIZE:
                end = size  # truncated header: let decode_frame report it
            else:
                end = offset + HEADER_SIZE + ((view[offset + 14] << 8) | view[offset + 15])
                if end > size:
                    # decode_frame reports the bad length (attributed to the frame's
                    # channel when the header is otherwise valid); the rest is dropped.
                    events += self.receive_frame(view[offset:], now)
                    break
            events += self.receive_frame(view[offset:end], now)
            offset = end
        return events

    def transport_lost(self) -> None:
        """Both data channels died. Stop sending; keep everything unacknowledged for replay."""
        self._up = False
        self._control.clear()  # regenerated by transport_restored
        for ch in self._channels.values():
            # Reassembly in progress cannot complete: the sender restarts whole messages.
            ch.parts = []
            ch.parts_bytes = 0
            ch.recv_frag = 0
            if ch.partials:
                for partial in ch.partials.values():
                    self._incomplete(ch, partial.size)
                ch.partials.clear()

    def transport_restored(self) -> None:
        """Fresh data channels are open: re-send everything that may have been lost.

        Queued: OPEN (REPLAY) for channels still waiting for ACCEPT, RESET (REPLAY)
        for recent resets, an ACK per reliable channel, every unacknowledged reliable
        message from its first fragment (REPLAY), and CLOSE again after them.
        """
        if self._failed:
            raise ConnectionClosedError("the multiplexer has failed")
        if self._up:
            raise LocalProtocolError("transport_restored() without transport_lost()")
        self._up = True
        self._control.clear()
        self._inflight = 0  # every unacknowledged message is sent again from its start
        parked, self._window_parked = self._window_parked, []
        for ch in parked:
            ch.scheduled = False
        for cid, reason in self._recent_resets:
            self._control.append(encode_reset(cid, reason, replay=True))
        for ch in self._channels.values():
            if not ch.accepted:
                self._control.append(
                    encode_open(ch.id, ch.label, ch.reliability, ch.priority, replay=True)
                )
            if ch.reliable and (ch.recv_seq or ch.messages_received):
                self._pending_acks[ch.id] = ch.recv_seq
            if ch.reliable:
                for msg in ch.unacked:
                    if msg.fragment:
                        msg.flags |= FLAG_REPLAY
                    msg.offset = 0
                    msg.fragment = 0
                ch.queue = deque(ch.unacked)
                ch.queued_bytes = ch.unacked_bytes
            elif ch.queue and ch.queue[0].fragment:
                head = ch.queue[0]
                ch.queued_bytes += head.offset
                head.offset = 0
                head.fragment = 0
            if ch.close_sent:
                ch.close_sent = False
                ch.close_replay = True
            if not ch.scheduled:
                self._wake(ch)

    def fail_all(self, reason: str) -> list[Event]:
        """Give up: every channel is reset locally; report what was never delivered.

        Returns (and clears) pending events plus, per channel, a DeliveryFailed with
        the undelivered messages (if any) and a ChannelReset. Afterwards the
        multiplexer refuses new work with ConnectionClosedError.
        """
        for ch in list(self._channels.values()):
            pending = ch.unacked if ch.reliable else ch.queue
            if pending:
                messages = tuple(
                    str(m.data, "utf-8") if m.flags & FLAG_TEXT else bytes(m.data)
                    for m in pending
                )
                self._events.append(DeliveryFailed(ch.id, reason, messages))
            self._events.append(
                ChannelReset(ch.id, reason, False, len(pending), self._snapshot(ch))
            )
            self._remove(ch, ChannelState.RESET)
        self._control.clear()
        self._pending_acks.clear()
        self._failed = True
        self._up = False
        return self.pop_events()

    # ------------------------------------------------------------------ inbound

    def _on_data(self, frame: Frame, now: float) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "DATA")
            return
        ch.frames_received += 1
        if ch.state is ChannelState.CLOSE_RECEIVED:
            raise FrameError("DATA after CLOSE", cid)
        if ch.reliable:
            self._recv_reliable(ch, frame)
        else:
            self._recv_unreliable(ch, frame)

    def _recv_reliable(self, ch: _Channel, frame: Frame) -> None:
        cid = ch.id
        flags = frame.flags
        seq = frame.seq
        if seq != ch.recv_seq:
            if flags & FLAG_REPLAY and _behind(seq, ch.recv_seq):
                ch.duplicates += 1  # already delivered before the transport was lost
                self._pending_acks[cid] = ch.recv_seq
                return
            raise FrameError(
                f"sequence gap on reliable channel: expected {ch.recv_seq}, got {seq}", cid
            )
        fragment = frame.fragment
        if fragment != ch.recv_frag:
            if fragment == 0 and flags & FLAG_REPLAY:
                ch.parts = []  # the sender restarted this message after a transport loss
                ch.parts_bytes = 0
            else:
                raise FrameError(
                    f"fragment gap on reliable channel: expected {ch.recv_frag}, got {fragment}",
                    cid,
                )
        payload = frame.payload
        text = flags & FLAG_TEXT
        if fragment == 0:
            ch.parts_text = text
        elif text != ch.parts_text:
            raise FrameError("TEXT flag changed inside a message", cid)
        total = ch.parts_bytes + len(payload)
        if total > self._max_message_bytes:
            raise FrameError(f"message too large (over {self._max_message_bytes} bytes)", cid)
        if total > self._recv_limit:
            raise FrameError("receive buffer overflow", cid)
        if flags & FLAG_LAST:
            if fragment == 0:
                body = bytes(payload)
            else:
                ch.parts.append(payload)
                body = b"".join(ch.parts)
                ch.parts = []
                ch.parts_bytes = 0
            ch.recv_seq = (seq + 1) & SEQ_MASK
            ch.recv_frag = 0
            self._pending_acks[cid] = ch.recv_seq
            self._deliver(ch, body, text)
        else:
            ch.parts.append(payload)
            ch.parts_bytes = total
            ch.recv_frag = fragment + 1

    def _recv_unreliable(self, ch: _Channel, frame: Frame) -> None:
        cid = ch.id
        seq = frame.seq
        flags = frame.flags
        if seq in ch.finished:
            ch.duplicates += 1
            return
        partial = ch.partials.get(seq)
        if partial is None:
            newest = ch.newest_seq
            if newest >= 0 and ((newest - seq) & SEQ_MASK) >= self._window and _behind(seq, newest):
                ch.duplicates += 1  # too late: its message was given up already
                return
            partial = _Partial(flags & FLAG_TEXT)
            ch.partials[seq] = partial
            ch.missing.discard(seq)
            if newest < 0 or _behind(newest, seq):
                self._note_gap(ch, (newest + 1) & SEQ_MASK if newest >= 0 else 0, seq)
                ch.newest_seq = seq
                for old in [s for s in ch.partials if _behind(s, seq)]:
                    if ((seq - old) & SEQ_MASK) >= self._window:
                        self._give_up(ch, old)
        elif (flags & FLAG_TEXT) != partial.text:
            raise FrameError("TEXT flag changed inside a message", cid)
        fragment = frame.fragment
        if fragment in partial.fragments:
            raise FrameError(f"duplicate fragment {fragment} of message {seq}", cid)
        if (partial.last >= 0 and fragment > partial.last) or (
            flags & FLAG_LAST and partial.fragments and max(partial.fragments) > fragment
        ):
            raise FrameError(f"fragment {fragment} beyond the last fragment of message {seq}", cid)
        payload = frame.payload
        partial.size += len(payload)
        if partial.size > self._max_message_bytes:
            raise FrameError(f"message too large (over {self._max_message_bytes} bytes)", cid)
        partial.fragments[fragment] = payload
        if flags & FLAG_LAST:
            partial.last = fragment
        if partial.last >= 0 and len(partial.fragments) == partial.last + 1:
            del ch.partials[seq]
            self._remember_finished(ch, seq)
            frags = partial.fragments
            body = bytes(frags[0]) if partial.last == 0 else b"".join(
                [frags[i] for i in range(partial.last + 1)]
            )
            if ch.reliability.ordered:
                if ch.delivered_seq >= 0 and not _behind(ch.delivered_seq, seq):
                    self._drop_inbound(ch, len(body), "late")
                    return
                ch.delivered_seq = seq
            self._deliver(ch, body, partial.text)
            return
        # Unreliable: over the buffer limit give up old partial messages first.
        if ch.partial_bytes() > self._recv_limit:
            for old in list(ch.partials):
                if old == seq:
                    continue
                self._give_up(ch, old)
                if ch.partial_bytes() <= self._recv_limit:
                    break
            else:
                raise FrameError("receive buffer overflow", cid)

    def _note_gap(self, ch: _Channel, start: int, seq: int) -> None:
        """Unreliable: messages ``start`` .. ``seq - 1`` have not been seen yet.

        Each is either still on its way (reordering) or lost whole in transit,
        where no fragment arrives and reassembly never notices; once it is older
        than the reorder window it is counted as lost, so no loss goes uncounted.
        """
        gap = (seq - start) & SEQ_MASK
        if gap > 4 * self._window:
            # Too far to track one by one (a burst of loss, or a peer skipping
            # numbers): everything beyond the window is lost already.
            lost = gap - self._window
            ch.messages_lost += lost
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))
            start = (seq - self._window) & SEQ_MASK
            gap = self._window
        for i in range(gap):
            ch.missing.add((start + i) & SEQ_MASK)
        for m in [m for m in ch.missing if ((seq - m) & SEQ_MASK) >= self._window]:
            ch.missing.discard(m)
            ch.messages_lost += 1
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))

    def _on_ack(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "ACK")
            return
        ch.frames_received += 1
        if not ch.reliable:
            raise FrameError("ACK on an unreliable channel", cid)
        ack = frame.seq
        if ack != ch.next_seq and not _behind(ack, ch.next_seq):
            raise FrameError(f"ACK {ack} for a message never sent (next is {ch.next_seq})", cid)
        unacked = ch.unacked
        queue = ch.queue
        freed = 0
        while unacked and _behind(unacked[0].seq, ack):
            msg = unacked[0]
            if not msg.done:
                raise FrameError(f"ACK {ack} covers a message not yet sent", cid)
            unacked.popleft()
            freed += msg.size
            self._inflight -= msg.offset
            if queue and queue[0] is msg:
                # Being replayed after a restore, but the peer had it already.
                queue.popleft()
                ch.queued_bytes -= msg.size - msg.offset
        if freed:
            ch.unacked_bytes -= freed
            self._replay_bytes -= freed
            if self._window_parked and self._inflight < self._inflight_limit:
                self._unpark()
            if self._waiting:
                for other in list(self._waiting):
                    if other.wanted and self._fits(other, other.wanted):
                        self._window_opened(other)
        if ch.state is ChannelState.CLOSE_RECEIVED and ch.close_sent and not unacked:
            self._finish_close(ch)

    def _on_open(self, frame: Frame) -> None:
        cid = frame.channel_id
        params = decode_open(frame.payload, cid)
        ch = self._channels.get(cid)
        if ch is not None:
            if (
                frame.flags & FLAG_REPLAY and not ch.local
                and (ch.label, ch.reliability, ch.priority) == tuple(params)
            ):
                self._control.append(encode_accept(cid, replay=True))  # our ACCEPT was lost
                return
            raise FrameError(f"duplicate OPEN for channel {cid}", cid)
        if cid in self._tombstones:
            if frame.flags & FLAG_REPLAY:
                self._frames_ignored += 1
                return
            self._forget_tombstone(cid)
        if cid & 1 == self._parity:
            self._control.append(encode_reset(cid, "wrong channel id parity"))
            raise FrameError(f"OPEN with channel id {cid} of the wrong parity", cid)
        if len(self._channels) >= self._max_channels:
            self._control.append(encode_reset(cid, "too many channels"))
            raise FrameError(f"OPEN beyond the limit of {self._max_channels} channels", cid)
        ch = _Channel(cid, params.label, params.reliability, params.priority, False,
                      ChannelState.OPEN)
        self._channels[cid] = ch
        ch.frames_received += 1
        self._control.append(encode_accept(cid))
        self._events.append(ChannelOpened(cid, params.label, params.reliability, params.priority))

    def _on_accept(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "ACCEPT")
            return
        ch.frames_received += 1
        if not ch.local:
            raise FrameError(f"ACCEPT for channel {cid}, which the peer opened", cid)
        if ch.accepted:
            if frame.flags & FLAG_REPLAY:
                return
            raise FrameError(f"duplicate ACCEPT for channel {cid}", cid)
        ch.accepted = True
        if ch.state is ChannelState.OPENING:
            ch.state = ChannelState.OPEN
        self._events.append(ChannelAccepted(cid))
        if not ch.scheduled:
            self._wake(ch)  # unreliable DATA waits for ACCEPT: see _wake

    def _on_close(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            if cid in self._tombstones and frame.flags & FLAG_REPLAY:
                # The peer re-sent CLOSE after a restore but we had finished: confirm
                # (without REPLAY, so this can never ping-pong).
                self._control.append(encode_close(cid))
                self._frames_ignored += 1
                return
            self._frame_for_missing_channel(frame, "CLOSE")
            return
        ch.frames_received += 1
        state = ch.state
        if state is ChannelState.OPEN or state is ChannelState.OPENING:
            self._close_received(ch, by_peer=True)
        elif state is ChannelState.CLOSING:
            if ch.close_sent:
                self._finish_close(ch)
            else:
                self._close_received(ch, by_peer=False)
        elif ch.close_sent:  # CLOSE_RECEIVED, lingering for ACKs: the peer is done
            self._finish_close(ch)
        elif not frame.flags & FLAG_REPLAY:
            raise FrameError(f"duplicate CLOSE for channel {cid}", cid)

    def _on_reset(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frames_ignored += 1  # resets cross each other; never an error
            return
        reason = decode_reason(frame.payload)
        undelivered = self._undelivered_count(ch)
        self._remove(ch, ChannelState.RESET)
        self._pending_acks.pop(cid, None)
        self._events.append(ChannelReset(cid, reason, True, undelivered, self._snapshot(ch)))

    def _frame_for_missing_channel(self, frame: Frame, what: str) -> None:
        cid = frame.channel_id
        kind = self._tombstones.get(cid)
        if kind is not None:
            # Frames that crossed our RESET, unreliable stragglers, or replays of
            # data the close handshake already settled.
            self._frames_ignored += 1
            return
        if frame.type == _DATA:
            self._control.append(encode_reset(cid, "unknown channel"))
        raise FrameError(f"{what} for unknown channel {cid}", cid)

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        self._errors += 1
        cid = exc.channel_id if isinstance(exc, FrameError) else None
        self._events.append(ProtocolErrorEvent(exc, cid))
        ch = self._channels.get(cid) if cid is not None else None
        if ch is None:
            self._unattributed += 1
            return
        ch.errors += 1
        undelivered = self._undelivered_count(ch)
        self._queue_reset(ch.id, exc.reason)
        self._remove(ch, ChannelState.RESET)
        self._events.append(ChannelReset(ch.id, exc.reason, False, undelivered, self._snapshot(ch)))

    # ------------------------------------------------------------------ helpers

    def _deliver(self, ch: _Channel, body: bytes, text: int) -> None:
        message: bytes | str
        if text:
            try:
                message = str(body, "utf-8")
            except UnicodeDecodeError:
                raise FrameError("text message is not valid UTF-8", ch.id) from None
        else:
            message = body
        ch.messages_received += 1
        ch.bytes_received += len(body)
        self._events.append(MessageReceived(ch.id, message))

    def _give_up(self, ch: _Channel, seq: int) -> None:
        partial = ch.partials.pop(seq)
        self._remember_finished(ch, seq)
        self._incomplete(ch, partial.size)

    def _incomplete(self, ch: _Channel, size: int) -> None:
        self._drop_inbound(ch, size, "incomplete")

    def _drop_inbound(self, ch: _Channel, size: int, reason: str) -> None:
        ch.messages_incomplete += 1
        self._events.append(MessageDropped(ch.id, True, reason, size))

    def _remember_finished(self, ch: _Channel, seq: int) -> None:
        ch.finished.add(seq)
        ch.finished_order.append(seq)
        if len(ch.finished_order) > 2 * self._window:
            ch.finished.discard(ch.finished_order.popleft())

    def _fits(self, ch: _Channel, size: int) -> bool:
        queued = ch.queued_bytes
        if queued and queued + size > self._send_limit:
            return False
        if ch.reliable and self._replay_bytes and self._replay_bytes + size > self._replay_limit:
            return False
        return True

    def _window_opened(self, ch: _Channel) -> None:
        ch.wanted = 0
        self._waiting.discard(ch)
        if ch.state is ChannelState.OPEN or ch.state is ChannelState.OPENING:
            self._events.append(
                SendWindowOpened(ch.id, max(0, self._send_limit - ch.queued_bytes))
            )

    def _make_room(self, ch: _Channel, size: int) -> bool:
        """Unreliable channel under pressure: drop the oldest unstarted messages."""
        queue = ch.queue
        head = queue.popleft() if queue and queue[0].fragment else None
        while queue and ch.queued_bytes + size > self._send_limit:
            old = queue.popleft()
            ch.queued_bytes -= old.size
            ch.messages_dropped += 1
            self._events.append(MessageDropped(ch.id, False, "send queue full", old.size))
        if head is not None:
            queue.appendleft(head)
        return not ch.queued_bytes or ch.queued_bytes + size <= self._send_limit

    def _unpark(self) -> None:
        parked, self._window_parked = self._window_parked, []
        for ch in parked:
            if not ch.scheduled and ch.id in self._channels:
                self._wake(ch)

    def _wake(self, ch: _Channel) -> None:
        # Unreliable DATA must not overtake the OPEN (it travels on the other
        # transport), so it waits for ACCEPT; reliable DATA may follow OPEN at once.
        if ch.queue:
            if not (ch.reliable or ch.accepted):
                return
        elif not ch.close_requested or ch.close_sent:
            return
        ch.scheduled = True
        self._sched.add(ch, ch.priority)

    def _close_sent(self, ch: _Channel) -> None:
        ch.close_sent = True
        ch.close_replay = False
        if ch.state is ChannelState.CLOSE_RECEIVED and not ch.unacked:
            self._finish_close(ch)

    def _close_received(self, ch: _Channel, by_peer: bool) -> None:
        ch.state = ChannelState.CLOSE_RECEIVED
        ch.close_requested = True
        self._waiting.discard(ch)
        if ch.parts or ch.partials:
            for partial in ch.partials.values():
                self._incomplete(ch, partial.size)
            ch.partials.clear()
            if ch.parts:
                raise FrameError("CLOSE inside a fragmented message", ch.id)
        ch.closed_reported = True
        self._events.append(ChannelClosed(ch.id, by_peer, self._snapshot(ch)))
        if not ch.scheduled:
            self._wake(ch)

    def _finish_close(self, ch: _Channel) -> None:
        self._remove(ch, ChannelState.CLOSED)
        if not ch.closed_reported:
            ch.closed_reported = True
            self._events.append(ChannelClosed(ch.id, False, self._snapshot(ch)))

    def _queue_reset(self, cid: int, reason: str) -> None:
        self._control.append(encode_reset(cid, reason))
        self._recent_resets.append((cid, reason))

    def _remove(self, ch: _Channel, final: ChannelState) -> None:
        del self._channels[ch.id]
        ch.state = final
        if final is ChannelState.RESET:
            self._resets += 1
        if ch.scheduled:
            self._sched.remove(ch, ch.priority)
            ch.scheduled = False
        self._waiting.discard(ch)
        self._replay_bytes -= ch.unacked_bytes
        self._inflight -= sum(m.offset for m in ch.unacked)
        if ch in self._window_parked:
            self._window_parked.remove(ch)
        if self._window_parked and self._inflight < self._inflight_limit:
            self._unpark()
        ch.queued_bytes = 0
        ch.queue.clear()
        ch.unacked_bytes = 0
        ch.unacked.clear()
        ch.parts = []
        ch.partials.clear()
        self._tombstones[ch.id] = final
        self._tombstone_order.append(ch.id)
        if len(self._tombstone_order) > 4096:
            self._tombstones.pop(self._tombstone_order.popleft(), None)

    def _forget_tombstone(self, cid: int) -> None:
        self._tombstones.pop(cid, None)
        try:
            self._tombstone_order.remove(cid)
        except ValueError:
            pass

    def _undelivered_count(self, ch: _Channel) -> int:
        return len(ch.unacked) if ch.reliable else len(ch.queue)

    def _allocate_id(self) -> int:
        for _ in range(0x8000):
            cid = self._next_id
            self._next_id = (cid + 2) & 0xFFFF
            if cid not in self._channels and cid not in self._tombstones:
                return cid
        raise LocalProtocolError("no free channel id")

    def _channel(self, channel_id: int) -> _Channel:
        self._check_usable()
        ch = self._channels.get(channel_id)
        if ch is None:
            raise LocalProtocolError(f"unknown channel {channel_id}")
        return ch

    def _check_usable(self) -> None:
        if self._failed:
            raise ConnectionClosedError("the multiplexer has failed")

    def _snapshot(self, ch: _Channel) -> ChannelStats:
        return ChannelStats(
            ch.id, ch.label, ch.state, ch.priority, ch.reliable, ch.messages_sent,
            ch.bytes_sent, ch.messages_received, ch.bytes_received, len(ch.queue),
            ch.queued_bytes, len(ch.unacked), ch.unacked_bytes, ch.messages_dropped,
            ch.messages_incomplete, ch.duplicates, ch.errors, ch.frames_sent,
            ch.frames_received, ch.delay_total, ch.delay_max, ch.messages_lost,
        )
