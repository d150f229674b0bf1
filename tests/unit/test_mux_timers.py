"""The multiplexer's timer (lifetimes, reorder timeout), the close drain point, and
protocol-error logging. Everything runs on a fake clock: ``now`` is passed in."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import (
    FLAG_DRAIN,
    FrameType,
    decode_frame,
    encode_close,
    encode_frame,
)
from pyapp.core.mux import (
    ChannelClosed,
    ChannelReset,
    Event,
    MessageDropped,
    MessageReceived,
    Multiplexer,
    OutgoingFrame,
    ProtocolErrorEvent,
    Reliability,
    Role,
    Transport,
)
from pyapp.exceptions import FrameError, InvalidArgumentError, LocalProtocolError

pytestmark = pytest.mark.unit

UNREL = Reliability(ordered=False, max_retransmits=0)


def take(m: Multiplexer) -> list[Event]:
    return list(iter(m.next_event, None))


def frames_of(m: Multiplexer, now: float = 0.0) -> list[OutgoingFrame]:
    out = []
    while (f := m.next_frame(now)) is not None:
        out.append(f)
    return out


def pump(a: Multiplexer, b: Multiplexer, now: float = 0.0) -> tuple[list[Event], list[Event]]:
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    while True:
        fa, fb = frames_of(a, now), frames_of(b, now)
        if not fa and not fb:
            return ev_a + take(a), ev_b + take(b)
        for f in fa:
            b.receive_frame(f.data, now)
        ev_b += take(b)
        for f in fb:
            a.receive_frame(f.data, now)
        ev_a += take(a)


def open_pair(reliability: Reliability = UNREL, **kw: float) -> tuple[Multiplexer, Multiplexer, int]:
    a, b = Multiplexer(Role.INITIATOR, **kw), Multiplexer(Role.RESPONDER, **kw)  # type: ignore[arg-type]
    cid = a.open_channel("ticks", reliability)
    pump(a, b)
    return a, b, cid


def of(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


# ------------------------------------------------------------------ the convention


def test_receive_returns_nothing_and_events_are_pulled_once() -> None:
    a, b, cid = open_pair(Reliability.RELIABLE)
    a.send(cid, b"x", now=0.0)
    [frame] = frames_of(a)
    assert b.receive_frame(frame.data, 0.0) is None
    assert [type(e) for e in take(b)] == [MessageReceived]
    assert b.next_event() is None
    assert not hasattr(b, "pop_events")


def test_no_timer_without_anything_timed() -> None:
    a, b, cid = open_pair(Reliability.RELIABLE)
    a.send(cid, b"x" * 40_000, now=0.0)
    pump(a, b)
    assert a.get_timer() is None and b.get_timer() is None


# ------------------------------------------------------------------ lifetime


def test_queued_message_expires_on_the_timer_not_only_when_pulled() -> None:
    a, _b, cid = open_pair(Reliability(ordered=False, max_packet_life_time=100))
    a.send(cid, b"old", now=10.0)
    a.send(cid, b"newer", now=10.05)
    assert a.get_timer() == pytest.approx(10.1)
    a.handle_timer(10.099)
    assert take(a) == []
    a.handle_timer(10.1)
    dropped = of(take(a), MessageDropped)
    assert [(d.reason, d.size, d.inbound) for d in dropped] == [("lifetime expired", 3, False)]
    assert a.get_timer() == pytest.approx(10.15)
    a.handle_timer(10.2)
    assert len(of(take(a), MessageDropped)) == 1
    assert a.get_timer() is None
    assert frames_of(a, 10.2) == []
    assert a.channel_stats(cid).messages_dropped == 2


def test_sender_drops_leave_no_hole_in_the_receivers_sequence() -> None:
    # Numbers are given when the first fragment leaves, so the receiver's
    # "lost in transit" counts only real losses, not our own lifetime drops.
    a, b, cid = open_pair(Reliability(ordered=False, max_packet_life_time=50))
    for i in range(5):
        a.send(cid, bytes([i]), now=0.0)
    a.handle_timer(0.06)  # all five expire
    for i in range(3):
        a.send(cid, bytes([10 + i]), now=1.0)
    _, ev_b = pump(a, b, now=1.0)
    assert [e.data for e in of(ev_b, MessageReceived)] == [b"\x0a", b"\x0b", b"\x0c"]
    assert b.channel_stats(cid).messages_lost == 0


# ------------------------------------------------------------------ reorder timeout


def test_partial_message_is_given_up_after_the_reorder_timeout() -> None:
    a, b, cid = open_pair(reorder_timeout=2.0)
    a.send(cid, b"y" * 40_000, now=0.0)  # three fragments
    frames = frames_of(a)
    b.receive_frame(frames[0].data, 5.0)
    b.receive_frame(frames[1].data, 6.0)  # progress restarts the clock
    assert b.get_timer() == pytest.approx(8.0)
    b.handle_timer(7.9)
    assert take(b) == []
    b.handle_timer(8.0)
    [dropped] = of(take(b), MessageDropped)
    assert (dropped.reason, dropped.inbound, dropped.size) == ("incomplete", True, 2 * 16384)
    assert b.get_timer() is None
    b.receive_frame(frames[2].data, 9.0)  # the straggler of a given-up message
    assert of(take(b), MessageReceived) == []


def test_a_lost_last_message_is_counted_after_the_reorder_timeout() -> None:
    a, b, cid = open_pair(reorder_timeout=1.0)
    for i in range(3):
        a.send(cid, bytes([i]), now=0.0)
    f0, _f1, f2 = frames_of(a)
    b.receive_frame(f0.data, 0.0)
    b.receive_frame(f2.data, 0.0)  # message 1 lost whole: only a gap shows it
    assert [e.data for e in of(take(b), MessageReceived)] == [b"\x00", b"\x02"]
    assert b.channel_stats(cid).messages_lost == 0
    b.handle_timer(b.get_timer() or 0.0)
    assert [d.reason for d in of(take(b), MessageDropped)] == ["lost in transit"]
    assert b.channel_stats(cid).messages_lost == 1


# ------------------------------------------------------------------ close drain point


def _sixty_then_close() -> tuple[Multiplexer, Multiplexer, int, list[OutgoingFrame], OutgoingFrame]:
    a, b, cid = open_pair()
    for i in range(60):
        a.send(cid, f"m{i}", now=0.0)
    a.close_channel(cid)
    frames = frames_of(a)
    [close] = [f for f in frames if decode_frame(f.data).type == FrameType.CLOSE]
    data = [f for f in frames if f is not close]
    assert len(data) == 60 and all(f.transport is Transport.UNRELIABLE for f in data)
    return a, b, cid, data, close


def test_close_frame_of_an_unreliable_channel_carries_the_drain_point() -> None:
    *_, close = _sixty_then_close()
    frame = decode_frame(close.data)
    assert frame.flags & FLAG_DRAIN and frame.seq == 60


@pytest.mark.parametrize("seed", range(6))
def test_close_overtaking_data_still_delivers_everything_before_it(seed: int) -> None:
    a, b, cid, data, close = _sixty_then_close()
    rng = random.Random(seed)
    # The data reordered as an unordered transport does (a few places, well inside
    # the reorder window), and the CLOSE anywhere, even before all of it.
    order = sorted(data, key=lambda f: data.index(f) + rng.uniform(0, 6))
    order.insert(rng.randrange(len(order) + 1) if seed else 0, close)
    events: list[Event] = []
    for f in order:
        b.receive_frame(f.data, 0.0)
        events += take(b)
    got = of(events, MessageReceived)
    assert sorted(e.data for e in got) == sorted(f"m{i}" for i in range(60))
    assert of(events, ProtocolErrorEvent) == [] and of(events, ChannelReset) == []
    [closed] = of(events, ChannelClosed)
    assert events.index(closed) == len(events) - 1  # after every message
    assert closed.stats.messages_lost == 0
    ev_a, _ = pump(a, b)  # b answers CLOSE; both ends forget the channel
    assert of(ev_a, ChannelClosed) and cid not in a.channel_ids and cid not in b.channel_ids


def test_lost_data_at_close_is_counted_when_the_drain_deadline_passes() -> None:
    _a, b, _cid, data, close = _sixty_then_close()
    b.receive_frame(close.data, 1.0)
    for f in data[:-2]:
        b.receive_frame(f.data, 1.0)
    events = take(b)
    assert len(of(events, MessageReceived)) == 58 and of(events, ChannelClosed) == []
    assert b.get_timer() == pytest.approx(2.0)  # drain_timeout 1 s after the CLOSE
    b.receive_frame(data[-1].data, 1.5)  # one straggler still makes it in time
    assert [e.data for e in of(take(b), MessageReceived)] == ["m59"]
    b.handle_timer(2.0)
    events = take(b)
    [lost] = of(events, MessageDropped)
    assert lost.reason == "lost in transit"
    [closed] = of(events, ChannelClosed)
    assert closed.by_peer and closed.stats.messages_lost == 1
    # The lost one arriving after the close completed is late: ignored, never an error.
    ignored = b.stats().frames_ignored
    b.receive_frame(data[-2].data, 3.0)
    assert take(b) == [] and b.stats().frames_ignored == ignored + 1
    assert b.stats().protocol_errors == 0


def test_data_past_the_drain_point_is_a_protocol_error() -> None:
    a2, b2, cid2 = open_pair()
    b2.receive_frame(encode_close(cid2, drain=1), 0.0)  # waits for message 0
    a2.send(cid2, b"zero", now=0.0)
    a2.send(cid2, b"one", now=0.0)
    _f0, f1 = frames_of(a2)
    b2.receive_frame(f1.data, 0.0)  # seq 1 >= drain point 1
    events = take(b2)
    [err] = of(events, ProtocolErrorEvent)
    assert "past the CLOSE drain point" in str(err.error)
    assert of(events, ChannelReset)


def test_close_without_drain_point_then_late_unreliable_data_is_ignored() -> None:
    # A peer that does not send FLAG_DRAIN: the close applies at once and late
    # unreliable DATA is ignored and counted, exactly as after the close completes.
    a, b, cid = open_pair()
    a.send(cid, b"late", now=0.0)
    [late] = frames_of(a)
    b.receive_frame(encode_close(cid), 0.0)
    assert of(take(b), ChannelClosed)
    before = b.stats().frames_ignored
    b.receive_frame(late.data, 0.0)
    assert take(b) == [] and b.stats().frames_ignored == before + 1


def test_reliable_close_is_unchanged_on_the_wire() -> None:
    a, _b, cid = open_pair(Reliability.RELIABLE)
    a.close_channel(cid)
    [close] = frames_of(a)
    assert close.data == encode_frame(FrameType.CLOSE, cid)


def test_drain_flag_on_a_reliable_channel_is_rejected() -> None:
    _a, b, cid = open_pair(Reliability.RELIABLE)
    b.receive_frame(encode_close(cid, drain=0), 0.0)
    assert of(take(b), ProtocolErrorEvent)


def test_decode_accepts_seq_only_with_the_drain_flag() -> None:
    assert decode_frame(encode_close(2, drain=7)).seq == 7
    with pytest.raises(FrameError):
        decode_frame(encode_frame(FrameType.CLOSE, 2, 0, 7))


# ------------------------------------------------------------------ logging


def test_protocol_errors_are_logged_once_per_channel(caplog: pytest.LogCaptureFixture) -> None:
    a, _b, cid = open_pair(Reliability.RELIABLE)
    caplog.set_level(logging.WARNING, logger="pyapp.mux")
    bad = encode_frame(FrameType.ACK, cid, 0, 99)  # ACK for a message never sent
    for _ in range(3):
        a.receive_frame(bad, 0.0)
    records = [r for r in caplog.records if r.name == "pyapp.mux"]
    assert len(records) == 1
    assert f"channel {cid} 'ticks' reset" in records[0].getMessage()
    assert "never sent" in records[0].getMessage()


def test_unattributed_errors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    m = Multiplexer(Role.RESPONDER)
    caplog.set_level(logging.WARNING, logger="pyapp.mux")
    for i in range(100):
        m.receive_frame(b"garbage", 0.0 + i * 0.01)  # one second of garbage
    assert m.stats().protocol_errors == 100
    assert len([r for r in caplog.records if r.name == "pyapp.mux"]) == 5
    m.receive_frame(b"garbage", 11.0)  # the next window
    last = [r for r in caplog.records if r.name == "pyapp.mux"][-1].getMessage()
    assert "95 more protocol errors were not logged" in last
    assert "truncated frame" in last


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("kw", [{"reorder_timeout": 0}, {"drain_timeout": -1.0},
                                {"send_queue_limit": 0}, {"inflight_limit": -1},
                                {"max_message_size": 10}])
def test_bad_arguments_raise_the_bad_argument_type(kw: dict) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Multiplexer(Role.INITIATOR, **kw)
    assert isinstance(info.value, LocalProtocolError) and isinstance(info.value, ValueError)
    assert next(iter(kw)) in str(info.value)


def test_a_drain_close_after_a_plain_close_is_a_duplicate_not_a_crash() -> None:
    _a, b, cid = open_pair()
    b.receive_frame(encode_close(cid), 0.0)  # plain CLOSE: applied at once
    take(b)
    b.receive_frame(encode_close(cid, drain=9), 0.0)  # then one with a drain point
    [err] = of(take(b), ProtocolErrorEvent)
    assert "duplicate CLOSE" in str(err.error)
    b.handle_timer(100.0)  # nothing pending, nothing raised
    assert b.get_timer() is None


def test_bad_arguments_elsewhere_in_the_mux_use_the_same_type() -> None:
    from pyapp.core.scheduler import DeficitRoundRobin

    m = Multiplexer(Role.INITIATOR)
    cases = [
        lambda: Reliability(max_retransmits=1, max_packet_life_time=5),
        lambda: Reliability(max_retransmits=70_000),
        lambda: DeficitRoundRobin(0),
        lambda: m.open_channel("x", channel_id=1),  # the peer's parity
        lambda: m.open_channel("x", channel_id=70_000),
        lambda: m.open_channel("x" * 70_000),
        lambda: m.send(m.open_channel("y"), 42, now=0.0),  # type: ignore[arg-type]
        lambda: m.receive_frame("text", 0.0),  # type: ignore[arg-type]
    ]
    for case in cases:
        with pytest.raises(InvalidArgumentError):
            case()


@settings(max_examples=150, deadline=None)
@given(count=st.integers(0, 40), seed=st.integers(0, 2**32 - 1),
       loss=st.floats(0.0, 0.5), close_at=st.floats(0.0, 1.0), spread=st.integers(0, 10))
def test_close_drain_accounts_for_every_message(count: int, seed: int, loss: float,
                                                 close_at: float, spread: int) -> None:
    """Any loss, any reordering (within the reorder window), the CLOSE anywhere:
    every message is delivered once or counted as lost, the close always completes
    (at the latest on the drain deadline), and nothing is a protocol error."""
    rng = random.Random(seed)
    a, b, cid = open_pair()
    for i in range(count):
        a.send(cid, f"m{i}", now=0.0)
    a.close_channel(cid)
    frames = frames_of(a)
    [close] = [f for f in frames if decode_frame(f.data).type == FrameType.CLOSE]
    sent = [f for f in frames if f is not close]
    data = [f for f in sent if rng.random() >= loss]
    # reordered by less than the reorder window, counted in sequence numbers
    order = sorted(data, key=lambda f: sent.index(f) + rng.uniform(0, spread))
    order.insert(int(close_at * len(order)), close)
    events: list[Event] = []
    for f in order:
        b.receive_frame(f.data, 1.0)
        events += take(b)
    for _ in range(5):  # run the timer until nothing is pending
        deadline = b.get_timer()
        if deadline is None:
            break
        b.handle_timer(deadline)
        events += take(b)
    assert b.get_timer() is None
    got = [e.data for e in of(events, MessageReceived)]
    assert len(got) == len(set(got)) == len(data)
    [closed] = of(events, ChannelClosed)
    assert closed.stats.messages_received + closed.stats.messages_lost == count
    assert of(events, ProtocolErrorEvent) == []
