"""quality_score, labels and QualityTracker hysteresis."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.probe import ProbeStatistics
from pyapp.core.quality import (
    EXCELLENT_THRESHOLD,
    GOOD_THRESHOLD,
    QualityLabel,
    QualityTracker,
    label_for_score,
    mos_from_r,
    quality_score,
    r_factor,
)
from pyapp.core.quality_inputs import QualityInputs, choose_inputs
from pyapp.core.stats import ConnectionStatistics, compute_rates, parse_stats
from pyapp.exceptions import InvalidArgumentError, LocalProtocolError

pytestmark = pytest.mark.unit

E, G, P, L = QualityLabel.EXCELLENT, QualityLabel.GOOD, QualityLabel.POOR, QualityLabel.LOST


@pytest.mark.parametrize(
    ("rtt", "loss", "jitter", "low", "high"),
    [
        (0, 0, 0, 100.0, 100.0),
        (50, 0, 5, 99.0, 100.0),
        (100, 5, 10, 86.0, 89.0),
        (300, 2, 30, 86.0, 88.0),
        (600, 0, 0, 81.0, 83.0),
        (50, 10, 5, 71.0, 73.0),
        (50, 12, 5, 64.0, 66.0),
        (50, 20, 5, 33.0, 36.0),
        (1000, 0, 50, 36.0, 39.0),
        (50, 40, 5, 0.0, 0.0),
        (math.inf, 0, 0, 0.0, 0.0),
    ],
)
def test_score_table(rtt: float, loss: float, jitter: float, low: float, high: float) -> None:
    assert low <= quality_score(rtt, loss, jitter) <= high


def test_r_factor_formula_by_hand() -> None:
    # latency = 100/2 + 2*10 + 10 = 80 < 160 -> R = 93.2 - 2 - 2.5*4 = 81.2
    assert r_factor(100, 4, 10) == pytest.approx(81.2)
    # latency = 400/2 + 0 + 10 = 210 >= 160 -> R = 93.2 - 9 = 84.2
    assert r_factor(400, 0, 0) == pytest.approx(84.2)
    # Continuous at the 160 ms knee.
    assert r_factor(300, 0, 0) == pytest.approx(89.2)
    assert r_factor(299.999, 0, 0) == pytest.approx(89.2, abs=1e-3)


@pytest.mark.parametrize(("r", "mos"), [(-5, 1.0), (0, 1.0), (50, 2.575), (93.2, 4.41), (120, 4.5)])
def test_mos_from_r(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=0.01)


@pytest.mark.parametrize(
    ("rtt", "loss", "jitter"), [(-10, 0, 0), (0, -5, 0), (0, 0, -1), (math.nan, math.nan, 0)]
)
def test_negative_and_nan_inputs_count_as_zero(rtt: float, loss: float, jitter: float) -> None:
    assert quality_score(rtt, loss, jitter) == 100.0


@pytest.mark.parametrize(
    ("score", "label"),
    [(100, E), (EXCELLENT_THRESHOLD, E), (89.99, G), (GOOD_THRESHOLD, G), (69.99, P), (0, P)],
)
def test_label_thresholds(score: float, label: QualityLabel) -> None:
    assert label_for_score(score) is label


finite = st.floats(min_value=0, max_value=5000, allow_nan=False)
percent = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(finite, percent, finite, finite)
def test_score_never_rises_with_rtt(rtt: float, loss: float, jitter: float, extra: float) -> None:
    assert quality_score(rtt + extra, loss, jitter) <= quality_score(rtt, loss, jitter) + 1e-9


@given(finite, percent, finite, percent)
def test_score_never_rises_with_loss(rtt: float, loss: float, jitter: float, extra: float) -> None:
    assert quality_score(rtt, loss + extra, jitter) <= quality_score(rtt, loss, jitter) + 1e-9


@given(finite, percent, finite, finite)
def test_score_never_rises_with_jitter(rtt: float, loss: float, jitter: float, extra: float) -> None:
    assert quality_score(rtt, loss, jitter + extra) <= quality_score(rtt, loss, jitter) + 1e-9


@given(finite, percent, finite)
def test_score_in_range(rtt: float, loss: float, jitter: float) -> None:
    assert 0.0 <= quality_score(rtt, loss, jitter) <= 100.0


def test_score_strictly_falls_in_the_useful_range() -> None:
    scores = [quality_score(rtt, 0, 0) for rtt in range(0, 2000, 100)]
    assert all(a > b for a, b in itertools.pairwise(scores))
    scores = [quality_score(50, loss, 5) for loss in range(0, 30, 2)]
    assert all(a > b for a, b in itertools.pairwise(scores))


# -- tracker ------------------------------------------------------------------------

# (rtt, loss) samples and their raw scores: ~99.9 / 89.0 (loss 5) / ~72 (loss 10) / ~5 (loss 30)
PERFECT, GOODISH, BORDER, AWFUL = (20.0, 0.0), (20.0, 5.0), (20.0, 10.0), (20.0, 30.0)


def feed(tracker: QualityTracker, samples: list[tuple[float, float]]) -> list[QualityLabel]:
    labels = []
    for i, (rtt, loss) in enumerate(samples):
        labels.append(tracker.observe(float(i), rtt, loss, 1.0).label)
    return labels


def test_first_sample_sets_the_label() -> None:
    assert feed(QualityTracker(), [GOODISH]) == [G]
    assert feed(QualityTracker(), [AWFUL]) == [P]


def test_one_outlier_does_not_flip_the_label() -> None:
    labels = feed(QualityTracker(), [PERFECT, PERFECT, AWFUL, PERFECT, PERFECT, PERFECT])
    assert labels == [E] * 6


def test_the_same_outlier_flips_without_confirmation() -> None:
    # Shows the confirmation is what protects the label (the test above can fail).
    labels = feed(QualityTracker(confirm_samples=1), [PERFECT, AWFUL])
    assert labels == [E, G]


def test_sustained_degradation_flips_after_confirmation() -> None:
    labels = feed(QualityTracker(), [PERFECT] + [AWFUL] * 4)
    assert labels[:2] == [E, E]
    assert labels[2] in (G, P)
    assert labels[-1] is P


def test_hysteresis_band_holds_near_threshold() -> None:
    # Scores oscillating just around the excellent threshold never leave GOOD...
    tracker = QualityTracker(alpha=1.0)
    assert tracker.observe(0.0, 20.0, 5.0).label is G  # 89.0
    labels = [tracker.observe(float(i), 20.0, loss).label
              for i, loss in enumerate([4.0, 5.0, 4.0, 5.0, 4.0], start=1)]  # 91.7 / 89.0
    assert labels == [G] * 5
    # ...until they clear threshold + margin twice in a row.
    assert tracker.observe(6.0, 20.0, 2.0).label is G  # 96.3, first
    assert tracker.observe(7.0, 20.0, 2.0).label is E  # confirmed


def test_falling_needs_margin_below_threshold() -> None:
    tracker = QualityTracker(alpha=1.0, margin=3.0)
    tracker.observe(0.0, 20.0, 0.0)
    # 89.0 sits within the margin under 90: stays excellent however long.
    for i in range(1, 6):
        assert tracker.observe(float(i), 20.0, 5.0).label is E
    assert tracker.observe(6.0, 20.0, 6.0).label is E  # 86.2: first below 87
    assert tracker.observe(7.0, 20.0, 6.0).label is G


def test_score_is_smoothed() -> None:
    tracker = QualityTracker(alpha=0.5)
    first = tracker.observe(0.0, 20.0, 0.0).quality_score
    second = tracker.observe(1.0, 20.0, 20.0).quality_score
    raw = quality_score(20.0, 20.0, 0.0)
    assert second == pytest.approx((first + raw) / 2)


def test_quality_fields_are_the_last_measurement() -> None:
    q = QualityTracker().observe(3.0, 42.0, 1.5, 7.0)
    assert (q.round_trip_time, q.packet_loss, q.jitter, q.timestamp) == (42.0, 1.5, 7.0, 3.0)
    assert q.quality_score == pytest.approx(quality_score(42.0, 1.5, 7.0))


def test_lost_after_timeout_and_recovery() -> None:
    tracker = QualityTracker(lost_timeout=5.0)
    assert tracker.get_timer() is None
    tracker.observe(0.0, 20.0, 0.0)
    assert tracker.get_timer() == 5.0
    tracker.handle_timer(4.9)
    assert tracker.label is E
    q = tracker.quality(5.0)
    assert (q.label, q.quality_score, q.timestamp) == (L, 0.0, 5.0)
    assert tracker.get_timer() is None
    # The next sample starts afresh (no smoothing with the old value).
    assert tracker.observe(9.0, 20.0, 10.0).label is G


def test_samples_without_rtt_do_not_hold_off_lost() -> None:
    tracker = QualityTracker(lost_timeout=2.0)
    tracker.observe(0.0, 20.0, 0.0)
    assert tracker.observe(1.0, None, 100.0).label is E
    assert tracker.observe(1.5, math.nan).label is E
    assert tracker.observe(2.5, None, 100.0).label is L


def test_start_arms_the_timer_without_samples() -> None:
    tracker = QualityTracker(lost_timeout=3.0)
    tracker.start(10.0)
    assert tracker.get_timer() == 13.0
    assert tracker.quality(13.0).label is L


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.5}, {"margin": -1.0}, {"confirm_samples": 0},
     {"lost_timeout": 0.0}],
)
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        QualityTracker(**kwargs)  # type: ignore[arg-type]


def test_lost_timeout_can_change_without_rebuilding_the_tracker() -> None:
    tracker = QualityTracker(lost_timeout=5.0)
    tracker.observe(0.0, 20.0, 0.0, 1.0)
    label = tracker.label
    assert tracker.get_timer() == 5.0
    tracker.set_lost_timeout(15.0)            # polling slowed down: wait longer
    assert tracker.lost_timeout == 15.0 and tracker.get_timer() == 15.0
    tracker.handle_timer(10.0)
    assert tracker.label is label             # still measured, not LOST
    tracker.handle_timer(15.0)
    assert tracker.label is QualityLabel.LOST and tracker.get_timer() is None
    with pytest.raises(InvalidArgumentError):
        tracker.set_lost_timeout(0)


# -- choose_inputs: which measurements a poll feeds the tracker --------------------------

def _stats(now: float, *extra: dict, rtt: float | None = 0.030) -> ConnectionStatistics:
    report = [
        {"id": "T", "type": "transport", "selectedCandidatePairId": "CP",
         "bytesSent": 1000, "bytesReceived": 1000},
        {"id": "CP", "type": "candidate-pair", "state": "succeeded", "nominated": True,
         **({} if rtt is None else {"currentRoundTripTime": rtt})},
        *extra,
    ]
    return parse_stats(report, now)


def _probe(received: int, rtt: float = 12.0) -> ProbeStatistics:
    return ProbeStatistics(rtt_ms=rtt, smoothed_rtt_ms=rtt, min_rtt_ms=rtt, jitter_ms=1.5,
                           loss_pct=5.0, sent=received + 1, received=received, lost=0, late=0,
                           in_flight=1)


def test_inputs_from_ice_without_media_or_an_answered_probe() -> None:
    stats = _stats(1.0)
    assert choose_inputs(stats, None, None, 0) == QualityInputs("ice", 30.0, None, None, 0)
    # A probe with no echo yet does not count as 100 % loss: still the ICE RTT.
    assert choose_inputs(stats, None, _probe(0), 0).source == "ice"


def test_inputs_from_the_probe_and_rtt_unknown_without_a_new_echo() -> None:
    stats = _stats(1.0)
    first = choose_inputs(stats, None, _probe(3), 0)
    assert first == QualityInputs("probe", 12.0, 5.0, 1.5, 3)
    again = choose_inputs(stats, None, _probe(3), first.echoes)     # no echo since then
    assert again == QualityInputs("probe", None, 5.0, 1.5, 3)
    assert choose_inputs(stats, None, _probe(4), again.echoes).rtt_ms == 12.0


def test_inputs_from_rtp_loss_between_snapshots_then_the_peers_reports() -> None:
    inbound = {"id": "I", "type": "inbound-rtp", "ssrc": 1, "kind": "video",
               "packetsReceived": 900, "packetsLost": 10, "jitter": 0.004}
    before = _stats(1.0, inbound)
    after = _stats(2.0, {**inbound, "packetsReceived": 990, "packetsLost": 20})
    rates = compute_rates(before, after)
    chosen = choose_inputs(after, rates, _probe(5), 2)
    assert chosen.source == "rtp" and chosen.echoes == 2              # the probe is ignored
    assert chosen.loss_pct == pytest.approx(10.0)                     # 10 lost of 100
    assert chosen.jitter_ms == pytest.approx(4.0) and chosen.rtt_ms == 30.0
    # First poll (no rates): the peer's fractionLost; RTT from RTCP without a pair RTT.
    remote = {"id": "R", "type": "remote-inbound-rtp", "ssrc": 2, "kind": "video",
              "fractionLost": 0.25, "roundTripTime": 0.08, "jitter": 0.002}
    only = _stats(1.0, remote, rtt=None)
    assert choose_inputs(only, None, None, 0) == QualityInputs("rtp", 80.0, 25.0, 2.0, 0)
