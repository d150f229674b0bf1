"""Multiplexer behaviour: open/accept/close/reset, priority, backpressure, bad input, resume."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest

import pyapp.core.mux as mux_module
from pyapp.core.framing import (
    FLAG_FIRST,
    FLAG_LAST,
    FLAG_REPLAY,
    FLAG_TEXT,
    HEADER_SIZE,
    MAX_FRAGMENT_PAYLOAD,
    FrameType,
    decode_frame,
    encode_ack,
    encode_close,
    encode_data,
    encode_frame,
    encode_open,
)
from pyapp.core.mux import (
    ChannelAccepted,
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    ChannelState,
    DeliveryFailed,
    Event,
    MessageDropped,
    MessageReceived,
    Multiplexer,
    OutgoingFrame,
    Priority,
    ProtocolErrorEvent,
    Reliability,
    Role,
    SendQueueFull,
    SendWindowOpened,
    Transport,
)
from pyapp.exceptions import (
    ConnectionClosedError,
    DeliveryError,
    FrameError,
    LocalProtocolError,
    MessageTooLargeError,
)
from tests.support.mux_pull import fail, feed, take

pytestmark = pytest.mark.unit




UNREL = Reliability(ordered=False, max_retransmits=0)


def drain(m: Multiplexer, now: float = 0.0) -> list[OutgoingFrame]:
    out = []
    while (frame := m.next_frame(now)) is not None:
        out.append(frame)
    return out


def deliver(frames: list[OutgoingFrame], dst: Multiplexer, now: float = 0.0) -> list[Event]:
    events: list[Event] = []
    for frame in frames:
        events += feed(dst, frame.data, now)
    return events


def pump(a: Multiplexer, b: Multiplexer, now: float = 0.0) -> tuple[list[Event], list[Event]]:
    """Exchange frames until both sides are quiet; return (events at a, events at b)."""
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    while True:
        fa = drain(a, now)
        fb = drain(b, now)
        if not fa and not fb:
            return ev_a + take(a), ev_b + take(b)
        ev_b += deliver(fa, b, now)
        ev_a += deliver(fb, a, now)


def pair(**kw: int) -> tuple[Multiplexer, Multiplexer]:
    return Multiplexer(Role.INITIATOR, **kw), Multiplexer(Role.RESPONDER, **kw)


def received(events: list[Event], cid: int | None = None) -> list[bytes | str]:
    return [e.data for e in events
            if isinstance(e, MessageReceived) and (cid is None or e.channel_id == cid)]


def of(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


# ------------------------------------------------------------------ basics


def test_docstring_example_runs() -> None:
    assert doctest.testmod(mux_module).failed == 0


def test_open_accept_and_ids_by_role() -> None:
    a, b = pair()
    ids_a = [a.open_channel(f"a{i}") for i in range(3)]
    ids_b = [b.open_channel(f"b{i}", UNREL, Priority.LOW) for i in range(3)]
    assert ids_a == [0, 2, 4] and ids_b == [1, 3, 5]
    ev_a, ev_b = pump(a, b)
    opened_at_b = of(ev_b, ChannelOpened)
    assert [(e.channel_id, e.label) for e in opened_at_b] == [(0, "a0"), (2, "a1"), (4, "a2")]
    assert [e.channel_id for e in of(ev_a, ChannelOpened)] == [1, 3, 5]
    assert of(ev_a, ChannelOpened)[0].reliability == UNREL
    assert of(ev_a, ChannelOpened)[0].priority is Priority.LOW
    assert sorted(e.channel_id for e in of(ev_a, ChannelAccepted)) == ids_a
    assert sorted(e.channel_id for e in of(ev_b, ChannelAccepted)) == ids_b
    assert all(a.channel_state(c) is ChannelState.OPEN for c in ids_a + ids_b)


def test_text_binary_empty_and_multi_fragment_messages() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    big = bytes(range(256)) * 300  # 76800 bytes: 5 fragments
    for msg in ("héllo", b"", big, bytearray(b"ba"), memoryview(b"mv"), "", "z" * 40000):
        a.send(cid, msg, now=0.0)
    _, ev_b = pump(a, b)
    assert received(ev_b) == ["héllo", b"", big, b"ba", b"mv", "", "z" * 40000]
    assert all(type(x) is bytes for x in received(ev_b) if not isinstance(x, str))


def test_frames_respect_max_message_size_and_transport() -> None:
    a, b = pair()
    rel = a.open_channel("r")
    unrel = a.open_channel("u", UNREL)
    pump(a, b)
    a.set_max_message_size(1000)
    assert a.fragment_size == 1000 - HEADER_SIZE
    a.send(rel, bytes(5000), now=0.0)
    a.send(unrel, bytes(5000), now=0.0)
    frames = drain(a)
    assert all(len(f.data) <= 1000 for f in frames)
    by = {f.transport for f in frames if f.channel_id == unrel}
    assert by == {Transport.UNRELIABLE}
    assert {f.transport for f in frames if f.channel_id == rel} == {Transport.RELIABLE}
    ev = deliver(frames, b)
    assert received(ev, rel) == [bytes(5000)] and received(ev, unrel) == [bytes(5000)]
    a.set_max_message_size(1 << 30)
    assert a.fragment_size == MAX_FRAGMENT_PAYLOAD
    with pytest.raises(LocalProtocolError):
        a.set_max_message_size(20)


def test_control_frames_always_on_reliable_transport() -> None:
    a, b = pair()
    cid = a.open_channel("u", UNREL)
    _ev_a, _ev_b = pump(a, b)
    a.send(cid, b"x", now=0.0)
    a.close_channel(cid)
    frames = drain(a)
    kinds = [(decode_frame(f.data).type, f.transport) for f in frames]
    assert kinds == [(FrameType.DATA, Transport.UNRELIABLE), (FrameType.CLOSE, Transport.RELIABLE)]


def test_unreliable_data_waits_for_accept_but_reliable_data_follows_open() -> None:
    a, b = pair()
    rel = a.open_channel("r")
    unrel = a.open_channel("u", UNREL)
    a.send(rel, b"r", now=0.0)
    a.send(unrel, b"u", now=0.0)
    first = drain(a)
    types = [(decode_frame(f.data).type, f.channel_id) for f in first]
    assert types == [(FrameType.OPEN, rel), (FrameType.OPEN, unrel), (FrameType.DATA, rel)]
    ev_b = deliver(first, b)
    assert received(ev_b) == [b"r"]
    _ev_a, ev_b = pump(a, b)
    assert received(ev_b) == [b"u"]


def test_local_misuse_raises_typed_errors() -> None:
    a, _b = pair(max_message_bytes=1000)
    cid = a.open_channel("x")
    with pytest.raises(LocalProtocolError):
        a.send(99, b"x", now=0.0)
    with pytest.raises(MessageTooLargeError):
        a.send(cid, bytes(1001), now=0.0)
    with pytest.raises(LocalProtocolError):
        a.send(cid, 12, now=0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        a.open_channel("x", priority=3)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Multiplexer("initiator")  # type: ignore[arg-type]
    with pytest.raises(MessageTooLargeError):
        Multiplexer(Role.INITIATOR, max_message_size=200).open_channel("l" * 500)
    with pytest.raises(LocalProtocolError):
        feed(a, "not bytes", 0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        a.transport_restored()  # never lost
    a.close_channel(cid)
    a.close_channel(cid)  # idempotent
    with pytest.raises(ConnectionClosedError):
        a.send(cid, b"x", now=0.0)
    assert a.can_send(cid, 1) is False


# ------------------------------------------------------------------ close / reset


def test_graceful_close_delivers_queued_data_first() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    pump(a, b)
    a.send(cid, bytes(50000), now=0.0)
    a.close_channel(cid)
    assert a.channel_state(cid) is ChannelState.CLOSING
    ev_a, ev_b = pump(a, b)
    assert received(ev_b) == [bytes(50000)]
    closed_b = of(ev_b, ChannelClosed)
    assert [(e.channel_id, e.by_peer) for e in closed_b] == [(cid, True)]
    assert [(e.channel_id, e.by_peer) for e in of(ev_a, ChannelClosed)] == [(cid, False)]
    assert closed_b[0].stats.messages_received == 1
    assert a.channel_ids == () and b.channel_ids == ()
    assert a.stats().replay_bytes == 0 and b.stats().protocol_errors == 0


def test_peer_closes_while_we_still_have_data() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    pump(a, b)
    b.send(cid, b"late but delivered", now=0.0)
    a.close_channel(cid)
    ev_a, ev_b = pump(a, b)
    assert received(ev_a) == [b"late but delivered"]
    assert len(of(ev_a, ChannelClosed)) == 1 and len(of(ev_b, ChannelClosed)) == 1
    assert a.channel_ids == () and b.channel_ids == ()
    assert a.stats().protocol_errors == 0 and b.stats().protocol_errors == 0


def test_simultaneous_close() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    pump(a, b)
    a.close_channel(cid)
    b.close_channel(cid)
    ev_a, ev_b = pump(a, b)
    assert len(of(ev_a, ChannelClosed)) == 1 and len(of(ev_b, ChannelClosed)) == 1
    assert a.channel_ids == () and b.channel_ids == ()
    assert a.stats().protocol_errors == 0 and b.stats().protocol_errors == 0


def test_reset_by_us_and_frames_crossing_it_are_ignored() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    other = a.open_channel("y")
    pump(a, b)
    a.send(cid, b"1", now=0.0)
    a.send(cid, b"2", now=0.0)
    b.send(cid, b"crossing", now=0.0)
    crossing = drain(b)
    assert a.reset_channel(cid, "app gave up") == 2
    ev = deliver(crossing, a)  # arrives after our reset: ignored, no error
    assert ev == [] and a.stats().frames_ignored == 1
    _ev_a, ev_b = pump(a, b)
    resets = of(ev_b, ChannelReset)
    assert [(r.channel_id, r.reason, r.by_peer) for r in resets] == [(cid, "app gave up", True)]
    assert cid not in b.channel_ids and other in b.channel_ids
    assert a.stats().protocol_errors == 0 and b.stats().protocol_errors == 0


# ------------------------------------------------------------------ priority


def test_high_message_overtakes_64mib_very_low_within_two_frames() -> None:
    a, b = pair(send_queue_limit=1 << 20)
    bulk = a.open_channel("bulk", priority=Priority.VERY_LOW)
    chat = a.open_channel("chat", priority=Priority.HIGH)
    pump(a, b)
    a.send(bulk, bytes(64 << 20), now=0.0)
    for _ in range(10):
        a.next_frame(0.0)
    a.send(chat, b"x" * 100, now=1.0)
    frames = [a.next_frame(1.0) for _ in range(3)]
    position = [f.channel_id for f in frames if f is not None].index(chat)
    assert position <= 1  # at most one 16 KiB bulk fragment ahead of it
    assert a.channel_stats(chat).messages_sent == 1
    assert a.channel_stats(chat).queueing_delay_max == 0.0


def test_priorities_share_by_weight_and_nobody_starves() -> None:
    a, b = pair(send_queue_limit=64 << 20)
    ids = {p: a.open_channel(p.name, priority=p) for p in Priority}
    pump(a, b)
    for cid in ids.values():
        a.send(cid, bytes(MAX_FRAGMENT_PAYLOAD * 200), now=0.0)
    window = [a.next_frame(0.0) for _ in range(150)]
    counts = {p: sum(1 for f in window if f and f.channel_id == cid) for p, cid in ids.items()}
    assert counts == {Priority.HIGH: 80, Priority.MEDIUM: 40, Priority.LOW: 20, Priority.VERY_LOW: 10}


def test_fragments_interleave_across_channels_of_one_priority() -> None:
    a, b = pair()
    x = a.open_channel("x")
    y = a.open_channel("y")
    pump(a, b)
    a.send(x, bytes(MAX_FRAGMENT_PAYLOAD * 3), now=0.0)
    a.send(y, bytes(MAX_FRAGMENT_PAYLOAD * 3), now=0.0)
    assert [f.channel_id for f in drain(a)] == [x, y] * 3


# ------------------------------------------------------------------ backpressure


def test_reliable_send_queue_full_raises_and_window_event_follows() -> None:
    a, b = pair(send_queue_limit=40000)
    cid = a.open_channel("x")
    pump(a, b)
    a.send(cid, bytes(30000), now=0.0)
    assert a.send_queue_bytes(cid) == 30000
    assert a.can_send(cid, 10000) and not a.can_send(cid, 20000)
    with pytest.raises(SendQueueFull) as info:
        a.send(cid, bytes(20000), now=0.0)
    assert isinstance(info.value, LocalProtocolError) and info.value.channel_id == cid
    a.next_frame(0.0)  # one 16 KiB fragment out: 13616 left, 20000 fits now
    assert take(a) == [SendWindowOpened(cid, 40000 - 13616)]
    a.send(cid, bytes(20000), now=0.0)
    # A message bigger than the limit is accepted into an empty queue.
    c2 = a.open_channel("y")
    a.send(c2, bytes(100000), now=0.0)


def test_replay_buffer_limit_raises_delivery_error_until_acked() -> None:
    a, b = pair(replay_buffer_limit=50000)
    cid = a.open_channel("x")
    pump(a, b)
    a.send(cid, bytes(30000), now=0.0)
    a.send(cid, bytes(20000), now=0.0)
    frames = drain(a)
    with pytest.raises(DeliveryError) as info:
        a.send(cid, b"one more", now=0.0)
    assert info.value.undelivered == 1 and "replay buffer full" in info.value.reason
    assert not a.can_send(cid, 8)
    deliver(frames, b)
    ev = deliver(drain(b), a)  # the ACK comes back
    assert of(ev, SendWindowOpened) == [SendWindowOpened(cid, a._send_limit)]
    assert a.stats().replay_bytes == 0
    a.send(cid, b"one more", now=0.0)


def test_unreliable_under_pressure_drops_oldest_whole_messages() -> None:
    a, b = pair(send_queue_limit=3000)
    cid = a.open_channel("u", UNREL)
    pump(a, b)
    for i in range(10):
        a.send(cid, bytes([i]) * 1000, now=0.0)
    dropped = of(take(a), MessageDropped)
    assert len(dropped) == 7 and all(not d.inbound and d.reason == "send queue full" for d in dropped)
    assert a.channel_stats(cid).messages_dropped == 7
    _ev_a, ev_b = pump(a, b)
    assert received(ev_b) == [bytes([i]) * 1000 for i in (7, 8, 9)]


def test_unreliable_in_progress_message_is_not_dropped() -> None:
    a, b = pair(send_queue_limit=20000)
    cid = a.open_channel("u", UNREL)
    pump(a, b)
    a.send(cid, bytes(40000), now=0.0)
    first = a.next_frame(0.0)  # started
    assert first is not None
    a.send(cid, b"new", now=0.0)  # does not fit behind 23616 queued bytes
    assert [d.size for d in of(take(a), MessageDropped)] == [3]
    ev_b = feed(b, first.data, 0.0)
    _ev_a, more = pump(a, b)
    assert received(ev_b + more) == [bytes(40000)]


def test_unreliable_lifetime_expires_queued_messages() -> None:
    a, b = pair()
    cid = a.open_channel("u", Reliability(ordered=False, max_packet_life_time=100))
    pump(a, b)
    a.send(cid, b"stale", now=0.0)
    a.send(cid, b"fresh", now=0.2)
    frames = drain(a, now=0.25)
    dropped = of(take(a), MessageDropped)
    assert [(d.reason, d.size) for d in dropped] == [("lifetime expired", 5)]
    assert received(deliver(frames, b)) == [b"fresh"]


# ------------------------------------------------------------------ unreliable receive


def _unrel_pair(**kw: int) -> tuple[Multiplexer, Multiplexer, int, int]:
    a, b = pair(**kw)
    u = a.open_channel("u", UNREL)
    r = a.open_channel("r")
    pump(a, b)
    return a, b, u, r


def test_missing_fragment_discards_whole_message_never_partial() -> None:
    a, b, u, _r = _unrel_pair(reorder_window=4)
    a.send(u, bytes(40000), now=0.0)  # 3 fragments
    frames = drain(a)
    assert len(frames) == 3
    ev = deliver([frames[0], frames[2]], b)  # the middle one is lost
    assert received(ev) == []
    for i in range(5):
        a.send(u, bytes([i]), now=0.0)
    ev = deliver(drain(a), b)
    assert received(ev) == [bytes([i]) for i in range(5)]
    drops = of(ev, MessageDropped)
    assert [(d.inbound, d.reason, d.size) for d in drops] == [(True, "incomplete", 16384 + 7232)]
    assert b.channel_stats(u).messages_incomplete == 1
    assert b.stats().protocol_errors == 0


def test_unordered_fragments_reassemble_out_of_order() -> None:
    a, b, u, _r = _unrel_pair()
    a.send(u, b"A" * 40000, now=0.0)
    a.send(u, b"B", now=0.0)
    frames = drain(a)
    ev = deliver([frames[3], frames[2], frames[0], frames[1]], b)
    assert received(ev) == [b"B", b"A" * 40000]  # unordered channel: as completed


def test_ordered_unreliable_drops_late_messages() -> None:
    a, b = pair()
    u = a.open_channel("o", Reliability(ordered=True, max_retransmits=0))
    pump(a, b)
    a.send(u, b"first", now=0.0)
    a.send(u, b"second", now=0.0)
    f1, f2 = drain(a)
    ev = deliver([f2, f1], b)
    assert received(ev) == [b"second"]
    assert [(d.reason, d.size) for d in of(ev, MessageDropped)] == [("late", 5)]


def test_duplicate_unreliable_frame_of_a_finished_message_is_ignored() -> None:
    a, b, u, _r = _unrel_pair()
    a.send(u, b"x", now=0.0)
    (f,) = drain(a)
    assert received(deliver([f, f], b)) == [b"x"]
    assert b.channel_stats(u).duplicates_ignored == 1


def test_unreliable_receive_buffer_gives_up_old_partials() -> None:
    a, b, u, _r = _unrel_pair(receive_buffer_limit=40000)
    a.send(u, bytes(40000), now=0.0)
    a.send(u, bytes(40000), now=0.0)
    f = drain(a)
    ev = deliver([f[0], f[1], f[3], f[4]], b)  # two partials of 32 KiB each
    assert [d.reason for d in of(ev, MessageDropped)] == ["incomplete"]
    assert u in b.channel_ids


# ------------------------------------------------------------------ bad input


def _errors(events: list[Event]) -> list[FrameError]:
    return [e.error for e in of(events, ProtocolErrorEvent)]  # type: ignore[misc]


def _bad_input_setup() -> tuple[Multiplexer, Multiplexer, int, int]:
    a, b = pair(max_message_bytes=50000, receive_buffer_limit=40000)
    victim = a.open_channel("victim")
    bystander = a.open_channel("bystander")
    pump(a, b)
    return a, b, victim, bystander


def _data(cid: int, seq: int = 0, frag: int = 0, flags: int = FLAG_FIRST | FLAG_LAST,
          payload: bytes = b"x") -> bytes:
    return encode_data(cid, seq=seq, fragment=frag, flags=flags, payload=payload)


def _overflow(cid: int) -> list[bytes]:
    return [_data(cid, 0, i, FLAG_FIRST if i == 0 else 0, bytes(16384)) for i in range(4)]


def _bad_utf8(cid: int) -> list[bytes]:
    return [_data(cid, flags=FLAG_FIRST | FLAG_LAST | FLAG_TEXT, payload=b"\xff\xfe")]


ATTRIBUTED: dict[str, tuple[Callable[[int], list[bytes]], str]] = {
    "sequence gap": (lambda c: [_data(c, seq=1)], "sequence gap"),
    "fragment gap": (lambda c: [_data(c, 0, 0, FLAG_FIRST), _data(c, 0, 2, FLAG_LAST)], "fragment gap"),
    "reordered": (lambda c: [_data(c, seq=0), _data(c, seq=0)], "sequence gap"),
    "bad length": (lambda c: [_data(c)[:-1] + b"yy"], "length"),
    "unknown type": (lambda c: [encode_frame(42, c)], "unknown frame type"),
    "oversize fragment": (lambda c: [_data(c, payload=bytes(16385))], "oversize"),
    "duplicate open": (lambda c: [encode_open(c, "again", Reliability.RELIABLE, Priority.LOW)],
                       "duplicate OPEN"),
    "message too large": (lambda c: _overflow(c), "too large|overflow"),
    "bad utf-8": (_bad_utf8, "UTF-8"),
    "text flag flips": (lambda c: [_data(c, 0, 0, FLAG_FIRST | FLAG_TEXT),
                                   _data(c, 0, 1, FLAG_LAST)], "TEXT"),
    "ack for unsent": (lambda c: [encode_ack(c, 5)], "never sent"),
    "duplicate accept": (lambda c: [encode_frame(FrameType.ACCEPT, c)], "ACCEPT"),
    "close mid message": (lambda c: [_data(c, 0, 0, FLAG_FIRST), encode_close(c)], "CLOSE inside"),
}


@pytest.mark.parametrize("case", sorted(ATTRIBUTED))
def test_bad_input_resets_only_that_channel(case: str) -> None:
    a, b, victim, bystander = _bad_input_setup()
    make, words = ATTRIBUTED[case]
    events: list[Event] = []
    for wire in make(victim):
        events += feed(a, wire, now=0.0)  # a is the opener: "victim" is its channel
    errors = _errors(events)
    assert len(errors) == 1, events
    assert isinstance(errors[0], FrameError) and errors[0].channel_id == victim
    assert errors[0].reason and __import__("re").search(words, errors[0].reason)
    resets = of(events, ChannelReset)
    assert [(r.channel_id, r.by_peer) for r in resets] == [(victim, False)]
    assert resets[0].stats.errors == 1
    assert a.stats().protocol_errors == 1 and a.stats().unattributed_errors == 0
    assert victim not in a.channel_ids and bystander in a.channel_ids
    # A RESET with the reason goes to the peer; the bystander keeps working both ways.
    a.send(bystander, b"still here", now=0.0)
    _ev_a, ev_b = pump(a, b)
    assert [(r.channel_id, r.by_peer, r.reason) for r in of(ev_b, ChannelReset)] == [
        (victim, True, errors[0].reason)]
    assert received(ev_b) == [b"still here"]
    b.send(bystander, b"me too", now=0.0)
    assert received(pump(a, b)[0]) == [b"me too"]


UNATTRIBUTED: dict[str, tuple[bytes, str]] = {
    "garbage": (b"\x00garbage-garbage-garbage", "version"),
    "truncated": (b"\x01\x03\x00", "truncated"),
    "empty": (b"", "truncated"),
    "data for unknown channel": (_data(200), "unknown channel"),
    "open with wrong parity": (encode_open(8, "x", Reliability.RELIABLE, Priority.LOW),
                               "parity"),
    "close for unknown channel": (encode_close(40), "unknown channel"),
}


@pytest.mark.parametrize("case", sorted(UNATTRIBUTED))
def test_unattributable_input_is_counted_and_changes_nothing(case: str) -> None:
    a, b, victim, bystander = _bad_input_setup()
    wire, words = UNATTRIBUTED[case]
    events = feed(a, wire, now=0.0)
    errors = _errors(events)
    assert len(errors) == 1 and words in errors[0].reason
    assert of(events, ChannelReset) == []
    assert a.stats().protocol_errors == 1 and a.stats().unattributed_errors == 1
    assert set(a.channel_ids) == {victim, bystander}
    a.send(victim, b"ok", now=0.0)
    assert received(pump(a, b)[1]) == [b"ok"]


def test_peer_over_channel_limit_is_refused() -> None:
    a = Multiplexer(Role.INITIATOR, max_channels=2)
    b = Multiplexer(Role.RESPONDER)
    for i in range(3):
        b.open_channel(str(i))
    ev_a, ev_b = pump(a, b)
    assert len(of(ev_a, ChannelOpened)) == 2 and len(_errors(ev_a)) == 1
    assert [r.reason for r in of(ev_b, ChannelReset)] == ["too many channels"]


def test_receive_frame_accepts_any_buffer_type() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    a.send(cid, b"data", now=0.0)
    frames = drain(a)
    ev = feed(b, bytearray(frames[0].data), 0.0)
    ev += feed(b, memoryview(frames[1].data), 0.0)
    assert received(ev) == [b"data"]


# ------------------------------------------------------------------ resume


def test_resume_after_transport_loss_delivers_exactly_once_in_order() -> None:
    a, b = pair()
    x = a.open_channel("x")
    y = b.open_channel("y", priority=Priority.LOW)
    pump(a, b)
    sent_x = [bytes([i]) * (i * 7000 + 1) for i in range(12)]
    sent_y = [f"msg {i}" for i in range(30)]
    got_b: list[bytes | str] = []
    got_a: list[bytes | str] = []
    for m in sent_x[:6]:
        a.send(x, m, now=0.0)
    for m in sent_y[:15]:
        b.send(y, m, now=0.0)
    # Some frames arrive, the ACKs for them do not, the rest is lost in flight.
    fa, fb = drain(a), drain(b)
    got_b += received(deliver(fa[:len(fa) // 2], b))
    got_a += received(deliver(fb[:len(fb) // 3], a))
    drain(a), drain(b)  # ACKs lost too
    for m in (a, b):
        m.transport_lost()
    for m in sent_x[6:9]:
        a.send(x, m, now=1.0)  # queued while down
    assert a.next_frame(1.0) is None
    for m in (a, b):
        m.transport_restored()
    for m in sent_x[9:]:
        a.send(x, m, now=2.0)
    for m in sent_y[15:]:
        b.send(y, m, now=2.0)
    ev_a, ev_b = pump(a, b)
    got_a += received(ev_a)
    got_b += received(ev_b)
    assert got_b == sent_x and got_a == sent_y
    assert a.stats().replay_bytes == 0 and b.stats().replay_bytes == 0
    assert a.stats().protocol_errors == 0 and b.stats().protocol_errors == 0
    assert b.channel_stats(x).duplicates_ignored > 0


def test_resume_replays_open_and_close_handshakes() -> None:
    a, b = pair()
    lost_open = a.open_channel("lost-open")
    closing = a.open_channel("closing")
    pump(a, b)
    a.send(closing, b"last words", now=0.0)
    a.close_channel(closing)
    late = a.open_channel("late")
    a.send(late, b"hi", now=0.0)
    drain(a)  # DATA, CLOSE, OPEN all lost
    for m in (a, b):
        m.transport_lost()
        m.transport_restored()
    ev_a, ev_b = pump(a, b)
    assert received(ev_b) == [b"last words", b"hi"] or received(ev_b) == [b"hi", b"last words"]
    assert [e.channel_id for e in of(ev_b, ChannelOpened)] == [late]
    assert [e.channel_id for e in of(ev_a, ChannelClosed)] == [closing]
    assert set(a.channel_ids) == set(b.channel_ids) == {lost_open, late}
    assert a.stats().protocol_errors == 0 and b.stats().protocol_errors == 0


def test_resume_when_accept_was_lost() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    deliver(drain(a), b)
    drain(b)  # ACCEPT lost
    for m in (a, b):
        m.transport_lost()
        m.transport_restored()
    ev_a, ev_b = pump(a, b)
    assert of(ev_a, ChannelAccepted) == [ChannelAccepted(cid)]
    assert _errors(ev_a) == [] and _errors(ev_b) == []


def test_resume_when_close_reply_was_lost() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    pump(a, b)
    a.close_channel(cid)
    deliver(drain(a), b)  # b got CLOSE, replies; the reply is lost
    drain(b)
    assert cid not in b.channel_ids and a.channel_state(cid) is ChannelState.CLOSING
    for m in (a, b):
        m.transport_lost()
        m.transport_restored()
    ev_a, ev_b = pump(a, b)
    assert [e.channel_id for e in of(ev_a, ChannelClosed)] == [cid]
    assert a.channel_ids == () and _errors(ev_a) == [] and _errors(ev_b) == []


def test_frames_while_transport_down_are_ignored() -> None:
    a, b = pair()
    a.open_channel("x")
    frames = drain(a)
    b.transport_lost()
    assert feed(b, frames[0].data, 0.0) == []
    assert b.stats().frames_ignored == 1


def test_replay_of_data_without_flag_is_a_protocol_error() -> None:
    a, b = pair()
    cid = a.open_channel("x")
    a.send(cid, b"x", now=0.0)
    frames = drain(a)
    deliver(frames, b)
    ev = feed(b, frames[1].data, 0.0)  # same DATA again, not flagged REPLAY
    assert len(_errors(ev)) == 1
    flagged = bytearray(frames[1].data)
    flagged[4] |= FLAG_REPLAY
    c2 = a.open_channel("y")
    a.send(c2, b"y", now=0.0)
    frames = drain(a)
    deliver(frames, b)
    dup = bytearray(frames[1].data)
    dup[4] |= FLAG_REPLAY
    assert feed(b, bytes(dup), 0.0) == []  # replay duplicate: silently dropped


def test_fail_all_returns_every_undelivered_message() -> None:
    a, b = pair()
    rel = a.open_channel("r")
    unrel = a.open_channel("u", UNREL)
    pump(a, b)
    a.send(rel, b"sent-not-acked", now=0.0)
    drain(a)
    a.send(rel, "queued", now=0.0)
    a.send(unrel, b"u-queued", now=0.0)
    events = fail(a, "ice failed")
    failed = {e.channel_id: e for e in of(events, DeliveryFailed)}
    assert failed[rel].messages == (b"sent-not-acked", "queued")
    assert failed[unrel].messages == (b"u-queued",)
    assert failed[rel].error.undelivered == 2
    assert sorted((r.channel_id, r.undelivered) for r in of(events, ChannelReset)) == [
        (rel, 2), (unrel, 1)]
    with pytest.raises(ConnectionClosedError):
        a.send(rel, b"x", now=0.0)
    with pytest.raises(ConnectionClosedError):
        a.open_channel("x")
    assert a.next_frame(0.0) is None and feed(a, b"junk", 0.0) == []


# ------------------------------------------------------------------ stats


def test_stats_counters() -> None:
    a, b = pair()
    cid = a.open_channel("s", priority=Priority.LOW)
    a.send(cid, bytes(20000), now=1.0)
    a.send(cid, "hi", now=1.5)
    frames = drain(a, now=2.0)
    ev = deliver(frames, b, now=2.0)
    s = a.channel_stats(cid)
    assert (s.messages_sent, s.bytes_sent, s.frames_sent, s.queued_bytes) == (2, 20002, 3, 0)
    assert (s.unacked_messages, s.unacked_bytes) == (2, 20002)
    assert s.queueing_delay_max == 1.0 and s.queueing_delay_mean == 0.75
    assert s.label == "s" and s.priority is Priority.LOW and s.reliable
    r = b.channel_stats(cid)
    assert (r.messages_received, r.bytes_received, r.frames_received) == (2, 20002, 4)
    assert received(ev) == [bytes(20000), "hi"]
    total = a.stats()
    assert total.frames_sent == 4 and total.bytes_sent == sum(len(f.data) for f in frames)
    assert b.stats().frames_received == 4 and b.stats().channels == 1


def test_open_channel_with_explicit_id_checks_parity_and_reuse():
    from pyapp.core.mux import Multiplexer, Role
    from pyapp.exceptions import LocalProtocolError

    a = Multiplexer(Role.INITIATOR)
    assert a.open_channel("x", channel_id=42) == 42
    with pytest.raises(LocalProtocolError, match="parity"):
        a.open_channel("y", channel_id=43)
    with pytest.raises(LocalProtocolError, match="in use"):
        a.open_channel("z", channel_id=42)
    with pytest.raises(LocalProtocolError, match="u16"):
        a.open_channel("w", channel_id=70000)
    b = Multiplexer(Role.RESPONDER)
    assert b.open_channel("x", channel_id=7) == 7
