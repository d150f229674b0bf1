"""The points of a :class:`~pyapp.browser.monitor.QualityMonitor`'s timeline.

Every sample of a monitor becomes one :class:`TimelinePoint` in its ring
buffer (``monitor.timeline``); the dashboard charts them and
``monitor.export_timeline()`` exports them (format version
:data:`TIMELINE_VERSION`).

Example (in the page)::

    from dataclasses import asdict

    point = monitor.timeline[-1]
    print(point.rtt_ms, point.loss_pct, point.label, asdict(point))
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIMELINE_VERSION", "TimelinePoint"]

TIMELINE_VERSION = 1
"""Version of the exported timeline's format."""


@dataclass(frozen=True)
class TimelinePoint:
    """One sample of the monitor, as charted and exported."""

    t: float
    """Monotonic seconds (the monitor's clock) when the poll finished."""
    wall: float
    """Unix time in seconds of the same moment."""
    rtt_ms: float | None
    """Round-trip time in ms."""
    loss_pct: float | None
    """Packet loss in percent."""
    jitter_ms: float | None
    """Jitter in ms."""
    score: float
    """Smoothed quality score 0..100."""
    label: str
    """excellent/good/poor/lost."""
    send_bps: float | None
    """Transport bits per second sent since the previous poll."""
    recv_bps: float | None
    """Transport bits per second received since the previous poll."""
    source: str
    """Where loss/jitter came from: rtp, probe or ice."""
