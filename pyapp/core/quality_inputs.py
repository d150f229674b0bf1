"""Where a quality sample's RTT, loss and jitter come from: RTP, the in-band probe, or ICE.

One poll of a connection gives a getStats snapshot (:mod:`pyapp.core.stats`),
the rates since the previous one, and, on a data-only connection with a
multiplexer, the :class:`~pyapp.core.probe.Prober`'s measurements.
:func:`choose_inputs` picks what the :class:`~pyapp.core.quality.QualityTracker`
is fed, and names the source:

* ``"rtp"`` -- media flows: loss from the ``inbound-rtp`` counters between the
  two snapshots (else outbound loss from the peer's ``remote-inbound-rtp``
  reports, else its worst ``fractionLost``), jitter from ``inbound-rtp`` (else
  ``remote-inbound-rtp``), RTT from the selected candidate pair (else RTCP).
* ``"probe"`` -- no media, and the probe has had an echo: its RTT (None when no
  echo arrived since the previous poll: the RTT is then unknown, which does not
  hold off LOST), loss and jitter.
* ``"ice"`` -- otherwise: the candidate pair's RTT; loss and jitter unknown.

Sans-I/O and pure: the caller keeps ``echoes`` (the probe's ``received`` count
at the previous poll) and passes it back in.

Example::

    from pyapp.core.probe import Prober, respond
    from pyapp.core.quality_inputs import choose_inputs
    from pyapp.core.stats import parse_stats

    stats = parse_stats([], now=1.0)
    assert choose_inputs(stats, None, None, 0).source == "ice"
    prober = Prober(now=0.0)
    prober.handle_timer(0.0)
    prober.on_echo(respond(prober.data_to_send()[0]), now=0.02)
    inputs = choose_inputs(stats, None, prober.statistics(), 0)
    assert inputs.source == "probe" and round(inputs.rtt_ms) == 20 and inputs.echoes == 1
"""

from __future__ import annotations

from dataclasses import dataclass

from pyapp.core.probe import ProbeStatistics
from pyapp.core.stats import ConnectionStatistics, StatisticsRates

__all__ = ["QualityInputs", "choose_inputs"]


@dataclass(frozen=True)
class QualityInputs:
    """What one poll feeds the quality tracker."""

    source: str
    """``rtp``, ``probe`` or ``ice`` (see the module docstring)."""
    rtt_ms: float | None
    """Round-trip time in ms (None: unknown this time)."""
    loss_pct: float | None
    """Packet loss in percent (None: unknown)."""
    jitter_ms: float | None
    """Jitter in ms (None: unknown)."""
    echoes: int
    """The probe's echo count now: pass it back as ``echoes`` at the next poll."""


def choose_inputs(stats: ConnectionStatistics, rates: StatisticsRates | None,
                  probe: ProbeStatistics | None, echoes: int) -> QualityInputs:
    """The RTT, loss and jitter of this poll and their source (see the module docstring).

    ``rates`` is :func:`~pyapp.core.stats.compute_rates` from the previous
    snapshot (None at the first poll); ``probe`` the prober's statistics (None
    when not probing); ``echoes`` the probe's ``received`` count at the
    previous poll.
    """
    media = stats.media
    if media.has_media:
        loss = None
        if rates is not None:
            loss = rates.inbound_packet_loss
            if loss is None:
                loss = rates.outbound_packet_loss
        if loss is None:
            fractions = [s.fraction_lost for s in media.remote_inbound if s.fraction_lost is not None]
            loss = 100.0 * max(fractions) if fractions else None
        rtt = stats.round_trip_time
        if rtt is None:
            rtt = media.round_trip_time_ms
        return QualityInputs("rtp", rtt, loss, media.jitter_ms, echoes)
    if probe is not None and probe.received > 0:
        fresh = probe.received > echoes
        return QualityInputs("probe", probe.rtt_ms if fresh else None, probe.loss_pct,
                             probe.jitter_ms, probe.received)
    return QualityInputs("ice", stats.round_trip_time, None, None, echoes)
