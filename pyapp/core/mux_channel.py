"""Per-channel state of the multiplexer: send queue, replay buffer, reassembly buffers.

A :class:`Channel` is plain data (``__slots__``, no behaviour beyond small
accessors); the multiplexer's modules change it. :func:`behind` is the serial
number comparison every sequence check uses (RFC 1982).

Example::

    >>> from pyapp.core.mux_channel import behind
    >>> behind(0xFFFFFFFF, 0), behind(5, 3)
    (True, False)
"""

from __future__ import annotations

from collections import deque

from pyapp.core.framing import SEQ_MASK, Reliability
from pyapp.core.mux_events import ChannelState, ChannelStats
from pyapp.core.scheduler import Priority

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).

_HALF = 1 << 31


class OutMessage:
    __slots__ = ("data", "done", "enqueued", "flags", "fragment", "offset", "seq", "size")

    def __init__(self, seq: int, data: bytes, flags: int, enqueued: float) -> None:
        self.seq = seq
        self.data = data
        self.size = len(data)
        self.flags = flags  # FLAG_TEXT and, after a restore, FLAG_REPLAY
        self.enqueued = enqueued
        self.offset = 0
        self.fragment = 0
        self.done = False  # every fragment handed out at least once


class Partial:
    """An unreliable message being reassembled (fragments may arrive in any order)."""

    __slots__ = ("fragments", "last", "size", "text", "touched")

    def __init__(self, text: int, now: float) -> None:
        self.fragments: dict[int, memoryview] = {}
        self.last = -1
        self.size = 0
        self.text = text
        self.touched = now  # when its latest fragment arrived (the reorder timeout runs from it)


class Channel:
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
        "drain_deadline",
        "drain_end",
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
        self.queue: deque[OutMessage] = deque()
        self.queued_bytes = 0
        self.unacked: deque[OutMessage] = deque()  # reliable only; queue is a suffix of it
        self.unacked_bytes = 0
        self.next_seq = 0
        # receive side, reliable: strictly sequential
        self.recv_seq = 0
        self.recv_frag = 0
        self.parts: list[memoryview] = []
        self.parts_bytes = 0
        self.parts_text = 0
        # receive side, unreliable: several messages may be in flight
        self.partials: dict[int, Partial] = {}
        self.finished: set[int] = set()
        self.finished_order: deque[int] = deque()
        self.newest_seq = -1  # newest sequence seen (-1: none yet)
        # unreliable: sequence gaps not yet seen or given up -> when the gap was noticed
        self.missing: dict[int, float] = {}
        # unreliable, the peer's CLOSE is waiting for its drain point (FLAG_DRAIN):
        # the sequence after its last DATA, and when to give up waiting (None: no wait)
        self.drain_end = 0
        self.drain_deadline: float | None = None
        self.messages_lost = 0
        self.delivered_seq = -1  # ordered unreliable: newest delivered (-1: none yet)
        # counters
        self.messages_sent = self.bytes_sent = self.frames_sent = 0
        self.messages_received = self.bytes_received = self.frames_received = 0
        self.messages_dropped = self.messages_incomplete = self.duplicates = self.errors = 0
        self.delay_total = self.delay_max = 0.0

    def partial_bytes(self) -> int:
        return self.parts_bytes + sum(p.size for p in self.partials.values())

    def undelivered(self) -> int:
        """Our messages that would be abandoned now (reliable: unacknowledged; else queued)."""
        return len(self.unacked) if self.reliable else len(self.queue)

    def snapshot(self) -> ChannelStats:
        """The channel's counters now."""
        return ChannelStats(
            self.id, self.label, self.state, self.priority, self.reliable, self.messages_sent,
            self.bytes_sent, self.messages_received, self.bytes_received, len(self.queue),
            self.queued_bytes, len(self.unacked), self.unacked_bytes, self.messages_dropped,
            self.messages_incomplete, self.duplicates, self.errors, self.frames_sent,
            self.frames_received, self.delay_total, self.delay_max, self.messages_lost,
        )


def behind(a: int, b: int) -> bool:
    """True when sequence ``a`` is before ``b`` (serial number arithmetic, RFC 1982)."""
    return 0 < ((b - a) & SEQ_MASK) < _HALF
