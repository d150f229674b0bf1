"""Urgent traffic under bulk: ``next_frame(urgent_only=True)``, the ``urgent`` mark on
frames, ``triage`` of received messages (HIGH channels first, every channel in order),
and the send-buffer tuner."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import FrameType, decode_frame
from pyapp.core.mux import (
    ChannelOpened,
    Event,
    MessageReceived,
    Multiplexer,
    Priority,
    Reliability,
    Role,
)
from pyapp.core.mux_buffer import BufferTuner
from pyapp.core.mux_receive import split_frames
from pyapp.core.scheduler import DeficitRoundRobin
from pyapp.exceptions import InvalidArgumentError
from tests.support.mux_pull import pack, take

pytestmark = pytest.mark.unit

UNRELIABLE = Reliability(ordered=False, max_retransmits=0)


def _pair() -> tuple[Multiplexer, Multiplexer]:
    return Multiplexer(Role.INITIATOR, send_queue_limit=1 << 30), Multiplexer(Role.RESPONDER)


def _deliver(src: Multiplexer, dst: Multiplexer) -> list[Event]:
    while (frame := src.next_frame(0.0)) is not None:
        dst.receive_frame(frame.data, 0.0)
    return take(dst)


# ----------------------------------------------------------------------------- sending


def test_urgent_only_gives_control_and_high_data_and_marks_them():
    a, b = _pair()
    bulk = a.open_channel("bulk", Reliability.RELIABLE, Priority.VERY_LOW)
    urgent = a.open_channel("urgent", Reliability.RELIABLE, Priority.HIGH)
    a.send(bulk, bytes(100_000), 0.0)
    opens = [a.next_frame(0.0, urgent_only=True) for _ in range(2)]
    assert all(f is not None and f.urgent and decode_frame(f.data).type == FrameType.OPEN for f in opens)
    assert a.next_frame(0.0, urgent_only=True) is None  # only bulk is left
    a.send(urgent, b"ping", 0.0)
    frame = a.next_frame(0.0, urgent_only=True)
    assert frame is not None and frame.urgent and frame.channel_id == urgent
    assert decode_frame(frame.data).payload == b"ping"
    assert a.next_frame(0.0, urgent_only=True) is None
    rest = a.next_frame(0.0)
    assert rest is not None and not rest.urgent and rest.channel_id == bulk
    # ACKs are urgent too.
    for f in opens:
        b.receive_frame(f.data, 0.0)
    b.receive_frame(frame.data, 0.0)
    take(b)
    ack = b.next_frame(0.0, urgent_only=True)
    assert ack is not None and ack.urgent and decode_frame(ack.data).type in (FrameType.ACCEPT, FrameType.ACK)


def test_urgent_only_pulls_keep_every_message_intact_and_the_cycle_going():
    a, b = _pair()
    bulk = a.open_channel("bulk", Reliability.RELIABLE, Priority.VERY_LOW)
    medium = a.open_channel("medium", Reliability.RELIABLE, Priority.MEDIUM)
    urgent = a.open_channel("urgent", UNRELIABLE, Priority.HIGH)
    _deliver(b, a)  # nothing yet
    events = _deliver(a, b)  # OPENs
    assert sum(isinstance(e, ChannelOpened) for e in events) == 3
    _deliver(b, a)  # ACCEPTs
    payloads = {bulk: [bytes([i]) * 40_000 for i in range(5)],
                medium: [bytes([100 + i]) * 20_000 for i in range(5)]}
    for cid, msgs in payloads.items():
        for m in msgs:
            a.send(cid, m, 0.0)
    got: list[Event] = []
    for i in range(40):
        a.send(urgent, f"u{i}", 0.0)
        u = a.next_frame(0.0, urgent_only=True)
        assert u is not None and u.channel_id == urgent
        b.receive_frame(u.data, 0.0)
        f = a.next_frame(0.0)  # then one normal pull
        if f is not None:
            b.receive_frame(f.data, 0.0)
        got += take(b)
    got += _deliver(a, b)
    by_channel: dict[int, list[object]] = {}
    for e in got:
        if isinstance(e, MessageReceived):
            by_channel.setdefault(e.channel_id, []).append(e.data)
    assert by_channel[bulk] == payloads[bulk]
    assert by_channel[medium] == payloads[medium]
    assert by_channel[urgent] == [f"u{i}" for i in range(40)]


def test_select_high_serves_high_out_of_turn_and_charges_it():
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(quantum=100)
    assert drr.select_high() is None
    drr.add("bulk", Priority.VERY_LOW)
    assert drr.select() == "bulk"
    drr.served("bulk", 100, True)
    assert drr.select_high() is None  # no HIGH item: nothing changes
    drr.add("ping", Priority.HIGH)
    assert drr.select_high() == "ping"
    drr.served("ping", 10, False)
    assert drr.select() == "bulk" and len(drr) == 1


# ----------------------------------------------------------------------------- receiving


def _three_channel_stream(sizes: list[tuple[int, int]]) -> tuple[Multiplexer, list[bytes], dict[int, str]]:
    """Frames a sends on three channels (HIGH, MEDIUM, VERY_LOW), after b accepted them."""
    a, b = _pair()
    labels = {}
    for label, prio in (("high", Priority.HIGH), ("medium", Priority.MEDIUM), ("bulk", Priority.VERY_LOW)):
        labels[a.open_channel(label, Reliability.RELIABLE, prio)] = label
    _deliver(a, b)
    _deliver(b, a)
    cids = list(labels)
    for i, (which, size) in enumerate(sizes):
        a.send(cids[which % 3], bytes([i % 256]) * size, 0.0)
    frames = []
    while (f := a.next_frame(0.0)) is not None:
        frames.append(f.data)
    return b, frames, labels


@settings(max_examples=60)
@given(sizes=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40_000)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(0, 60), max_size=10))
def test_triage_puts_high_first_and_keeps_every_channel_in_order(sizes, cuts):
    b, frames, labels = _three_channel_stream(sizes)
    messages = pack(frames, cuts)
    first, rest = b.triage(messages)
    rest_frames = [f for m in rest for f in split_frames(m)]  # whole messages stay whole
    assert sorted(bytes(f) for f in first + rest_frames) == sorted(frames)  # nothing lost or made up
    high = next(c for c, label in labels.items() if label == "high")
    assert all(decode_frame(f).channel_id == high for f in first)
    assert all(decode_frame(f).channel_id != high for f in rest_frames)
    for f in first + rest:
        b.receive_datagram(f, 0.0)
    events = take(b)
    received = [e for e in events if isinstance(e, MessageReceived)]
    assert len(received) == len(sizes)
    # HIGH messages come out first; each channel's messages in the order sent.
    kinds = [e.channel_id == high for e in received]
    assert kinds == sorted(kinds, reverse=True)
    cids = list(labels)
    for cid in cids:
        sent = [bytes([i % 256]) * size for i, (which, size) in enumerate(sizes) if cids[which % 3] == cid]
        assert [e.data for e in received if e.channel_id == cid] == sent


def _receiver_with_channels() -> Multiplexer:
    a, b = _pair()
    a.open_channel("high", Reliability.RELIABLE, Priority.HIGH)
    a.open_channel("bulk", Reliability.RELIABLE, Priority.VERY_LOW)
    _deliver(a, b)
    return b


@settings(max_examples=200)
@given(messages=st.lists(st.binary(max_size=120), min_size=1, max_size=6),
       prefix=st.sampled_from([b"", bytes([1, 3, 0, 0, 0, 0]), bytes([1, 3, 0, 2, 0, 0])]))
def test_triage_of_peer_garbage_applies_the_same_input_as_receive_datagram(messages, prefix):
    """Whatever the peer sends: triage never raises, and feeding its split changes the
    same counters and resets the same channels as receive_datagram per message."""
    messages = [prefix + m for m in messages]
    plain, triaged = _receiver_with_channels(), _receiver_with_channels()
    for m in messages:
        plain.receive_datagram(m, 0.0)
    first, rest = triaged.triage(messages)
    for f in first + rest:
        triaged.receive_datagram(f, 0.0)
    assert plain.stats() == triaged.stats()
    assert plain.channel_ids == triaged.channel_ids

    def per_channel(events: list[Event]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for e in events:
            out.setdefault(getattr(e, "channel_id", -1), []).append(type(e).__name__)
        return out

    assert per_channel(take(plain)) == per_channel(take(triaged))


def test_triage_without_high_channels_hands_back_the_messages_unread():
    a, b = _pair()
    a.open_channel("bulk", Reliability.RELIABLE, Priority.VERY_LOW)
    _deliver(a, b)
    messages = [b"\x01\x03garbage", bytearray(b"x"), memoryview(b"")]
    first, rest = b.triage(messages)
    assert first == []
    assert [bytes(m) for m in rest] == [bytes(m) for m in messages]
    assert b.stats().frames_received == 1  # the OPEN only: triage read nothing


def test_split_frames_keeps_a_bad_tail_whole_and_reports_an_empty_message():
    a, b = _pair()
    cid = a.open_channel("x", Reliability.RELIABLE, Priority.HIGH)
    a.send(cid, b"abc", 0.0)
    open_frame, data_frame = a.next_frame(0.0), a.next_frame(0.0)
    assert open_frame is not None and data_frame is not None
    view = memoryview(open_frame.data + data_frame.data[:-1])  # the DATA frame is cut short
    parts = split_frames(view)
    assert [bytes(p) for p in parts] == [open_frame.data, data_frame.data[:-1]]
    assert [bytes(p) for p in split_frames(memoryview(b""))] == [b""]
    b.receive_datagram(b"", 0.0)
    assert b.stats().protocol_errors == 1


# ----------------------------------------------------------------------------- send buffer


def test_buffer_tuner_grows_after_running_dry_twice_and_decays_slowly():
    tuner = BufferTuner(min_high=64 * 1024, max_high=256 * 1024)
    assert (tuner.high, tuner.low) == (65536, 24576)
    assert not tuner.refilled(0)
    assert not tuner.refilled(1000)  # not dry this time: the count starts again
    assert not tuner.refilled(0)
    assert tuner.refilled(0) and tuner.high == 98304
    for _ in range(10):
        tuner.refilled(0)
    assert tuner.high == 256 * 1024 and tuner.low == 96 * 1024
    changes = sum(tuner.refilled(tuner.low) for _ in range(16 * 4))
    assert changes == 4 and tuner.high < 256 * 1024
    for _ in range(16 * 40):
        tuner.refilled(tuner.low)
    assert tuner.high == 64 * 1024


@given(st.lists(st.integers(-1, 1 << 20), max_size=300))
def test_buffer_tuner_stays_in_its_range(refills):
    tuner = BufferTuner(min_high=32 * 1024, max_high=200 * 1024)
    for buffered in refills:
        tuner.refilled(buffered)
        assert 32 * 1024 <= tuner.high <= 200 * 1024
        assert tuner.low == int(tuner.high * 3 / 8)


@pytest.mark.parametrize("args", [(0, 10), (10, 5), (1.5, 10), (10, "x")])
def test_buffer_tuner_refuses_bad_ranges(args):
    with pytest.raises(InvalidArgumentError, match="min_high"):
        BufferTuner(*args)
