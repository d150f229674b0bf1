"""The in-flight window: reliable DATA below HIGH waits for ACKs past ``inflight_limit``."""

from __future__ import annotations

import pytest

from pyapp.core.framing import FrameType, decode_frame
from pyapp.core.mux import MessageReceived, Multiplexer, Priority, Reliability, Role
from tests.support.mux_pull import feed

pytestmark = pytest.mark.unit





def _drain(m: Multiplexer) -> list[bytes]:
    out = []
    while (f := m.next_frame(0.0)) is not None:
        out.append(f.data)
    return out


def _data_bytes(frames: list[bytes], channel: int) -> int:
    total = 0
    for raw in frames:
        f = decode_frame(raw)
        if f.type == FrameType.DATA and f.channel_id == channel:
            total += len(f.payload)
    return total


def test_sender_stops_at_the_limit_until_acks_arrive_and_high_is_exempt():
    a = Multiplexer(Role.INITIATOR, inflight_limit=64 * 1024, send_queue_limit=1 << 30)
    b = Multiplexer(Role.RESPONDER)
    bulk = a.open_channel("bulk", Reliability.RELIABLE, Priority.LOW)
    urgent = a.open_channel("urgent", Reliability.RELIABLE, Priority.HIGH)
    for _ in range(32):
        a.send(bulk, bytes(16 * 1024), 0.0)
    first = _drain(a)
    sent = _data_bytes(first, bulk)
    assert 64 * 1024 <= sent <= 64 * 1024 + 16 * 1024, sent  # stops at a message boundary
    # HIGH is not held back by the window.
    a.send(urgent, b"cancel order", 0.0)
    assert _data_bytes(_drain(a), urgent) == len(b"cancel order")
    # The receiver takes the messages; its ACKs reopen the window.
    events = [e for f in first for e in feed(b, f, 0.0)]
    assert sum(isinstance(e, MessageReceived) for e in events) == sent // (16 * 1024)
    for ack in _drain(b):
        feed(a, ack, 0.0)
    assert _data_bytes(_drain(a), bulk) >= 64 * 1024


def test_a_message_larger_than_the_window_still_completes():
    a = Multiplexer(Role.INITIATOR, inflight_limit=32 * 1024)
    b = Multiplexer(Role.RESPONDER)
    ch = a.open_channel("big", Reliability.RELIABLE, Priority.VERY_LOW)
    a.send(ch, bytes(300 * 1024), 0.0)
    a.send(ch, b"after", 0.0)
    got = []
    for _ in range(50):
        frames = _drain(a)
        for f in frames:
            got += [e.data for e in feed(b, f, 0.0) if isinstance(e, MessageReceived)]
        for ack in _drain(b):
            feed(a, ack, 0.0)
        if len(got) == 2:
            break
    assert [len(m) for m in got] == [300 * 1024, 5]


def test_window_is_released_when_a_channel_is_reset():
    a = Multiplexer(Role.INITIATOR, inflight_limit=16 * 1024)
    doomed = a.open_channel("doomed", Reliability.RELIABLE, Priority.LOW)
    other = a.open_channel("other", Reliability.RELIABLE, Priority.LOW)
    a.send(doomed, bytes(16 * 1024), 0.0)
    a.send(other, b"waiting", 0.0)
    frames = _drain(a)
    assert _data_bytes(frames, other) == 0  # parked behind the full window
    a.reset_channel(doomed, "abandoned")
    assert _data_bytes(_drain(a), other) == len(b"waiting")


def _unreliable_pair():
    a = Multiplexer(Role.INITIATOR)
    b = Multiplexer(Role.RESPONDER)
    cid = a.open_channel("ticks", Reliability.UNRELIABLE, Priority.LOW)
    for f in _drain(a):
        feed(b, f, 0.0)
    for f in _drain(b):  # ACCEPT: unreliable DATA waits for it
        feed(a, f, 0.0)
    return a, b, cid


def test_unreliable_messages_lost_whole_in_transit_are_counted():
    a, b, cid = _unreliable_pair()
    for i in range(40):
        a.send(cid, f"tick {i}".encode(), 0.0)
    frames = _drain(a)
    assert len(frames) == 40
    delivered = []
    for i, f in enumerate(frames):
        if i in (3, 4, 20):
            continue  # lost in the network: no fragment ever arrives
        delivered += [e for e in feed(b, f, 0.0) if isinstance(e, MessageReceived)]
    assert len(delivered) == 37
    peer_cid = b.channel_ids[0]
    assert b.channel_stats(peer_cid).messages_lost == 3


def test_reordered_unreliable_messages_are_not_counted_as_lost():
    a, b, cid = _unreliable_pair()
    for i in range(10):
        a.send(cid, bytes([i]), 0.0)
    frames = _drain(a)
    order = [0, 2, 1, 5, 3, 4, 9, 6, 8, 7]
    got = [e.data for i in order for e in feed(b, frames[i], 0.0) if isinstance(e, MessageReceived)]
    assert sorted(got) == [bytes([i]) for i in range(10)]
    assert b.channel_stats(b.channel_ids[0]).messages_lost == 0
