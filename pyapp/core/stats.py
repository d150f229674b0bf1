"""A typed, sans-I/O view of ``RTCPeerConnection.getStats()``.

The browser adapter hands over the report as plain Python data (a mapping of
id -> stat dict, or the list ``[...report.values()]``) together with ``now``;
:func:`parse_stats` turns it into a frozen :class:`ConnectionStatistics`.
Anything missing or of the wrong type becomes ``None``; parsing never raises
on browser input. :func:`compute_rates` turns two snapshots into bitrates and
packet-loss percentages.

Example::

    from pyapp.core.stats import compute_rates, parse_stats

    report = [
        {"id": "T1", "type": "transport", "selectedCandidatePairId": "CP1",
         "bytesSent": 1000, "bytesReceived": 500},
        {"id": "CP1", "type": "candidate-pair", "state": "succeeded",
         "nominated": True, "currentRoundTripTime": 0.025,
         "localCandidateId": "L1", "remoteCandidateId": "R1"},
        {"id": "L1", "type": "local-candidate", "candidateType": "host"},
        {"id": "R1", "type": "remote-candidate", "candidateType": "srflx"},
        {"id": "P", "type": "peer-connection", "dataChannelsOpened": 1,
         "dataChannelsClosed": 0},
    ]
    before = parse_stats(report, now=10.0)
    assert before.round_trip_time == 25.0 and before.remote_candidate_type == "srflx"
    report[0] = {**report[0], "bytesSent": 126000}
    rates = compute_rates(before, parse_stats(report, now=11.0))
    assert rates.send_bitrate == 1_000_000.0   # bits per second

Units: times in milliseconds (``*_ms`` and ``round_trip_time``), byte and
packet counters as ``int``, bitrates in bits per second, ``timestamp`` in the
caller's clock (seconds, the ``now`` passed in).

Engine differences seen in the recorded fixtures (``tests/fixtures/getstats``):

* Chromium lists every candidate pair; more than one can be ``nominated`` and
  the transport's ``selectedCandidatePairId`` may point at a pair that carried
  none of the bytes (the pair switched after the traffic). Byte counters are
  therefore taken from the transport, not from the selected pair.
* Firefox marks the pair ``selected: true``; its transport has no byte
  counters and no ``availableOutgoingBitrate`` exists anywhere; its RTT
  resolution is coarse (``currentRoundTripTime: 0`` on loopback).
* Closed data channels drop out of the report in both engines; the
  peer-connection's ``dataChannelsClosed`` still counts them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyapp.exceptions import InvalidArgumentError

__all__ = [
    "CANDIDATE_TYPES",
    "ChannelStatistics",
    "ConnectionStatistics",
    "DataChannelStatistics",
    "InboundRtpStatistics",
    "MediaStatistics",
    "OutboundRtpStatistics",
    "RemoteInboundRtpStatistics",
    "StatisticsRates",
    "compute_rates",
    "parse_stats",
]

#: The ICE candidate types of RFC 8445 section 5.1.1.1 plus peer-reflexive.
CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})

StatsReport = Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]


@dataclass(frozen=True)
class ChannelStatistics:
    """Counters of one logical (multiplexed) channel; filled by the caller."""

    label: str
    """The logical channel's label."""
    channel_id: int
    """The multiplexer's channel id."""
    messages_sent: int = 0
    """Messages handed to the transport."""
    messages_received: int = 0
    """Messages delivered to the application."""
    bytes_sent: int = 0
    """Payload bytes sent (without framing)."""
    bytes_received: int = 0
    """Payload bytes received (without framing)."""
    queued_bytes: int = 0
    """Bytes waiting in the multiplexer's send queue right now."""
    dropped: int = 0
    """Messages dropped (unreliable/expired or discarded on reset)."""
    queueing_delay_ms: float | None = None
    """Time the oldest queued message has waited, or a recent average; None if unknown."""


@dataclass(frozen=True)
class DataChannelStatistics:
    """One native ``data-channel`` stat (closed channels are not listed by browsers)."""

    label: str | None
    """``label``."""
    data_channel_identifier: int | None
    """``dataChannelIdentifier``: the SCTP stream id."""
    state: str | None
    """``state``: connecting/open/closing/closed."""
    messages_sent: int | None
    """``messagesSent``."""
    messages_received: int | None
    """``messagesReceived``."""
    bytes_sent: int | None
    """``bytesSent``: payload bytes."""
    bytes_received: int | None
    """``bytesReceived``: payload bytes."""


@dataclass(frozen=True)
class InboundRtpStatistics:
    """One ``inbound-rtp`` stat: a stream we receive."""

    ssrc: int | None
    """``ssrc``."""
    kind: str | None
    """``kind``: audio or video."""
    packets_received: int | None
    """``packetsReceived``."""
    packets_lost: int | None
    """``packetsLost``: cumulative, may go down on duplicates (RFC 3550 6.4.1)."""
    jitter_ms: float | None
    """``jitter`` converted from seconds."""
    bytes_received: int | None
    """``bytesReceived``."""
    frame_width: int | None
    """``frameWidth`` (video)."""
    frame_height: int | None
    """``frameHeight`` (video)."""
    frames_per_second: float | None
    """``framesPerSecond`` (video)."""


@dataclass(frozen=True)
class OutboundRtpStatistics:
    """One ``outbound-rtp`` stat: a stream we send."""

    ssrc: int | None
    """``ssrc``."""
    kind: str | None
    """``kind``: audio or video."""
    packets_sent: int | None
    """``packetsSent``."""
    bytes_sent: int | None
    """``bytesSent``."""
    frame_width: int | None
    """``frameWidth`` (video)."""
    frame_height: int | None
    """``frameHeight`` (video)."""
    frames_per_second: float | None
    """``framesPerSecond`` (video)."""
    target_bitrate: float | None
    """``targetBitrate`` (bps; Chromium only)."""
    quality_limitation_reason: str | None
    """``qualityLimitationReason``: none/cpu/bandwidth/other (Chromium only)."""


@dataclass(frozen=True)
class RemoteInboundRtpStatistics:
    """One ``remote-inbound-rtp`` stat: the peer's RTCP receiver report on our stream."""

    ssrc: int | None
    """``ssrc`` of our outbound stream."""
    kind: str | None
    """``kind``: audio or video."""
    packets_lost: int | None
    """``packetsLost`` as reported by the peer."""
    fraction_lost: float | None
    """``fractionLost`` of the last report interval, 0..1."""
    jitter_ms: float | None
    """``jitter`` at the peer, converted from seconds."""
    round_trip_time_ms: float | None
    """``roundTripTime`` from RTCP, converted from seconds."""


@dataclass(frozen=True)
class MediaStatistics:
    """The RTP part of a report; all tuples are empty on a data-only connection."""

    inbound: tuple[InboundRtpStatistics, ...] = ()
    """Streams we receive."""
    outbound: tuple[OutboundRtpStatistics, ...] = ()
    """Streams we send."""
    remote_inbound: tuple[RemoteInboundRtpStatistics, ...] = ()
    """The peer's view of the streams we send."""

    @property
    def has_media(self) -> bool:
        """Whether any RTP stream is present."""
        return bool(self.inbound or self.outbound or self.remote_inbound)

    @property
    def packets_received(self) -> int | None:
        """Sum of ``packetsReceived`` over inbound streams."""
        return _sum(s.packets_received for s in self.inbound)

    @property
    def packets_lost(self) -> int | None:
        """Sum of ``packetsLost`` over inbound streams."""
        return _sum(s.packets_lost for s in self.inbound)

    @property
    def jitter_ms(self) -> float | None:
        """Worst inbound jitter; else the worst jitter the peer reports for our streams."""
        worst = _max(s.jitter_ms for s in self.inbound)
        return worst if worst is not None else _max(s.jitter_ms for s in self.remote_inbound)

    @property
    def round_trip_time_ms(self) -> float | None:
        """Worst RTCP round-trip time over our outbound streams."""
        return _max(s.round_trip_time_ms for s in self.remote_inbound)

    @property
    def packets_sent(self) -> int | None:
        """Sum of ``packetsSent`` over outbound streams."""
        return _sum(s.packets_sent for s in self.outbound)

    @property
    def remote_packets_lost(self) -> int | None:
        """Sum of ``packetsLost`` the peer reports for our streams."""
        return _sum(s.packets_lost for s in self.remote_inbound)

    @property
    def outbound_video(self) -> OutboundRtpStatistics | None:
        """The first outbound video stream (what the mobile checks look at)."""
        return next((s for s in self.outbound if s.kind == "video"), None)


@dataclass(frozen=True)
class ConnectionStatistics:
    """One getStats snapshot of a peer connection (the original API's fields first)."""

    timestamp: float
    """The caller's ``now`` (seconds) when the report was taken."""
    bytes_sent: int | None
    """Bytes sent on the transport(s); falls back to the candidate pairs' sum."""
    bytes_received: int | None
    """Bytes received on the transport(s); falls back to the candidate pairs' sum."""
    round_trip_time: float | None
    """``currentRoundTripTime`` of the selected candidate pair, in ms."""
    data_channels_opened: int | None
    """``dataChannelsOpened`` of the peer-connection stat."""
    data_channels_closed: int | None
    """``dataChannelsClosed`` of the peer-connection stat."""
    selected_candidate_pair_id: str | None = None
    """Id of the pair chosen as selected (see :func:`parse_stats` for the rules)."""
    local_candidate_type: str | None = None
    """host/srflx/prflx/relay of the selected pair's local candidate."""
    remote_candidate_type: str | None = None
    """host/srflx/prflx/relay of the selected pair's remote candidate."""
    candidate_protocol: str | None = None
    """udp/tcp of the selected pair's local candidate."""
    available_outgoing_bitrate: float | None = None
    """``availableOutgoingBitrate`` of the selected pair (bps; Chromium only)."""
    ice_state: str | None = None
    """``iceState`` of the transport."""
    dtls_state: str | None = None
    """``dtlsState`` of the transport."""
    data_channels: tuple[DataChannelStatistics, ...] = ()
    """Native data channels still listed in the report."""
    media: MediaStatistics = MediaStatistics()
    """RTP streams, empty on a data-only connection."""
    channels: tuple[ChannelStatistics, ...] = ()
    """Logical channel counters; :func:`parse_stats` leaves this empty for the caller."""


@dataclass(frozen=True)
class StatisticsRates:
    """Rates between two snapshots; None where a counter is missing or went backwards."""

    interval: float
    """Seconds between the snapshots."""
    send_bitrate: float | None
    """Transport bits per second sent."""
    receive_bitrate: float | None
    """Transport bits per second received."""
    inbound_packet_loss: float | None
    """Percent of inbound RTP packets lost in the interval: lost / (lost + received)."""
    outbound_packet_loss: float | None
    """Percent of our RTP packets the peer reported lost: lost / packets sent."""


def parse_stats(report: StatsReport, now: float) -> ConnectionStatistics:
    """Parse a getStats report (mapping id -> stat, or a list of stats) taken at ``now``.

    The selected candidate pair is, in order: the transport's
    ``selectedCandidatePairId`` if it names a pair in the report; a pair with
    ``selected: true`` (Firefox); a nominated and succeeded pair; a succeeded
    pair. Ties go to the pair that moved the most bytes. Entries that are not
    mappings, or lack ``type``/``id``, are skipped.
    """
    stats = [s for s in _entries(report) if isinstance(s, Mapping)]
    by_id: dict[str, Mapping[str, Any]] = {}
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for stat in stats:
        stat_id, stat_type = stat.get("id"), stat.get("type")
        if isinstance(stat_id, str):
            by_id[stat_id] = stat
        if isinstance(stat_type, str):
            by_type.setdefault(stat_type, []).append(stat)

    transports = by_type.get("transport", [])
    pairs = by_type.get("candidate-pair", [])
    pair = _selected_pair(transports, pairs)

    bytes_sent = _sum(_int(t.get("bytesSent")) for t in transports)
    bytes_received = _sum(_int(t.get("bytesReceived")) for t in transports)
    if bytes_sent is None:
        bytes_sent = _sum(_int(p.get("bytesSent")) for p in pairs)
    if bytes_received is None:
        bytes_received = _sum(_int(p.get("bytesReceived")) for p in pairs)

    pc = next(iter(by_type.get("peer-connection", [])), {})
    local = _lookup(by_id, pair, "localCandidateId")
    remote = _lookup(by_id, pair, "remoteCandidateId")
    transport = _transport_of(transports, pair)

    rtt = _float(pair.get("currentRoundTripTime")) if pair else None
    return ConnectionStatistics(
        timestamp=now,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        round_trip_time=None if rtt is None else rtt * 1000.0,
        data_channels_opened=_int(pc.get("dataChannelsOpened")),
        data_channels_closed=_int(pc.get("dataChannelsClosed")),
        selected_candidate_pair_id=_str(pair.get("id")) if pair else None,
        local_candidate_type=_candidate_type(local),
        remote_candidate_type=_candidate_type(remote),
        candidate_protocol=_str(local.get("protocol")) if local else None,
        available_outgoing_bitrate=(
            _float(pair.get("availableOutgoingBitrate")) if pair else None
        ),
        ice_state=_str(transport.get("iceState")) if transport else None,
        dtls_state=_str(transport.get("dtlsState")) if transport else None,
        data_channels=tuple(_data_channel(s) for s in by_type.get("data-channel", [])),
        media=MediaStatistics(
            inbound=tuple(_inbound(s) for s in by_type.get("inbound-rtp", [])),
            outbound=tuple(_outbound(s) for s in by_type.get("outbound-rtp", [])),
            remote_inbound=tuple(
                _remote_inbound(s) for s in by_type.get("remote-inbound-rtp", [])
            ),
        ),
    )


def compute_rates(previous: ConnectionStatistics, current: ConnectionStatistics) -> StatisticsRates:
    """Bitrates and packet loss between two snapshots of the same connection.

    Raises :class:`~pyapp.exceptions.LocalProtocolError` when ``current`` is
    not later than ``previous``. A counter that is missing in either snapshot
    or went backwards (a new transport after an ICE restart, a new stream)
    gives ``None`` rather than a negative or made-up rate.
    """
    interval = current.timestamp - previous.timestamp
    if not interval > 0:
        raise InvalidArgumentError(
            f"snapshots out of order: {previous.timestamp} then {current.timestamp}"
        )

    def bitrate(before: int | None, after: int | None) -> float | None:
        delta = _delta(before, after)
        return None if delta is None else delta * 8 / interval

    inbound_loss: float | None = None
    lost = _delta(previous.media.packets_lost, current.media.packets_lost, allow_negative=True)
    received = _delta(previous.media.packets_received, current.media.packets_received)
    if lost is not None and received is not None:
        lost = max(lost, 0)  # duplicates can make packetsLost go down (RFC 3550 6.4.1)
        inbound_loss = _percent(lost, lost + received)

    outbound_loss: float | None = None
    remote_lost = _delta(
        previous.media.remote_packets_lost, current.media.remote_packets_lost, allow_negative=True
    )
    sent = _delta(previous.media.packets_sent, current.media.packets_sent)
    if remote_lost is not None and sent is not None:
        outbound_loss = _percent(max(remote_lost, 0), sent)

    return StatisticsRates(
        interval=interval,
        send_bitrate=bitrate(previous.bytes_sent, current.bytes_sent),
        receive_bitrate=bitrate(previous.bytes_received, current.bytes_received),
        inbound_packet_loss=inbound_loss,
        outbound_packet_loss=outbound_loss,
    )


# -- helpers ------------------------------------------------------------------


def _entries(report: Any) -> Iterable[Any]:
    if isinstance(report, Mapping):
        return list(report.values())
    if isinstance(report, str | bytes) or not isinstance(report, Iterable):
        return []
    return list(report)


def _selected_pair(
    transports: list[Mapping[str, Any]], pairs: list[Mapping[str, Any]]
) -> Mapping[str, Any]:
    by_id = {p.get("id"): p for p in pairs if isinstance(p.get("id"), str)}
    for transport in transports:
        ref = transport.get("selectedCandidatePairId")
        selected = by_id.get(ref) if isinstance(ref, str) else None
        if selected is not None:
            return selected
    tiers = (
        [p for p in pairs if p.get("selected") is True],
        [p for p in pairs if p.get("nominated") is True and p.get("state") == "succeeded"],
        [p for p in pairs if p.get("state") == "succeeded"],
    )
    for tier in tiers:
        if tier:
            return max(tier, key=_pair_traffic)
    return {}


def _pair_traffic(pair: Mapping[str, Any]) -> int:
    return (_int(pair.get("bytesSent")) or 0) + (_int(pair.get("bytesReceived")) or 0)


def _transport_of(
    transports: list[Mapping[str, Any]], pair: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    for transport in transports:
        if pair and transport.get("id") == pair.get("transportId"):
            return transport
    return transports[0] if transports else None


def _lookup(
    by_id: Mapping[str, Mapping[str, Any]], pair: Mapping[str, Any], key: str
) -> Mapping[str, Any] | None:
    ref = pair.get(key) if pair else None
    return by_id.get(ref) if isinstance(ref, str) else None


def _candidate_type(candidate: Mapping[str, Any] | None) -> str | None:
    if candidate is None:
        return None
    value = candidate.get("candidateType")
    return value if value in CANDIDATE_TYPES else None


def _data_channel(s: Mapping[str, Any]) -> DataChannelStatistics:
    return DataChannelStatistics(
        label=_str(s.get("label")),
        data_channel_identifier=_int(s.get("dataChannelIdentifier")),
        state=_str(s.get("state")),
        messages_sent=_int(s.get("messagesSent")),
        messages_received=_int(s.get("messagesReceived")),
        bytes_sent=_int(s.get("bytesSent")),
        bytes_received=_int(s.get("bytesReceived")),
    )


def _inbound(s: Mapping[str, Any]) -> InboundRtpStatistics:
    return InboundRtpStatistics(
        ssrc=_int(s.get("ssrc")),
        kind=_str(s.get("kind")),
        packets_received=_int(s.get("packetsReceived")),
        packets_lost=_int(s.get("packetsLost"), signed=True),
        jitter_ms=_ms(s.get("jitter")),
        bytes_received=_int(s.get("bytesReceived")),
        frame_width=_int(s.get("frameWidth")),
        frame_height=_int(s.get("frameHeight")),
        frames_per_second=_float(s.get("framesPerSecond")),
    )


def _outbound(s: Mapping[str, Any]) -> OutboundRtpStatistics:
    return OutboundRtpStatistics(
        ssrc=_int(s.get("ssrc")),
        kind=_str(s.get("kind")),
        packets_sent=_int(s.get("packetsSent")),
        bytes_sent=_int(s.get("bytesSent")),
        frame_width=_int(s.get("frameWidth")),
        frame_height=_int(s.get("frameHeight")),
        frames_per_second=_float(s.get("framesPerSecond")),
        target_bitrate=_float(s.get("targetBitrate")),
        quality_limitation_reason=_str(s.get("qualityLimitationReason")),
    )


def _remote_inbound(s: Mapping[str, Any]) -> RemoteInboundRtpStatistics:
    fraction = _float(s.get("fractionLost"))
    return RemoteInboundRtpStatistics(
        ssrc=_int(s.get("ssrc")),
        kind=_str(s.get("kind")),
        packets_lost=_int(s.get("packetsLost"), signed=True),
        fraction_lost=fraction if fraction is not None and fraction <= 1 else None,
        jitter_ms=_ms(s.get("jitter")),
        round_trip_time_ms=_ms(s.get("roundTripTime")),
    )


def _float(value: Any) -> float | None:
    """A finite, non-negative number, else None (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) and result >= 0 else None


def _int(value: Any, *, signed: bool = False) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    result = int(value)
    return result if signed or result >= 0 else None


def _ms(seconds: Any) -> float | None:
    value = _float(seconds)
    return None if value is None else value * 1000.0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _sum(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _delta(before: int | None, after: int | None, *, allow_negative: bool = False) -> int | None:
    if before is None or after is None:
        return None
    delta = after - before
    return delta if allow_negative or delta >= 0 else None


def _percent(part: int, whole: int) -> float | None:
    if whole <= 0:
        return None
    return min(100.0, 100.0 * part / whole)
