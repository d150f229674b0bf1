"""Property tests and fuzzing: any interleaving delivers intact, in order; bad input stays typed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_mux import build_corpus, run_fuzz
from pyapp.core.mux import (
    ChannelReset,
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




BIG = 1 << 30


def _payload(cid: int, index: int, size: int, text: bool) -> bytes | str:
    raw = random.Random(cid * 100_003 + index).randbytes(size)
    return raw.hex()[:size] if text else raw


@dataclass
class World:
    a: Multiplexer
    b: Multiplexer
    owner: dict[int, str] = field(default_factory=dict)  # channel -> sending side
    sent: dict[int, list[bytes | str]] = field(default_factory=dict)
    got: dict[int, list[bytes | str]] = field(default_factory=dict)
    reliable: dict[int, bool] = field(default_factory=dict)
    errors: list[Event] = field(default_factory=list)

    def absorb(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, MessageReceived):
                self.got.setdefault(e.channel_id, []).append(e.data)
            elif isinstance(e, ProtocolErrorEvent | ChannelReset):
                self.errors.append(e)

    def move(self, src: Multiplexer, dst: Multiplexer, limit: int, keep: int | None = None) -> int:
        """Move up to ``limit`` frames; deliver only the first ``keep`` (rest lost)."""
        moved = 0
        while moved < limit:
            frame: OutgoingFrame | None = src.next_frame(0.0)
            if frame is None:
                break
            if keep is None or moved < keep:
                self.absorb(feed(dst, frame.data, 0.0))
            moved += 1
        return moved

    def settle(self) -> None:
        while self.move(self.a, self.b, BIG) + self.move(self.b, self.a, BIG):
            pass
        self.absorb(take(self.a) + take(self.b))


def _world(specs: list[tuple[Priority, bool, bool]]) -> World:
    kw = {"send_queue_limit": BIG, "replay_buffer_limit": BIG}
    w = World(Multiplexer(Role.INITIATOR, **kw), Multiplexer(Role.RESPONDER, **kw))
    for priority, reliable, by_a in specs:
        opener = w.a if by_a else w.b
        rel = Reliability.RELIABLE if reliable else Reliability(ordered=True, max_retransmits=0)
        cid = opener.open_channel("c", rel, priority)
        w.owner[cid] = "a" if by_a else "b"
        w.reliable[cid] = reliable
        w.sent[cid] = []
    w.settle()
    return w


channel_specs = st.lists(
    st.tuples(st.sampled_from(list(Priority)), st.booleans(), st.booleans()),
    min_size=1, max_size=5,
)
sizes = st.one_of(st.integers(0, 200), st.integers(16_000, 60_000))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 4), sizes, st.booleans()),
        st.tuples(st.just("pump"), st.integers(0, 6), st.integers(0, 6), st.just(False)),
    ),
    max_size=40,
)


def _do_send(w: World, op: tuple[str, int, int, bool]) -> None:
    _, which, size, text = op
    cids = sorted(w.owner)
    cid = cids[which % len(cids)]
    sender = w.a if w.owner[cid] == "a" else w.b
    message = _payload(cid, len(w.sent[cid]), size, text)
    sender.send(cid, message, now=0.0)
    w.sent[cid].append(message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=channel_specs, script=ops)
def test_any_interleaving_delivers_every_message_intact_and_in_order(
    specs: list[tuple[Priority, bool, bool]], script: list[tuple[str, int, int, bool]]
) -> None:
    w = _world(specs)
    for op in script:
        if op[0] == "send":
            _do_send(w, op)
        else:
            w.move(w.a, w.b, op[1])
            w.move(w.b, w.a, op[2])
    w.settle()
    assert w.errors == []
    for cid, sent in w.sent.items():
        assert w.got.get(cid, []) == sent, f"channel {cid}"
    assert w.a.stats().replay_bytes == 0 and w.b.stats().replay_bytes == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=channel_specs,
    script=ops,
    losses=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8), st.integers(0, 8)),
                    max_size=3),
)
def test_resume_after_losses_delivers_reliable_messages_exactly_once_in_order(
    specs: list[tuple[Priority, bool, bool]],
    script: list[tuple[str, int, int, bool]],
    losses: list[tuple[int, int, int]],
) -> None:
    w = _world(specs)
    loss_at = {step: (ka, kb) for step, ka, kb in losses}
    for step, op in enumerate(script):
        if op[0] == "send":
            _do_send(w, op)
        else:
            w.move(w.a, w.b, op[1])
            w.move(w.b, w.a, op[2])
        if step in loss_at:
            # The transport dies: a few frames still arrive, everything else in flight is lost.
            ka, kb = loss_at[step]
            w.move(w.a, w.b, BIG, keep=ka)
            w.move(w.b, w.a, BIG, keep=kb)
            w.a.transport_lost()
            w.b.transport_lost()
            w.a.transport_restored()
            w.b.transport_restored()
    w.settle()
    assert [e for e in w.errors if isinstance(e, ProtocolErrorEvent)] == []
    for cid, sent in w.sent.items():
        got = w.got.get(cid, [])
        if w.reliable[cid]:
            assert got == sent, f"reliable channel {cid}"
        else:  # unreliable: a subsequence of what was sent, each message whole
            it = iter(sent)
            assert all(any(g == s for s in it) for g in got), f"unreliable channel {cid}"
    assert w.a.stats().replay_bytes == 0 and w.b.stats().replay_bytes == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    w = _world([(Priority.HIGH, True, True), (Priority.LOW, False, False)])
    events = feed(w.a, data, 0.0) + feed(w.b, data, 0.0)
    assert all(isinstance(e, Event) for e in events)


def test_fuzz_20k_mutated_frames_only_typed_errors() -> None:
    assert run_fuzz(20_000, seed=20240611) == 20_000


def test_fuzz_corpus_is_valid() -> None:
    # The starting frames must themselves be clean, or the mutations prove little.
    from benchmarks.fuzz_mux import _setup

    receiver = _setup()[1]
    events: list[Event] = []
    for frame in build_corpus():
        events += feed(receiver, frame, 0.0)
    assert not [e for e in events if isinstance(e, ProtocolErrorEvent)]
