"""In-band RTT / loss / jitter probes for data-only connections (no RTP, no RTCP).

One side runs a :class:`Prober`; the other answers each ping with
:func:`respond`. Both sides may do both. Sans-I/O: the caller sends what
:meth:`Prober.data_to_send` returns (ideally on an unordered, unreliable
channel, ``maxRetransmits: 0``, so loss is the network's and not hidden by
SCTP retransmission), feeds echoes to :meth:`Prober.on_echo` and calls
:meth:`Prober.handle_timer` at :meth:`Prober.get_timer`.

Wire format (16 bytes, big-endian)::

    0      2        3       4            8                       16
    +------+--------+-------+------------+-----------------------+
    | "PQ" | ver=1  | type  | seq uint32 | timestamp float64     |
    +------+--------+-------+------------+-----------------------+

``type`` is 1 (ping) or 2 (echo). ``seq`` counts up from 0 and wraps at
2**32. ``timestamp`` is the pinger's ``now`` in seconds; the echo copies
``seq`` and ``timestamp`` unchanged. Anything else raises :class:`ProbeError`
(a :class:`~pyapp.exceptions.RemoteProtocolError`).

Measurements: RTT is ``now − send time`` of the matching ping. A ping with
no echo after ``timeout`` seconds is lost; loss % is over the last ``window``
resolved pings. Jitter is the RFC 3550 section 6.4.1 estimator applied to
successive RTT samples: ``J += (|RTT_i − RTT_{i−1}| − J) / 16``.

Example::

    from pyapp.core.probe import Prober, respond

    prober = Prober(now=0.0, interval=1.0, timeout=2.0)
    prober.handle_timer(now=0.0)
    [ping] = prober.data_to_send()
    echo = respond(ping)               # done by the peer
    prober.on_echo(echo, now=0.030)
    assert round(prober.statistics().rtt_ms) == 30
    assert prober.get_timer() == 1.0   # next ping
"""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from dataclasses import dataclass

from pyapp.exceptions import InvalidArgumentError, ProbeError

__all__ = [
    "MAGIC",
    "PROBE_SIZE",
    "VERSION",
    "ProbeError",
    "ProbeKind",
    "ProbePacket",
    "ProbeStatistics",
    "Prober",
    "encode_probe",
    "is_probe",
    "parse_probe",
    "respond",
]

MAGIC = b"PQ"
VERSION = 1
_FORMAT = struct.Struct(">2sBBId")
PROBE_SIZE = _FORMAT.size  # 16
_SEQ_MOD = 2**32


class ProbeKind(enum.IntEnum):
    """The ``type`` byte."""

    PING = 1
    ECHO = 2


@dataclass(frozen=True)
class ProbePacket:
    """A decoded probe."""

    kind: ProbeKind
    """Ping or echo."""
    seq: int
    """Sequence number, 0..2**32−1."""
    timestamp: float
    """The pinger's ``now`` when the ping was sent (seconds)."""


@dataclass(frozen=True)
class ProbeStatistics:
    """What the prober has measured so far."""

    rtt_ms: float | None
    """The latest RTT sample in ms."""
    smoothed_rtt_ms: float | None
    """RFC 6298 smoothed RTT: ``srtt = 7/8·srtt + 1/8·sample``."""
    min_rtt_ms: float | None
    """Smallest RTT seen."""
    jitter_ms: float | None
    """RFC 3550-style jitter of the RTT samples (None before two samples)."""
    loss_pct: float | None
    """Lost / resolved over the last ``window`` resolved pings, in percent."""
    sent: int
    """Pings sent."""
    received: int
    """Echoes matched in time."""
    lost: int
    """Pings that timed out."""
    late: int
    """Echoes that arrived after their ping timed out, or duplicates (ignored)."""
    in_flight: int
    """Pings waiting for an echo."""


def encode_probe(packet: ProbePacket) -> bytes:
    """Encode a probe; raises :class:`LocalProtocolError` on out-of-range fields."""
    if not 0 <= packet.seq < _SEQ_MOD:
        raise InvalidArgumentError(f"probe seq out of range: {packet.seq}")
    if not math.isfinite(packet.timestamp):
        raise InvalidArgumentError(f"probe timestamp must be finite: {packet.timestamp}")
    return _FORMAT.pack(MAGIC, VERSION, int(packet.kind), packet.seq, packet.timestamp)


def is_probe(data: bytes | bytearray | memoryview) -> bool:
    """Cheap check for demultiplexing: right size and magic (not full validation)."""
    return len(data) == PROBE_SIZE and bytes(data[:2]) == MAGIC


def parse_probe(data: bytes | bytearray | memoryview) -> ProbePacket:
    """Decode a probe; any malformed input raises :class:`ProbeError` and nothing else."""
    if len(data) != PROBE_SIZE:
        raise ProbeError(f"probe must be {PROBE_SIZE} bytes, got {len(data)}")
    magic, version, kind, seq, timestamp = _FORMAT.unpack(bytes(data))
    if magic != MAGIC:
        raise ProbeError("not a probe (bad magic)")
    if version != VERSION:
        raise ProbeError(f"unsupported probe version {version}")
    if kind not in (ProbeKind.PING, ProbeKind.ECHO):
        raise ProbeError(f"unknown probe type {kind}")
    if not math.isfinite(timestamp):
        raise ProbeError("probe timestamp is not finite")
    return ProbePacket(ProbeKind(kind), seq, timestamp)


def respond(data: bytes | bytearray | memoryview) -> bytes:
    """Turn a ping into its echo (the responder side); raises :class:`ProbeError`."""
    packet = parse_probe(data)
    if packet.kind is not ProbeKind.PING:
        raise ProbeError("expected a ping, got an echo")
    return encode_probe(ProbePacket(ProbeKind.ECHO, packet.seq, packet.timestamp))


class Prober:
    """Sends a ping every ``interval`` seconds and measures the echoes."""

    def __init__(
        self, now: float, *, interval: float = 1.0, timeout: float = 3.0, window: int = 20
    ) -> None:
        if not interval > 0:
            raise InvalidArgumentError(f"interval must be > 0, got {interval}")
        if not timeout > 0:
            raise InvalidArgumentError(f"timeout must be > 0, got {timeout}")
        if window < 1:
            raise InvalidArgumentError(f"window must be >= 1, got {window}")
        self._interval = interval
        self._timeout = timeout
        self._next_send = now
        self._next_seq = 0
        self._outstanding: dict[int, float] = {}  # seq -> send time, in send order
        self._outbox: list[bytes] = []
        self._results: deque[bool] = deque(maxlen=window)  # True = echoed in time
        self._sent = self._received = self._lost = self._late = 0
        self._rtt: float | None = None
        self._srtt: float | None = None
        self._min_rtt: float | None = None
        self._jitter: float | None = None

    @property
    def interval(self) -> float:
        """Seconds between pings."""
        return self._interval

    def set_interval(self, interval: float) -> None:
        """Ping every ``interval`` seconds from the next ping on, keeping the phase.

        The next ping moves by the difference between the new and the old
        interval (one new interval after the previous ping).
        """
        if not interval > 0:
            raise InvalidArgumentError(f"interval must be > 0, got {interval}")
        self._next_send += interval - self._interval
        self._interval = interval

    def postpone(self, now: float) -> None:
        """Send no ping before ``now + interval`` (the path is not ready yet).

        A ping sent before the channel is open would measure the channel set-up,
        not the path; the caller postpones instead of sending.
        """
        self._next_send = max(self._next_send, now + self._interval)

    def get_timer(self) -> float:
        """The next time :meth:`handle_timer` has work: a ping to send or one to expire."""
        deadline = self._next_send
        if self._outstanding:
            oldest = next(iter(self._outstanding.values()))
            deadline = min(deadline, oldest + self._timeout)
        return deadline

    def handle_timer(self, now: float) -> None:
        """Expire overdue pings, then queue a ping if one is due."""
        self._expire(now)
        if now >= self._next_send:
            seq = self._next_seq
            self._outbox.append(encode_probe(ProbePacket(ProbeKind.PING, seq, now)))
            self._outstanding[seq] = now
            self._next_seq = (seq + 1) % _SEQ_MOD
            self._sent += 1
            # Skip missed slots instead of bursting after a long pause (hidden tab).
            self._next_send += self._interval
            if self._next_send <= now:
                self._next_send = now + self._interval

    def data_to_send(self) -> list[bytes]:
        """Pings to transmit now, oldest first; the outbox is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def on_echo(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Account for an echo received at ``now``.

        Raises :class:`ProbeError` (state unchanged) for malformed data, a ping,
        an echo for a sequence number never sent, or one whose timestamp does
        not match the ping's. Late and duplicate echoes are counted and ignored.
        """
        packet = parse_probe(data)
        if packet.kind is not ProbeKind.ECHO:
            raise ProbeError("expected an echo, got a ping")
        sent_at = self._outstanding.get(packet.seq)
        if sent_at is None:
            age = (self._next_seq - 1 - packet.seq) % _SEQ_MOD
            if age < min(self._sent, _SEQ_MOD):
                self._late += 1
                return
            raise ProbeError(f"echo for seq {packet.seq}, which was never sent")
        if packet.timestamp != sent_at:
            raise ProbeError(f"echo for seq {packet.seq} carries a different timestamp")
        self._expire(now)
        if packet.seq not in self._outstanding:  # timed out at this very `now`
            self._late += 1
            return
        del self._outstanding[packet.seq]
        self._received += 1
        self._results.append(True)
        self._add_rtt(max(0.0, now - sent_at) * 1000.0)

    def statistics(self) -> ProbeStatistics:
        """The current measurements."""
        loss = None
        if self._results:
            loss = 100.0 * self._results.count(False) / len(self._results)
        return ProbeStatistics(
            rtt_ms=self._rtt,
            smoothed_rtt_ms=self._srtt,
            min_rtt_ms=self._min_rtt,
            jitter_ms=self._jitter,
            loss_pct=loss,
            sent=self._sent,
            received=self._received,
            lost=self._lost,
            late=self._late,
            in_flight=len(self._outstanding),
        )

    def _expire(self, now: float) -> None:
        for seq, sent_at in list(self._outstanding.items()):
            if now < sent_at + self._timeout:
                break  # dict keeps send order, so the rest are younger
            del self._outstanding[seq]
            self._lost += 1
            self._results.append(False)

    def _add_rtt(self, rtt: float) -> None:
        if self._rtt is not None:
            # RFC 3550 6.4.1: J += (|D| - J) / 16, D = difference of successive transit times.
            previous_jitter = 0.0 if self._jitter is None else self._jitter
            self._jitter = previous_jitter + (abs(rtt - self._rtt) - previous_jitter) / 16
        self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
        self._min_rtt = rtt if self._min_rtt is None else min(self._min_rtt, rtt)
        self._rtt = rtt
