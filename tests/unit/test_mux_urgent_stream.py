"""The URGENT transport: HIGH reliable channels on their own stream once both sides have it.

What must hold: a channel's frames all ride one transport, fixed at OPEN (so OPEN comes
before DATA, CLOSE after it, RESET after both, whatever the other streams do); nothing
changes for a peer that never has the stream; a peer's flagged OPEN is checked."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import (
    FLAG_REPLAY,
    FLAG_URGENT_STREAM,
    FrameType,
    Transport,
    decode_frame,
    encode_frame,
    encode_open,
)
from pyapp.core.mux import (
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    ChannelState,
    Event,
    MessageReceived,
    Multiplexer,
    OutgoingFrame,
    Priority,
    ProtocolErrorEvent,
    Reliability,
    Role,
)
from tests.support.mux_pull import feed, take

pytestmark = pytest.mark.unit

UNRELIABLE = Reliability(ordered=False, max_retransmits=0)
BIG = 1 << 30


def _pair(urgent: bool = True) -> tuple[Multiplexer, Multiplexer]:
    kw = {"send_queue_limit": BIG, "replay_buffer_limit": BIG}
    a, b = Multiplexer(Role.INITIATOR, **kw), Multiplexer(Role.RESPONDER, **kw)
    if urgent:
        a.use_urgent_transport()
        b.use_urgent_transport()
    return a, b


def _frames(m: Multiplexer) -> list[OutgoingFrame]:
    return list(iter(lambda: m.next_frame(0.0), None))


def _kinds(frames: list[OutgoingFrame]) -> list[tuple[str, str]]:
    return [(FrameType(decode_frame(f.data).type).name, f.transport.name) for f in frames]


def _deliver(frames: list[OutgoingFrame], dst: Multiplexer) -> list[Event]:
    events: list[Event] = []
    for f in frames:
        events += feed(dst, f.data, 0.0)
    return events


def test_a_high_reliable_channel_rides_urgent_both_ways_for_every_frame() -> None:
    a, b = _pair()
    cid = a.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    assert a.transport_of(cid) is Transport.URGENT
    a.send(cid, b"x" * 20_000, 0.0)  # two fragments
    out = _frames(a)
    assert _kinds(out) == [("OPEN", "URGENT"), ("DATA", "URGENT"), ("DATA", "URGENT")]
    assert decode_frame(out[0].data).flags & FLAG_URGENT_STREAM
    events = _deliver(out, b)
    assert isinstance(events[0], ChannelOpened) and b.transport_of(cid) is Transport.URGENT
    assert [len(e.data) for e in events if isinstance(e, MessageReceived)] == [20_000]
    b.send(cid, "fill", 0.0)
    back = _frames(b)
    assert sorted(_kinds(back)) == [("ACCEPT", "URGENT"), ("ACK", "URGENT"), ("DATA", "URGENT")]
    _deliver(back, a)
    a.close_channel(cid)
    closes = _frames(a)
    assert sorted(_kinds(closes)) == [("ACK", "URGENT"), ("CLOSE", "URGENT")]
    _deliver(closes, b)
    answer = _frames(b)
    assert _kinds(answer) == [("CLOSE", "URGENT")]
    events = _deliver(answer, a)
    assert any(isinstance(e, ChannelClosed) for e in events)
    assert a.channel_ids == () and b.channel_ids == ()


def test_other_channels_and_a_peer_without_the_stream_are_unchanged() -> None:
    a, _b = _pair()
    medium = a.open_channel("bulk", Reliability.RELIABLE, Priority.MEDIUM)
    game = a.open_channel("game", UNRELIABLE, Priority.HIGH)
    assert a.transport_of(medium) is Transport.RELIABLE
    assert a.transport_of(game) is Transport.UNRELIABLE  # its DATA; CLOSE rides RELIABLE
    opens = _frames(a)
    assert _kinds(opens) == [("OPEN", "RELIABLE"), ("OPEN", "RELIABLE")]
    assert not any(decode_frame(f.data).flags & FLAG_URGENT_STREAM for f in opens)
    # Nobody called use_urgent_transport (an older peer, or the stream never came up).
    old_a, _old_b = _pair(urgent=False)
    cid = old_a.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    old_a.send(cid, b"buy", 0.0)
    out = _frames(old_a)
    assert _kinds(out) == [("OPEN", "RELIABLE"), ("DATA", "RELIABLE")]
    assert out[0].data == encode_open(cid, "orders", Reliability.RELIABLE, Priority.HIGH)
    assert not old_a.urgent_transport


def test_a_channel_keeps_the_transport_it_was_opened_with() -> None:
    a, b = _pair(urgent=False)
    early = a.open_channel("early", Reliability.RELIABLE, Priority.HIGH)
    _deliver(_frames(a), b)
    a.use_urgent_transport()
    b.use_urgent_transport()
    late = a.open_channel("late", Reliability.RELIABLE, Priority.HIGH)
    a.send(early, b"1", 0.0)
    a.send(late, b"2", 0.0)
    by_channel = {(f.channel_id, FrameType(decode_frame(f.data).type).name): f.transport.name
                  for f in _frames(a)}
    assert by_channel == {(late, "OPEN"): "URGENT", (late, "DATA"): "URGENT",
                          (early, "DATA"): "RELIABLE"}
    assert b.transport_of(early) is Transport.RELIABLE


def test_a_flagged_open_is_refused_when_the_stream_is_not_up_or_the_channel_unreliable() -> None:
    for urgent_up, reliability in ((False, Reliability.RELIABLE), (True, UNRELIABLE)):
        b = Multiplexer(Role.RESPONDER)
        if urgent_up:
            b.use_urgent_transport()
        wire = encode_open(0, "x", reliability, Priority.HIGH, urgent_stream=True)
        events = feed(b, wire, 0.0)
        assert [type(e).__name__ for e in events] == ["ProtocolErrorEvent"]
        error = events[0]
        assert isinstance(error, ProtocolErrorEvent) and "urgent transport" in str(error.error)
        assert b.channel_ids == ()
        reply = _frames(b)
        assert _kinds(reply) == [("RESET", "RELIABLE")]  # so the opener does not hang
        assert bytes(decode_frame(reply[0].data).payload) == b"urgent transport refused"


def test_the_opener_learns_of_the_refusal() -> None:
    a = Multiplexer(Role.INITIATOR)
    b = Multiplexer(Role.RESPONDER)
    a.use_urgent_transport()  # a wrongly believes b has the stream
    cid = a.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    _deliver(_frames(a), b)
    events = _deliver(_frames(b), a)
    resets = [e for e in events if isinstance(e, ChannelReset)]
    assert resets and resets[0].channel_id == cid and resets[0].reason == "urgent transport refused"


def test_resets_and_error_replies_follow_the_channel_onto_its_stream() -> None:
    a, _b = _pair()
    cid = a.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    a.send(cid, b"buy", 0.0)
    assert _kinds(_frames(a)) == [("OPEN", "URGENT"), ("DATA", "URGENT")]
    a.reset_channel(cid, "changed my mind")  # the channel is gone from a's table now
    assert _kinds(_frames(a)) == [("RESET", "URGENT")]
    # A peer's bad frame on an URGENT channel: the RESET answer rides URGENT too.
    a2, b2 = _pair()
    cid2 = a2.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    _deliver(_frames(a2), b2)
    _frames(b2)  # the ACCEPT
    events = feed(b2, encode_frame(FrameType.DATA, cid2, 0x03, seq=5, payload=b"?"), 0.0)
    assert any(isinstance(e, ProtocolErrorEvent) for e in events)
    assert _kinds(_frames(b2)) == [("RESET", "URGENT")]


def test_resume_replays_an_urgent_channel_on_its_stream() -> None:
    a, b = _pair()
    cid = a.open_channel("orders", Reliability.RELIABLE, Priority.HIGH)
    a.send(cid, b"one", 0.0)
    _frames(a)  # lost with the transport
    a.transport_lost()
    a.transport_restored()
    out = _frames(a)
    assert _kinds(out) == [("OPEN", "URGENT"), ("DATA", "URGENT")]
    opened = decode_frame(out[0].data)
    assert opened.flags == FLAG_REPLAY | FLAG_URGENT_STREAM
    events = _deliver(out, b)
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"one"]
    # b replays its ACCEPT and ACK on the channel's stream as well.
    _frames(b)
    b.transport_lost()
    b.transport_restored()
    assert {t for _, t in _kinds(_frames(b))} == {"URGENT"}


# ----------------------------------------------------------------------------- properties

CHANNELS = st.lists(st.tuples(st.sampled_from(list(Priority)), st.booleans(), st.booleans(),
                              st.booleans()), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(specs=CHANNELS, sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=12),
       order=st.lists(st.integers(0, 5), max_size=400), resets=st.sets(st.integers(0, 5)))
def test_any_interleaving_of_the_three_streams_keeps_every_channel_intact(
        specs: list[tuple[Priority, bool, bool, bool]], sizes: list[int], order: list[int],
        resets: set[int]) -> None:
    """Each stream is FIFO, but which stream's next message arrives first is arbitrary
    (hypothesis picks it). Channels of every kind, opened before and after the urgent
    transport came up, by both sides, send, then close or reset: no protocol error,
    every reliable message arrives once and in order, and both sides end with no
    channel left (an OPEN overtaken by its RESET would leave one behind)."""
    a, b = _pair(urgent=False)
    peer = {id(a): b, id(b): a}
    queues: dict[tuple[int, Transport], deque[bytes]] = {
        (id(m), t): deque() for m in (a, b) for t in Transport}
    sent: dict[int, list[bytes]] = {}
    got: dict[int, list[bytes | str]] = {}
    errors: list[Event] = []
    reset_ids: set[int] = set()
    opened: list[tuple[Multiplexer, int]] = []
    for index, (priority, reliable, by_a, after) in enumerate(specs):
        if after and not a.urgent_transport:
            a.use_urgent_transport()
            b.use_urgent_transport()
        opener = a if by_a else b
        cid = opener.open_channel("c", Reliability.RELIABLE if reliable else UNRELIABLE, priority)
        opened.append((opener, cid))
        if reliable:
            sent[cid] = []
            for i, size in enumerate(sizes[index::len(specs)] or sizes[:1]):
                data = bytes([cid & 0xFF, i & 0xFF]) * (size // 2)
                opener.send(cid, data, 0.0)
                sent[cid].append(data)
    for index, (opener, cid) in enumerate(opened):
        if index in resets:
            opener.reset_channel(cid, "bye")
            reset_ids.add(cid)
        else:
            opener.close_channel(cid)

    def absorb(events: list[Event]) -> None:
        for e in events:
            if isinstance(e, MessageReceived):
                got.setdefault(e.channel_id, []).append(e.data)
            elif isinstance(e, ProtocolErrorEvent) or (
                    isinstance(e, ChannelReset) and e.channel_id not in reset_ids):
                errors.append(e)

    def pull() -> None:
        for m in (a, b):
            while (f := m.next_frame(0.0)) is not None:
                queues[(id(m), f.transport)].append(f.data)
            absorb(take(m))

    keys = list(queues)
    pull()
    for pick in order:
        nonempty = [k for k in keys if queues[k]]
        if not nonempty:
            break
        key = nonempty[pick % len(nonempty)]
        absorb(feed(peer[key[0]], queues[key].popleft(), 0.0))
        pull()
    while any(queues.values()):
        for key in keys:
            while queues[key]:
                absorb(feed(peer[key[0]], queues[key].popleft(), 0.0))
                pull()
    assert errors == []
    for cid, messages in sent.items():
        if cid not in reset_ids:
            assert got.get(cid, []) == messages, cid
        else:  # a reset may cut a channel short, never reorder or duplicate it
            assert got.get(cid, []) == messages[:len(got.get(cid, []))], cid
    assert a.channel_ids == () and b.channel_ids == ()


@settings(max_examples=300, deadline=None)
@given(flags=st.integers(0, 255), payload=st.binary(max_size=40), up=st.booleans(),
       cid=st.integers(0, 0xFFFF))
def test_any_open_frame_is_taken_or_refused_with_a_typed_error(flags: int, payload: bytes, up: bool,
                                                                cid: int) -> None:
    """Peer bytes: an OPEN with any flags and payload either opens a channel (on the
    transport its flag asks for, when allowed) or is a ProtocolErrorEvent; never an
    exception, never a half-open channel."""
    b = Multiplexer(Role.RESPONDER)
    if up:
        b.use_urgent_transport()
    events = feed(b, encode_frame(FrameType.OPEN, cid, flags, payload=payload), 0.0)
    if b.channel_ids:
        assert [type(e) for e in events] == [ChannelOpened]
        assert b.channel_state(cid) is ChannelState.OPEN
        urgent = bool(flags & FLAG_URGENT_STREAM)
        assert urgent <= up
        opened = events[0]
        assert isinstance(opened, ChannelOpened)
        assert b.transport_of(cid) is (Transport.URGENT if urgent else opened.reliability.transport)
        assert _kinds(_frames(b)) == [("ACCEPT", "URGENT" if urgent else "RELIABLE")]
    else:
        assert [type(e) for e in events] == [ProtocolErrorEvent]
