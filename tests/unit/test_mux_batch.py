"""Many small messages at a time: ``send_many``, ``next_frame(pack=True)``, packed receive.

Each batched path is compared with the one-at-a-time path it stands for: the
same messages arrive, in the same order per channel, with the same counters;
the packed data never exceeds one fragment's room (so never the SCTP message
size); a reliable channel that fills up stops short and is told when to go on.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import HEADER_SIZE, FrameType, decode_frame
from pyapp.core.mux import (
    ChannelStats,
    MessageReceived,
    MessagesReceived,
    Multiplexer,
    Priority,
    Reliability,
    Role,
    SendWindowOpened,
)
from pyapp.core.mux_receive import split_frames
from pyapp.exceptions import ConnectionClosedError, InvalidArgumentError, MessageTooLargeError
from tests.support.mux_pull import take

pytestmark = pytest.mark.unit

_message = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=40),
    st.binary(max_size=300).map(bytearray),
    st.integers(17_000, 40_000).map(bytes),  # more than one fragment: never packed
)


def _pair(batch_events: bool = False, **options: Any) -> tuple[Multiplexer, Multiplexer]:
    return Multiplexer(Role.INITIATOR, **options), Multiplexer(Role.RESPONDER, batch_events=batch_events)


def _drain(a: Multiplexer, b: Multiplexer, pack: bool, limit: int = 0) -> list[bytes]:
    """Everything a has to send, into b (packed data through receive_datagram); the data sent."""
    sent = []
    while (frame := a.next_frame(0.0, pack=pack)) is not None:
        sent.append(bytes(frame.data))
        if limit:
            assert len(frame.data) <= limit
        b.receive_datagram(frame.data, 0.0)
    while (frame := b.next_frame(0.0)) is not None:  # ACCEPTs and ACKs back
        a.receive_datagram(frame.data, 0.0)
    return sent


def _counters(stats: ChannelStats) -> tuple[int, ...]:
    return (stats.messages_sent, stats.bytes_sent, stats.frames_sent, stats.messages_received,
            stats.bytes_received, stats.frames_received, stats.unacked_messages, stats.queued_bytes)


def _run(plan: list[tuple[int, list[Any]]], batched: bool, max_message_size: int,
         batch_events: bool = False) -> tuple[Any, ...]:
    a, b = _pair(batch_events, max_message_size=max_message_size, inflight_limit=0)
    channels = [a.open_channel("r"), a.open_channel("h", priority=Priority.HIGH),
                a.open_channel("u", Reliability(ordered=False, max_retransmits=0))]
    _drain(a, b, False)
    take(a)
    take(b)
    room = HEADER_SIZE + a.fragment_size
    for which, messages in plan:
        cid = channels[which]
        if batched:
            assert a.send_many(cid, messages, 0.0) == len(messages)
        else:
            for m in messages:
                a.send(cid, m, 0.0)
        _drain(a, b, batched, room)
    received: dict[int, list[Any]] = {}
    for e in take(b):
        if isinstance(e, MessageReceived):
            received.setdefault(e.channel_id, []).append(e.data)
        elif isinstance(e, MessagesReceived):
            assert batch_events and len(e.messages) > 1
            received.setdefault(e.channel_id, []).extend(e.messages)
    stats = tuple(_counters(a.channel_stats(c)) + _counters(b.channel_stats(c)) for c in channels)
    totals = (a.stats().frames_sent, b.stats().frames_received, b.stats().protocol_errors)
    return received, stats, totals


@settings(max_examples=150, deadline=None)
@given(plan=st.lists(st.tuples(st.integers(0, 2), st.lists(_message, max_size=30)), max_size=6),
       max_message_size=st.sampled_from([262_144, 1200]))
def test_batched_paths_deliver_what_one_at_a_time_delivers(plan: list[tuple[int, list[Any]]],
                                                           max_message_size: int) -> None:
    batched, single = _run(plan, True, max_message_size), _run(plan, False, max_message_size)
    assert batched == single
    assert _run(plan, True, max_message_size, batch_events=True) == batched
    expected: dict[int, list[Any]] = {}
    for which, messages in plan:
        for m in messages:
            expected.setdefault(which * 2, []).append(m if isinstance(m, str) else bytes(m))
    assert batched[0] == {cid: msgs for cid, msgs in expected.items() if msgs}
    assert batched[2][2] == 0  # no protocol error


def test_pack_puts_many_whole_messages_in_one_fragments_room() -> None:
    a, b = _pair(inflight_limit=0)
    cid = a.open_channel("ticks")
    assert a.send_many(cid, [bytes([i % 256]) * 100 for i in range(400)], 0.0) == 400
    sent = _drain(a, b, True)
    data = sent[1:]  # after the OPEN
    assert all(len(d) <= HEADER_SIZE + a.fragment_size for d in data)
    assert len(data) == 3  # 141 + 141 + 118 messages of 116 bytes
    frames = [decode_frame(f) for d in data for f in split_frames(memoryview(d))]
    assert [f.seq for f in frames] == list(range(400))
    assert all(f.type == FrameType.DATA and f.fragment == 0 for f in frames)
    got = [e.data for e in take(b) if isinstance(e, MessageReceived)]
    assert got == [bytes([i % 256]) * 100 for i in range(400)]
    # With batch_events, each packed run is one event.
    a, b = _pair(True, inflight_limit=0)
    cid = a.open_channel("ticks")
    a.send_many(cid, [bytes([i % 256]) * 100 for i in range(400)], 0.0)
    _drain(a, b, True)
    runs = [e for e in take(b) if isinstance(e, MessagesReceived)]
    assert [len(e.messages) for e in runs] == [141, 141, 118]
    assert [m for e in runs for m in e.messages] == [bytes([i % 256]) * 100 for i in range(400)]


def test_pack_stops_at_the_inflight_window_but_not_for_high() -> None:
    for priority, expected in ((Priority.MEDIUM, 10), (Priority.HIGH, 50)):
        a, _ = _pair(inflight_limit=1000)
        cid = a.open_channel("x", priority=priority)
        a.next_frame(0.0)  # the OPEN
        a.send_many(cid, [bytes(100)] * 50, 0.0)
        frame = a.next_frame(0.0, pack=True)
        assert frame is not None
        assert len(split_frames(memoryview(frame.data))) == expected


def test_pack_never_passes_one_fragments_room() -> None:
    a, _ = _pair()
    cid = a.open_channel("x")
    a.next_frame(0.0)
    # 16 + 16,276 bytes leave 108 of the 16,400: a 100-byte message needs 116.
    a.send_many(cid, [bytes(16_276), bytes(100), bytes(92)], 0.0)
    first = a.next_frame(0.0, pack=True)
    assert first is not None and len(first.data) == HEADER_SIZE + 16_276
    second = a.next_frame(0.0, pack=True)
    assert second is not None and len(second.data) == 2 * HEADER_SIZE + 192


def test_a_fragmented_message_is_never_packed_behind() -> None:
    a, _ = _pair()
    cid = a.open_channel("x")
    a.next_frame(0.0)
    a.send_many(cid, [b"small", bytes(20_000), b"after"], 0.0)
    sizes = []
    while (frame := a.next_frame(0.0, pack=True)) is not None:
        sizes.append([len(f) - HEADER_SIZE for f in split_frames(memoryview(frame.data))])
    assert sizes == [[5], [16_384], [3_616], [5]]  # the tail of a fragmented message starts no run


def test_send_many_stops_short_when_the_queue_is_full_and_says_when_to_go_on() -> None:
    a, b = _pair(send_queue_limit=1000)
    cid = a.open_channel("x")
    assert a.send_many(cid, [bytes(300)] * 5, 0.0) == 3  # 900 bytes queued; the 4th does not fit
    assert a.send_queue_bytes(cid) == 900
    assert not [e for e in take(a) if isinstance(e, SendWindowOpened)]
    _drain(a, b, True)
    assert [e.channel_id for e in take(a) if isinstance(e, SendWindowOpened)] == [cid]
    assert a.send_many(cid, [bytes(300)] * 2, 0.0) == 2


def test_send_many_raises_for_the_message_at_fault_and_keeps_those_before() -> None:
    a, b = _pair(max_message_bytes=1000)
    cid = a.open_channel("x")
    with pytest.raises(MessageTooLargeError):
        a.send_many(cid, [b"one", "two", bytes(1001), b"never"], 0.0)
    with pytest.raises(InvalidArgumentError, match="int"):
        a.send_many(cid, [b"three", 4], 0.0)  # type: ignore[list-item]
    _drain(a, b, True)
    assert [e.data for e in take(b) if isinstance(e, MessageReceived)] == [b"one", "two", b"three"]
    a.close_channel(cid)
    with pytest.raises(ConnectionClosedError):
        a.send_many(cid, [b"late"], 0.0)
