"""What the multiplexer reports: roles, channel states, outgoing frames, counters, events.

Every event is a small frozen dataclass under :class:`Event`, one docstring
line per field (h11's style). Counters are snapshots (:class:`ChannelStats`,
:class:`MuxStats`) taken when asked or when a channel ends.

Example::

    >>> from pyapp.core.mux_events import ChannelAccepted, Event
    >>> event = ChannelAccepted(channel_id=4)
    >>> isinstance(event, Event), event
    (True, ChannelAccepted(channel_id=4))
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pyapp.core.framing import Reliability, Transport
from pyapp.core.scheduler import Priority
from pyapp.exceptions import DeliveryError, RemoteProtocolError

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).


class Role(enum.Enum):
    """Which end of the connection this is; decides the channel id parity."""

    INITIATOR = "initiator"
    """the offerer / DTLS client: even channel ids (as RFC 8832 does for SCTP streams)"""
    RESPONDER = "responder"
    """the answerer: odd channel ids"""


class ChannelState(enum.Enum):
    """Life cycle of a logical channel; the transitions are in :mod:`pyapp.core.mux_lifecycle`."""

    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSE_RECEIVED = "close-received"
    CLOSED = "closed"
    RESET = "reset"



class OutgoingFrame:
    """One frame to send: put ``data`` on the data channel named by ``transport``."""

    __slots__ = ("channel_id", "data", "transport", "urgent")

    def __init__(self, transport: Transport, data: bytes, channel_id: int, urgent: bool = False) -> None:
        self.transport = transport
        """RELIABLE or UNRELIABLE underlying RTCDataChannel"""
        self.data = data
        """the complete frame, header included: exactly one data channel message"""
        self.channel_id = channel_id
        """the logical channel the frame belongs to (for logging/stats)"""
        self.urgent = urgent
        """a control frame (OPEN, ACCEPT, ACK, CLOSE, RESET) or DATA of a HIGH channel: a
        transmitter should not make it wait behind bulk data, nor pack bulk data after it
        into the same message (the peer sees a message only once all of it arrived)"""

    def __repr__(self) -> str:
        urgent = ", urgent" if self.urgent else ""
        return f"OutgoingFrame({self.transport.name}, {len(self.data)} bytes, ch {self.channel_id}{urgent})"


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
class MessagesReceived(Event):
    """Several complete messages of one channel, in order (only with ``batch_events=True``).

    A run of whole messages that arrived packed in one data-channel message (see
    ``next_frame(pack=True)``): the same as one MessageReceived per message, in
    one event, so a receiver of many small messages handles one event per run.
    """

    channel_id: int
    """the channel they arrived on"""
    messages: tuple[bytes | str, ...]
    """the messages, oldest first: ``str`` when sent as text, else ``bytes``"""


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
