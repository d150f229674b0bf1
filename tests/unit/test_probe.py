"""The in-band probe: wire format, responder, and the Prober's RTT / loss / jitter."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.probe import (
    PROBE_SIZE,
    ProbeError,
    ProbeKind,
    ProbePacket,
    Prober,
    encode_probe,
    is_probe,
    parse_probe,
    respond,
)
from pyapp.exceptions import InvalidArgumentError, LocalProtocolError, RemoteProtocolError

pytestmark = pytest.mark.unit

# Golden bytes: ping seq 1, timestamp 2.5.
GOLDEN_PING = b"PQ\x01\x01\x00\x00\x00\x01" + bytes.fromhex("4004000000000000")
GOLDEN_ECHO = b"PQ\x01\x02\x00\x00\x00\x01" + bytes.fromhex("4004000000000000")


def test_golden_bytes() -> None:
    assert encode_probe(ProbePacket(ProbeKind.PING, 1, 2.5)) == GOLDEN_PING
    assert parse_probe(GOLDEN_ECHO) == ProbePacket(ProbeKind.ECHO, 1, 2.5)
    assert respond(GOLDEN_PING) == GOLDEN_ECHO
    assert PROBE_SIZE == 16
    assert is_probe(GOLDEN_PING) and is_probe(bytearray(GOLDEN_ECHO))
    assert not is_probe(b"PQ") and not is_probe(b"XX" + GOLDEN_PING[2:])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "16 bytes"),
        (GOLDEN_PING + b"\x00", "16 bytes"),
        (b"XQ" + GOLDEN_PING[2:], "magic"),
        (b"PQ\x02" + GOLDEN_PING[3:], "version"),
        (b"PQ\x01\x03" + GOLDEN_PING[4:], "type"),
        (GOLDEN_PING[:8] + struct.pack(">d", float("nan")), "finite"),
        (GOLDEN_PING[:8] + struct.pack(">d", float("inf")), "finite"),
    ],
)
def test_parse_errors_are_typed(data: bytes, message: str) -> None:
    with pytest.raises(ProbeError, match=message) as info:
        parse_probe(data)
    assert isinstance(info.value, RemoteProtocolError)
    assert message in info.value.reason


def test_respond_rejects_an_echo() -> None:
    with pytest.raises(ProbeError, match="expected a ping"):
        respond(GOLDEN_ECHO)


@pytest.mark.parametrize(
    "packet",
    [ProbePacket(ProbeKind.PING, -1, 0.0), ProbePacket(ProbeKind.PING, 2**32, 0.0),
     ProbePacket(ProbeKind.PING, 0, float("nan"))],
)
def test_encode_rejects_bad_fields(packet: ProbePacket) -> None:
    with pytest.raises(LocalProtocolError):
        encode_probe(packet)


@given(st.binary(max_size=40))
def test_garbage_only_raises_probe_error(data: bytes) -> None:
    prober = Prober(now=0.0)
    prober.handle_timer(0.0)
    before = prober.statistics()
    for call in (parse_probe, respond, lambda d: prober.on_echo(d, 0.5)):
        try:
            call(data)
        except ProbeError:
            pass
    after = prober.statistics()
    # A rejected echo changes nothing; an accepted one can only be a match or a late one.
    assert after.sent == before.sent
    assert after.received + after.late + after.in_flight >= before.in_flight


@given(st.integers(0, 2**32 - 1), st.floats(allow_nan=False, allow_infinity=False))
def test_roundtrip(seq: int, timestamp: float) -> None:
    ping = encode_probe(ProbePacket(ProbeKind.PING, seq, timestamp))
    assert parse_probe(respond(ping)) == ProbePacket(ProbeKind.ECHO, seq, timestamp)


# -- the prober --------------------------------------------------------------------


def run(
    prober: Prober,
    *,
    pings: int,
    rtt_of: Callable[[int], float | None],
) -> None:
    """Drive the prober with a fake clock until ``pings`` pings went out and all echoes are in.

    rtt_of(i) gives the i-th ping's RTT in seconds, None to drop it.
    """
    now = 0.0
    arrivals: list[tuple[float, bytes]] = []
    sent = 0
    while sent < pings or arrivals:
        prober.handle_timer(now)
        for ping in prober.data_to_send():
            rtt = rtt_of(sent)
            sent += 1
            if rtt is not None:
                arrivals.append((now + rtt, respond(ping)))
        now = min([prober.get_timer()] + [t for t, _ in arrivals])
        for item in sorted(a for a in arrivals if a[0] <= now):
            prober.on_echo(item[1], item[0])
            arrivals.remove(item)


def test_rtt_measured() -> None:
    prober = Prober(now=0.0, interval=1.0, timeout=2.0)
    run(prober, pings=5, rtt_of=lambda i: 0.040)
    stats = prober.statistics()
    assert stats.rtt_ms == pytest.approx(40.0)
    assert stats.smoothed_rtt_ms == pytest.approx(40.0)
    assert stats.min_rtt_ms == pytest.approx(40.0)
    assert stats.jitter_ms == pytest.approx(0.0)
    assert (stats.received, stats.lost, stats.loss_pct) == (stats.sent, 0, 0.0)


@pytest.mark.parametrize("drop_pct", [10, 25])
@pytest.mark.parametrize("window", [20, 100])
def test_deterministic_drop_pattern_gives_that_loss(drop_pct: int, window: int) -> None:
    # Drop ping i when floor((i+1)·p) > floor(i·p): spreads the drops evenly.
    def rtt_of(i: int) -> float | None:
        dropped = ((i + 1) * drop_pct) // 100 > (i * drop_pct) // 100
        return None if dropped else 0.020

    prober = Prober(now=0.0, interval=0.5, timeout=1.5, window=window)
    run(prober, pings=400, rtt_of=rtt_of)
    stats = prober.statistics()
    assert stats.loss_pct is not None
    assert abs(stats.loss_pct - drop_pct) <= 2.0
    assert stats.received + stats.lost + stats.in_flight == stats.sent
    assert stats.lost >= 400 * drop_pct // 100 - 1


def test_loss_window_forgets_old_losses() -> None:
    prober = Prober(now=0.0, interval=1.0, timeout=1.5, window=10)
    run(prober, pings=30, rtt_of=lambda i: None if i < 10 else 0.01)
    stats = prober.statistics()
    assert stats.lost == 10
    assert stats.loss_pct == 0.0


def test_jitter_is_rfc3550_on_rtt_samples() -> None:
    rtts = [0.010, 0.030, 0.010, 0.030]
    prober = Prober(now=0.0, interval=1.0, timeout=2.0)
    run(prober, pings=4, rtt_of=lambda i: rtts[i])
    expected = 0.0
    for previous, current in itertools.pairwise(rtts):
        expected += (abs(current - previous) * 1000 - expected) / 16
    stats = prober.statistics()
    assert stats.jitter_ms == pytest.approx(expected)
    assert stats.min_rtt_ms == pytest.approx(10.0)
    assert stats.rtt_ms == pytest.approx(30.0)


def test_late_and_duplicate_echoes_are_ignored() -> None:
    prober = Prober(now=0.0, interval=10.0, timeout=1.0)
    prober.handle_timer(0.0)
    [ping] = prober.data_to_send()
    echo = respond(ping)
    prober.on_echo(echo, 0.1)
    prober.on_echo(echo, 0.2)  # duplicate
    prober.handle_timer(10.0)
    [ping2] = prober.data_to_send()
    prober.handle_timer(11.0)  # ping2 times out
    prober.on_echo(respond(ping2), 11.5)  # late
    stats = prober.statistics()
    assert (stats.received, stats.lost, stats.late) == (1, 1, 2)
    assert stats.loss_pct == 50.0


def test_echo_at_the_timeout_instant_counts_as_late() -> None:
    prober = Prober(now=0.0, interval=10.0, timeout=1.0)
    prober.handle_timer(0.0)
    [ping] = prober.data_to_send()
    prober.on_echo(respond(ping), 1.0)
    assert (prober.statistics().lost, prober.statistics().late) == (1, 1)


def test_forged_echoes_raise_and_change_nothing() -> None:
    prober = Prober(now=0.0)
    prober.handle_timer(0.0)
    [ping] = prober.data_to_send()
    packet = parse_probe(ping)
    never_sent = encode_probe(ProbePacket(ProbeKind.ECHO, 5, packet.timestamp))
    wrong_time = encode_probe(ProbePacket(ProbeKind.ECHO, packet.seq, 99.0))
    for bad, message in ((never_sent, "never sent"), (wrong_time, "timestamp"),
                         (ping, "expected an echo")):
        with pytest.raises(ProbeError, match=message):
            prober.on_echo(bad, 0.5)
    assert prober.statistics().in_flight == 1
    prober.on_echo(respond(ping), 0.5)
    assert prober.statistics().received == 1


def test_timer_schedule() -> None:
    prober = Prober(now=5.0, interval=1.0, timeout=0.4)
    assert prober.get_timer() == 5.0
    prober.handle_timer(5.0)
    assert len(prober.data_to_send()) == 1
    assert prober.get_timer() == pytest.approx(5.4)  # the ping's timeout comes first
    prober.handle_timer(5.4)
    assert prober.data_to_send() == []
    assert prober.get_timer() == 6.0
    # A long pause (hidden tab) does not cause a burst of pings.
    prober.handle_timer(60.0)
    assert len(prober.data_to_send()) == 1
    assert prober.get_timer() == pytest.approx(60.4)
    prober.handle_timer(60.4)
    assert prober.get_timer() == pytest.approx(61.0)
    assert prober.statistics().sent == 2


def test_statistics_before_any_echo() -> None:
    stats = Prober(now=0.0).statistics()
    assert (stats.rtt_ms, stats.loss_pct, stats.jitter_ms) == (None, None, None)


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0.0}, {"timeout": -1.0}, {"window": 0}]
)
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        Prober(0.0, **kwargs)  # type: ignore[arg-type]


def test_set_interval_keeps_the_phase_and_postpone_skips_slots() -> None:
    prober = Prober(0.0, interval=1.0, timeout=5.0)
    prober.handle_timer(0.0)
    assert len(prober.data_to_send()) == 1 and prober.get_timer() == 1.0
    prober.set_interval(3.0)                  # one new interval after the last ping
    assert prober.interval == 3.0 and prober.get_timer() == 3.0
    prober.handle_timer(2.9)
    assert prober.data_to_send() == []
    prober.postpone(3.0)                      # not ready at 3.0: next one at 6.0
    assert prober.get_timer() == 5.0          # ...but the ping of t=0 still expires at 5.0
    prober.handle_timer(5.0)
    assert prober.data_to_send() == [] and prober.statistics().lost == 1
    assert prober.get_timer() == 6.0
    prober.handle_timer(6.0)
    assert len(prober.data_to_send()) == 1 and prober.statistics().sent == 2
    with pytest.raises(InvalidArgumentError):
        prober.set_interval(0.0)
