"""Connection quality: an E-model score from RTT, loss and jitter, smoothed with hysteresis.

:func:`quality_score` is a pure function (0 = unusable, 100 = a perfect
network); :class:`QualityTracker` is the sans-I/O state around it: feed it
samples with :meth:`~QualityTracker.observe`, ask :meth:`~QualityTracker.get_timer`
when it would declare the connection lost, and call
:meth:`~QualityTracker.handle_timer` then. The formula and thresholds are
written down in ``docs/monitoring.md``.

Example::

    from pyapp.core.quality import QualityLabel, QualityTracker, quality_score

    assert quality_score(rtt_ms=0, loss_pct=0, jitter_ms=0) == 100.0
    assert quality_score(rtt_ms=400, loss_pct=10, jitter_ms=50) < 60

    tracker = QualityTracker(lost_timeout=5.0)
    q = tracker.observe(now=0.0, rtt_ms=40.0, loss_pct=0.0, jitter_ms=2.0)
    assert q.label is QualityLabel.EXCELLENT
    q = tracker.observe(now=1.0, rtt_ms=40.0, loss_pct=30.0, jitter_ms=2.0)
    assert q.label is QualityLabel.EXCELLENT      # one bad sample does not flip it
    tracker.handle_timer(now=6.0)
    assert tracker.quality(now=6.0).label is QualityLabel.LOST
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from pyapp.exceptions import InvalidArgumentError

__all__ = [
    "EXCELLENT_THRESHOLD",
    "GOOD_THRESHOLD",
    "ConnectionQuality",
    "QualityLabel",
    "QualityTracker",
    "label_for_score",
    "mos_from_r",
    "quality_score",
    "r_factor",
]

#: Scores at or above this are "excellent" (MOS ~4.06, LiveKit's "excellent" is MOS > 4.1).
EXCELLENT_THRESHOLD = 90.0
#: Scores at or above this (and below excellent) are "good" (MOS ~3.38).
GOOD_THRESHOLD = 70.0


class QualityLabel(enum.StrEnum):
    """The coarse label shown to users."""

    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


@dataclass(frozen=True)
class ConnectionQuality:
    """What the UI shows: the last measurement and the smoothed score/label."""

    round_trip_time: float | None
    """Last round-trip time in ms (None before the first sample)."""
    packet_loss: float | None
    """Last packet loss in percent, 0..100."""
    jitter: float | None
    """Last jitter in ms."""
    quality_score: float
    """Smoothed score, 0..100 (0 when lost)."""
    label: QualityLabel
    """Label with hysteresis applied; LOST when no sample arrived within the timeout."""
    timestamp: float
    """The ``now`` of the last sample (or of the timeout that declared LOST)."""


def _non_negative(value: float) -> float:
    # NaN means "unknown" and counts as 0; +inf stays and scores 0.
    return 0.0 if math.isnan(value) or value < 0 else float(value)


def r_factor(rtt_ms: float, loss_pct: float, jitter_ms: float) -> float:
    """The simplified ITU-T G.107 R-factor used by LiveKit and VoIP monitors.

    ``effective latency = rtt/2 + 2·jitter + 10`` (ms; one-way delay, jitter
    weighted double for the jitter buffer, 10 ms codec delay);
    ``R = 93.2 − latency/40`` below 160 ms, else ``93.2 − (latency − 120)/10``;
    then ``R −= 2.5·loss``. Negative and NaN inputs count as 0, loss is capped at 100.
    """
    rtt, jitter = _non_negative(rtt_ms), _non_negative(jitter_ms)
    loss = min(_non_negative(loss_pct), 100.0)
    latency = rtt / 2 + 2 * jitter + 10
    if latency < 160:
        r = 93.2 - latency / 40
    else:
        r = 93.2 - (latency - 120) / 10
    return r - 2.5 * loss


def mos_from_r(r: float) -> float:
    """ITU-T G.107 Annex B: R to MOS (1..4.5), clamped so it never dips below 1."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))


# The best MOS reachable: rtt = jitter = loss = 0 still has the 10 ms codec delay.
_MOS_BEST = mos_from_r(r_factor(0.0, 0.0, 0.0))


def quality_score(rtt_ms: float, loss_pct: float, jitter_ms: float) -> float:
    """Map (RTT ms, loss %, jitter ms) to 0..100: ``100·(MOS − 1)/(MOS_best − 1)``.

    ``MOS_best`` (≈4.40) is the MOS of a perfect network, so a perfect network
    scores exactly 100. The score never rises when any input rises.
    """
    mos = mos_from_r(r_factor(rtt_ms, loss_pct, jitter_ms))
    return max(0.0, min(100.0, 100.0 * (mos - 1) / (_MOS_BEST - 1)))


def label_for_score(score: float) -> QualityLabel:
    """The label of a score without hysteresis (never LOST)."""
    if score >= EXCELLENT_THRESHOLD:
        return QualityLabel.EXCELLENT
    if score >= GOOD_THRESHOLD:
        return QualityLabel.GOOD
    return QualityLabel.POOR


_RANK = {QualityLabel.POOR: 0, QualityLabel.GOOD: 1, QualityLabel.EXCELLENT: 2}


class QualityTracker:
    """Exponentially smoothed score, a hysteresis band, and a confirmation count.

    * ``smoothed = alpha·score + (1 − alpha)·smoothed`` on every sample (the
      first sample after start or after LOST sets it, and the label, directly).
    * Band edges with hysteresis: the smoothed score moves the label up only
      once it is ``margin`` above the better band's threshold, and down only
      once it is ``margin`` below the current band's threshold.
    * Confirmation: the label changes only if the last ``confirm_samples`` raw
      scores, each judged with the same margins, also point that way. So one
      outlier never flips the label, even when it drags the smoothed score
      across a threshold; the smoothing then recovers.
    * With no sample for ``lost_timeout`` seconds the label is LOST and the
      score 0; the next sample starts afresh.

    A sample with ``rtt_ms=None`` (or NaN/inf) is not a measurement (e.g. every
    probe in the window was lost) and does not hold off the LOST timeout.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        margin: float = 3.0,
        confirm_samples: int = 2,
        lost_timeout: float = 5.0,
    ) -> None:
        if not 0 < alpha <= 1:
            raise InvalidArgumentError(f"alpha must be in (0, 1], got {alpha}")
        if not margin >= 0:
            raise InvalidArgumentError(f"margin must be >= 0, got {margin}")
        if confirm_samples < 1:
            raise InvalidArgumentError(f"confirm_samples must be >= 1, got {confirm_samples}")
        if not lost_timeout > 0:
            raise InvalidArgumentError(f"lost_timeout must be > 0, got {lost_timeout}")
        self._alpha = alpha
        self._margin = margin
        self._confirm = confirm_samples
        self._lost_timeout = lost_timeout
        self._smoothed: float | None = None
        self._label = QualityLabel.LOST
        self._streak = 0  # consecutive raw samples pointing the same way; sign = direction
        self._last_sample: float | None = None
        self._started: float | None = None
        self._last = ConnectionQuality(None, None, None, 0.0, QualityLabel.LOST, 0.0)

    @property
    def lost_timeout(self) -> float:
        """Seconds without a sample after which the label is LOST."""
        return self._lost_timeout

    def set_lost_timeout(self, lost_timeout: float) -> None:
        """Change the LOST timeout (e.g. when polling slows down); applies to the current wait."""
        if not lost_timeout > 0:
            raise InvalidArgumentError(f"lost_timeout must be > 0, got {lost_timeout}")
        self._lost_timeout = lost_timeout

    @property
    def label(self) -> QualityLabel:
        """The current label (LOST timeouts are applied by :meth:`handle_timer`)."""
        return self._label

    def start(self, now: float) -> None:
        """Start the LOST timer before any sample arrives (optional)."""
        if self._started is None:
            self._started = now

    def observe(
        self,
        now: float,
        rtt_ms: float | None,
        loss_pct: float | None = 0.0,
        jitter_ms: float | None = 0.0,
    ) -> ConnectionQuality:
        """Feed one measurement taken at ``now``; returns the updated quality.

        ``loss_pct`` and ``jitter_ms`` of None count as 0 in the score.
        """
        self.handle_timer(now)
        self.start(now)
        if rtt_ms is None or not math.isfinite(rtt_ms):
            self._last = ConnectionQuality(
                None, loss_pct, jitter_ms, self._last.quality_score, self._label, now
            )
            return self._last
        score = quality_score(
            rtt_ms,
            0.0 if loss_pct is None else loss_pct,
            0.0 if jitter_ms is None else jitter_ms,
        )
        if self._smoothed is None or self._label is QualityLabel.LOST:
            self._smoothed = score
            self._label = label_for_score(score)
            self._streak = 0
        else:
            self._smoothed = self._alpha * score + (1 - self._alpha) * self._smoothed
            self._label = self._next_label(score, self._smoothed)
        self._last_sample = now
        self._last = ConnectionQuality(
            rtt_ms, loss_pct, jitter_ms, self._smoothed, self._label, now
        )
        return self._last

    def _hysteresis_target(self, score: float) -> QualityLabel:
        # Rise only into a band cleared by the margin; fall only out of one left by it.
        current = self._label
        up = label_for_score(score - self._margin)
        if _RANK[up] > _RANK[current]:
            return up
        down = label_for_score(score + self._margin)
        if _RANK[down] < _RANK[current]:
            return down
        return current

    def _next_label(self, raw: float, smoothed: float) -> QualityLabel:
        current = self._label
        direction = _RANK[self._hysteresis_target(raw)] - _RANK[current]
        direction = (direction > 0) - (direction < 0)
        if direction == 0:
            self._streak = 0
        elif self._streak * direction > 0:
            self._streak += direction
        else:
            self._streak = direction
        target = self._hysteresis_target(smoothed)
        wanted = _RANK[target] - _RANK[current]
        if wanted and wanted * self._streak > 0 and abs(self._streak) >= self._confirm:
            self._streak = 0
            return target
        return current

    def get_timer(self) -> float | None:
        """When the connection would be declared LOST; None before start and once LOST."""
        reference = self._last_sample if self._last_sample is not None else self._started
        return None if reference is None else reference + self._lost_timeout

    def handle_timer(self, now: float) -> None:
        """Declare LOST if no sample arrived within ``lost_timeout`` before ``now``."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        self._smoothed = None
        self._label = QualityLabel.LOST
        self._last_sample = None
        self._started = None
        self._last = ConnectionQuality(
            self._last.round_trip_time, self._last.packet_loss, self._last.jitter,
            0.0, QualityLabel.LOST, deadline,
        )

    def quality(self, now: float) -> ConnectionQuality:
        """The current quality, after applying the LOST timeout at ``now``."""
        self.handle_timer(now)
        return self._last
