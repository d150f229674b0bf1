"""ConnectionLimiter: FIFO slots, bounded queues, deadlines, cancellation, no leaked slot."""

from __future__ import annotations

import textwrap
from collections.abc import Hashable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pyapp.core.limiter as limiter_module
from pyapp.core.limiter import ConnectionLimiter as CoreLimiter
from pyapp.core.limiter import (
    Granted,
    LimiterAction,
    Refused,
    TimedOut,
)
from pyapp.exceptions import LimitExceeded, LocalProtocolError
from tests.unit.events import drain, returning_events

pytestmark = pytest.mark.unit

#: Inputs return the events they queued (pulled with next_event(), as the wrapper does).
ConnectionLimiter = returning_events(CoreLimiter)


def test_limiter_convention_inputs_queue_and_next_event_pulls() -> None:
    lim = CoreLimiter(1)
    assert lim.request("a", "pa", 0.0) is None
    assert lim.request("b", "pb", 0.0, deadline=1.0) is None
    assert lim.next_event() == Granted("a", "pa")
    assert lim.next_event() is None                  # b is queued: nothing more yet
    assert lim.get_timer() == 1.0
    assert lim.handle_timer(1.0) is None
    [timed_out] = drain(lim)
    assert isinstance(timed_out, TimedOut) and timed_out.request_id == "b"
    assert lim.next_event() is None


def test_docstring_example_runs() -> None:
    doc = limiter_module.__doc__
    assert doc is not None
    code = doc.split("Example::")[1].split("Policies")[0]
    exec(compile(textwrap.dedent(code), "limiter-example", "exec"), {})


def test_grants_up_to_max_then_queues() -> None:
    lim = ConnectionLimiter(2)
    assert lim.request("a", "pa", 0.0) == [Granted("a", "pa")]
    assert lim.request("b", "pb", 0.0) == [Granted("b", "pb")]
    assert lim.request("c", "pc", 0.0) == []
    assert (lim.held, lim.queued) == (2, 1)
    assert lim.is_held("a") and lim.is_queued("c") and not lim.is_held("c")
    assert lim.get_timer() is None  # no deadline given


def test_release_hands_slots_over_in_fifo_order() -> None:
    lim = ConnectionLimiter(1)
    lim.request("first", "p0", 0.0)
    for i in range(1, 4):
        assert lim.request(f"w{i}", f"p{i}", float(i)) == []
    assert lim.release("first", 5.0) == [Granted("w1", "p1")]
    assert lim.release("w1", 6.0) == [Granted("w2", "p2")]
    assert lim.release("w2", 7.0) == [Granted("w3", "p3")]
    assert lim.release("w3", 8.0) == []
    assert (lim.held, lim.queued) == (0, 0)
    assert lim.stats.granted == 4 and lim.stats.released == 4


def test_deadline_times_out_queued_request() -> None:
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    assert lim.request("b", "pb", 0.0, deadline=3.0) == []
    assert lim.request("c", "pc", 0.0, deadline=2.0) == []
    assert lim.get_timer() == 2.0
    assert lim.handle_timer(1.9) == []
    [out] = lim.handle_timer(2.0)
    assert out == TimedOut("c", "pc")
    assert isinstance(out.error, LimitExceeded)
    assert lim.get_timer() == 3.0
    assert lim.handle_timer(3.5) == [TimedOut("b", "pb")]
    assert (lim.held, lim.queued, lim.stats.timed_out) == (1, 0, 2)
    assert lim.release("a", 4.0) == []  # nobody left to grant


def test_expired_request_is_never_granted_late() -> None:
    # The timer was not serviced on time; a release at t=5 must not grant a
    # request whose deadline was t=2.
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0, deadline=2.0)
    assert lim.release("a", 5.0) == [TimedOut("b", "pb")]
    assert lim.held == 0


def test_deadline_already_passed_times_out_at_once_only_if_it_would_wait() -> None:
    lim = ConnectionLimiter(1)
    assert lim.request("a", "pa", 5.0, deadline=5.0) == [Granted("a", "pa")]
    assert lim.request("b", "pb", 5.0, deadline=5.0) == [TimedOut("b", "pb")]
    assert lim.queued == 0


def test_queue_cap_refuses_at_once_and_changes_nothing() -> None:
    lim = ConnectionLimiter(1, max_queue=2)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0)
    lim.request("c", "pc", 0.0)
    [refused] = lim.request("d", "pd", 0.0)
    assert refused == Refused("d", "pd", "queue full")
    assert isinstance(refused.error, LimitExceeded)
    assert "queue full" in str(refused.error)
    assert (lim.held, lim.queued, lim.stats.refused) == (1, 2, 1)
    # The refused id left no trace: it can be reused.
    assert lim.release("a", 1.0) == [Granted("b", "pb")]
    assert lim.request("d", "pd", 1.0) == []


def test_inbound_burst_is_bounded_by_its_own_cap() -> None:
    lim = ConnectionLimiter(1, max_queue=10, max_inbound_queue=2)
    lim.request("mine", "p", 0.0)
    results = [lim.request(f"in{i}", f"x{i}", 0.0, inbound=True) for i in range(5)]
    assert results[:2] == [[], []]
    assert results[2:] == [[Refused(f"in{i}", f"x{i}", "inbound queue full")] for i in (2, 3, 4)]
    # Outbound requests still get queue places.
    assert lim.request("out", "po", 0.0) == []
    assert lim.stats.queued_inbound == 2 and lim.queued == 3
    # FIFO across kinds.
    assert lim.release("mine", 1.0) == [Granted("in0", "x0")]
    assert lim.stats.queued_inbound == 1
    assert lim.request("in5", "x5", 1.0, inbound=True) == []


def test_inbound_request_granted_immediately_when_slot_free() -> None:
    lim = ConnectionLimiter(1, max_inbound_queue=0)
    assert lim.request("in", "x", 0.0, inbound=True) == [Granted("in", "x")]
    assert lim.request("in2", "y", 0.0, inbound=True) == [Refused("in2", "y", "inbound queue full")]


def test_cancel_queued_request_leaves_no_trace() -> None:
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0, deadline=9.0)
    lim.request("c", "pc", 0.0, inbound=True)
    assert lim.cancel("b", 1.0) == []
    assert lim.cancel("c", 1.0) == []
    assert (lim.queued, lim.stats.queued_inbound, lim.get_timer()) == (0, 0, None)
    assert lim.stats.cancelled == 2
    assert lim.release("a", 2.0) == []
    assert lim.held == 0


def test_cancel_after_grant_frees_the_slot() -> None:
    # The grant raced the requester's cancellation: the slot must come back.
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0)
    assert lim.cancel("a", 1.0) == [Granted("b", "pb")]
    assert lim.held == 1 and lim.is_held("b")


def test_release_and_cancel_are_idempotent() -> None:
    lim = ConnectionLimiter(2)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0)
    lim.request("c", "pc", 0.0)
    assert lim.release("a", 1.0) == [Granted("c", "pc")]
    assert lim.release("a", 1.0) == []
    assert lim.cancel("a", 1.0) == []
    assert lim.cancel("nope", 1.0) == []
    assert lim.held == 2
    assert lim.stats.released == 1 and lim.stats.cancelled == 0


def test_duplicate_live_request_id_is_a_local_error() -> None:
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    lim.request("b", "pb", 0.0)
    with pytest.raises(LocalProtocolError):
        lim.request("a", "pa", 0.0)
    with pytest.raises(LocalProtocolError):
        lim.request("b", "pb", 0.0)
    assert (lim.held, lim.queued) == (1, 1)


def test_reconfigure_grow_grants_the_queue_in_order() -> None:
    lim = ConnectionLimiter(1)
    lim.request("a", "pa", 0.0)
    for rid in "bcd":
        lim.request(rid, "p" + rid, 0.0)
    assert lim.reconfigure(1.0, max_connections=3) == [Granted("b", "pb"), Granted("c", "pc")]
    assert (lim.held, lim.queued) == (3, 1)


def test_reconfigure_shrink_never_revokes_held_slots() -> None:
    lim = ConnectionLimiter(3)
    for rid in "abc":
        lim.request(rid, "p" + rid, 0.0)
    lim.request("d", "pd", 0.0)
    assert lim.reconfigure(1.0, max_connections=1) == []
    assert lim.held == 3
    assert lim.release("a", 2.0) == []  # still 2 held > 1
    assert lim.release("b", 2.0) == []  # 1 held == 1
    assert lim.release("c", 2.0) == [Granted("d", "pd")]
    assert lim.held == 1


def test_reconfigure_smaller_queue_refuses_newest_waiters() -> None:
    lim = ConnectionLimiter(0, max_queue=5, max_inbound_queue=3)
    for i in range(4):
        lim.request(f"o{i}", "p", 0.0)
    lim.request("i0", "x", 0.0, inbound=True)
    out = lim.reconfigure(1.0, max_queue=3, max_inbound_queue=0)
    assert out == [
        Refused("i0", "x", "queue shrunk"),
        Refused("o3", "p", "queue shrunk"),
    ]
    assert lim.queued == 3 and lim.stats.queued_inbound == 0
    assert lim.reconfigure(2.0, max_connections=10) == [
        Granted("o0", "p"),
        Granted("o1", "p"),
        Granted("o2", "p"),
    ]


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        ConnectionLimiter(-1)
    with pytest.raises(ValueError):
        ConnectionLimiter(1, max_queue=-1)
    lim = ConnectionLimiter(1)
    with pytest.raises(ValueError):
        lim.reconfigure(0.0, max_connections=-2)


# -- property test: no slot ever leaks -------------------------------------------

class LimiterMachine(RuleBasedStateMachine):
    """Random request/release/cancel/timer/reconfigure sequences against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.max_queue = 4
        self.max_inbound = 2
        self.lim = ConnectionLimiter(3, max_queue=self.max_queue, max_inbound_queue=self.max_inbound)
        self.now = 0.0
        self.next_id = 0
        self.outcome: dict[int, str] = {}  # the one terminal outcome of each request
        self.pending: set[int] = set()  # requested, no outcome yet
        self.open: set[int] = set()  # granted, connection not closed yet

    def apply(self, actions: list[LimiterAction]) -> None:
        for action in actions:
            rid = action.request_id
            assert isinstance(rid, int)
            # Exactly one outcome: an action may only resolve a pending request.
            assert rid in self.pending, f"{action} for a request that is not pending"
            self.pending.discard(rid)
            if isinstance(action, Granted):
                self.outcome[rid] = "granted"
                self.open.add(rid)
            elif isinstance(action, Refused):
                self.outcome[rid] = "refused"
            else:
                assert isinstance(action, TimedOut)
                self.outcome[rid] = "timed_out"
        if any(isinstance(a, Granted) for a in actions):
            assert self.lim.held <= self.lim.max_connections

    @rule(inbound=st.booleans(), wait=st.one_of(st.none(), st.floats(0.0, 5.0)))
    def request(self, inbound: bool, wait: float | None) -> None:
        rid = self.next_id
        self.next_id += 1
        self.pending.add(rid)
        deadline = None if wait is None else self.now + wait
        self.apply(self.lim.request(rid, f"peer{rid}", self.now, inbound=inbound, deadline=deadline))

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.open)))
        self.open.discard(rid)
        self.apply(self.lim.release(rid, self.now))

    @precondition(lambda self: bool(self.pending) or bool(self.open))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.pending | self.open)))
        if rid in self.pending:
            self.pending.discard(rid)
            self.outcome[rid] = "cancelled"
        self.open.discard(rid)  # cancelling a granted request gives its slot back
        self.apply(self.lim.cancel(rid, self.now))

    @rule(rid=st.integers(-3, 60))
    def stray_release(self, rid: int) -> None:
        # Releasing or cancelling something already finished must be harmless.
        if rid not in self.pending and rid not in self.open:
            self.apply(self.lim.release(rid, self.now))
            self.apply(self.lim.cancel(rid, self.now))

    @rule(dt=st.floats(0.0, 3.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        timer = self.lim.get_timer()
        if timer is not None and timer <= self.now:
            self.apply(self.lim.handle_timer(self.now))

    @rule(n=st.integers(0, 5))
    def reconfigure(self, n: int) -> None:
        self.apply(self.lim.reconfigure(self.now, max_connections=n))

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.lim.held == len(self.open)
        assert self.lim.queued == len(self.pending)
        assert self.lim.queued <= self.max_queue
        assert self.lim.stats.queued_inbound <= self.max_inbound
        if self.lim.queued:
            # No free slot while someone waits (FIFO hand-over is immediate).
            assert self.lim.held >= self.lim.max_connections

    @invariant()
    def every_request_is_in_exactly_one_state(self) -> None:
        assert not (self.pending & set(self.outcome))
        assert set(self.outcome) | self.pending == set(range(self.next_id))

    def teardown(self) -> None:
        # Restore some capacity and close every connection: the queue drains,
        # every request has its one outcome, and no slot is left held.
        self.apply(self.lim.reconfigure(self.now, max_connections=3))
        while self.open:
            rid = min(self.open)
            self.open.discard(rid)
            self.apply(self.lim.release(rid, self.now))
        assert not self.pending
        assert self.lim.held == 0 and self.lim.queued == 0
        assert set(self.outcome) == set(range(self.next_id))
        values = list(self.outcome.values())
        stats = self.lim.stats
        assert stats.granted == values.count("granted")
        assert stats.refused == values.count("refused")
        assert stats.timed_out == values.count("timed_out")
        # cancelled also counts cancels of already granted requests
        assert stats.cancelled >= values.count("cancelled")


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_held_never_exceeds_max_under_steady_config() -> None:
    # Deterministic companion of the property test for the headline invariant.
    lim = ConnectionLimiter(4, max_queue=30)
    granted: list[Hashable] = []
    for i in range(24):
        granted += [a.request_id for a in lim.request(i, i, 0.0) if isinstance(a, Granted)]
        assert lim.held <= 4
    assert granted == [0, 1, 2, 3]
    t = 1.0
    while granted:
        rid = granted.pop(0)
        granted += [a.request_id for a in lim.release(rid, t) if isinstance(a, Granted)]
        assert lim.held <= 4
        t += 1.0
    assert lim.stats.granted == 24 and lim.stats.peak_held == 4 and lim.held == 0
