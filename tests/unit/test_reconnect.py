"""ReconnectPolicy: grace period, ICE restart, jittered exponential redials, give-up, reset."""

from __future__ import annotations

import random
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyapp.core.reconnect as reconnect_module
from pyapp.core.reconnect import (
    BackoffStarted,
    Disconnected,
    GiveUp,
    ReconnectEvent,
    ReconnectState,
    Recovered,
    Redial,
    RestartIce,
)
from pyapp.core.reconnect import ReconnectPolicy as CorePolicy
from tests.unit.events import drain, returning_events

pytestmark = pytest.mark.unit

#: Inputs return the events they queued (pulled with next_event(), as the supervisor does).
ReconnectPolicy = returning_events(CorePolicy)


def test_reconnect_convention_inputs_queue_and_next_event_pulls() -> None:
    policy = CorePolicy(random.Random(3), grace=2.0)
    assert policy.state_changed("connected", 0.0) is None
    drain(policy)
    assert policy.state_changed("disconnected", 5.0) is None
    assert policy.get_timer() == 7.0
    assert any(isinstance(e, Disconnected) for e in drain(policy))
    assert policy.next_event() is None
    assert policy.handle_timer(7.0) is None
    assert policy.next_event() == RestartIce(deadline=7.0 + policy.restart_timeout)


class FixedRandom:
    """A RandomSource returning a fixed value, so delays are exact."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self.value


def up(policy: ReconnectPolicy, now: float = 0.0) -> ReconnectPolicy:
    assert policy.state_changed("connected", now) == []
    assert policy.state is ReconnectState.CONNECTED
    return policy


def test_docstring_example_runs() -> None:
    doc = reconnect_module.__doc__
    assert doc is not None
    code = doc.split("Example::")[1].split("Transitions")[0]
    exec(compile(textwrap.dedent(code), "reconnect-example", "exec"), {})


def test_disconnect_waits_grace_then_restarts_ice() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), grace=2.0, restart_timeout=8.0))
    assert p.state_changed("disconnected", 10.0) == [Disconnected(grace_until=12.0)]
    assert p.state is ReconnectState.GRACE and p.get_timer() == 12.0
    assert p.handle_timer(11.99) == []
    assert p.state_changed("disconnected", 11.0) == []  # repeated: no new grace
    assert p.handle_timer(12.0) == [RestartIce(deadline=20.0)]
    assert p.state is ReconnectState.RESTARTING and p.get_timer() == 20.0
    assert p.attempts == 0  # the restart is not a redial attempt


def test_recovering_within_grace_needs_no_restart() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), grace=2.0))
    p.state_changed("disconnected", 10.0)
    assert p.state_changed("connected", 11.5) == [Recovered(attempts=0, downtime=1.5)]
    assert p.get_timer() is None and p.state is ReconnectState.CONNECTED
    assert p.handle_timer(12.0) == []


def test_failed_restarts_ice_at_once() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), restart_timeout=5.0))
    assert p.state_changed("failed", 3.0) == [RestartIce(deadline=8.0)]
    p2 = up(ReconnectPolicy(FixedRandom(0.5), grace=2.0, restart_timeout=5.0))
    p2.state_changed("disconnected", 3.0)
    assert p2.state_changed("failed", 4.0) == [RestartIce(deadline=9.0)]
    assert p2.down_since == 3.0


def test_restart_reaching_connected_recovers() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5)))
    p.state_changed("failed", 1.0)
    assert p.state_changed("disconnected", 2.0) == []  # ignored mid-restart
    assert p.state_changed("checking", 2.5) == []
    assert p.state_changed("completed", 4.0) == [Recovered(attempts=0, downtime=3.0)]


def test_restart_timeout_schedules_redial_with_exact_backoff() -> None:
    rng = FixedRandom(0.5)
    p = up(ReconnectPolicy(rng, grace=1.0, restart_timeout=4.0, redial_timeout=6.0, base_delay=2.0))
    p.state_changed("failed", 0.0)
    assert p.handle_timer(4.0) == [BackoffStarted(1, 1.0, 5.0, "ice restart timed out")]
    assert p.state is ReconnectState.BACKOFF and p.attempts == 1
    assert p.handle_timer(5.0) == [Redial(1, deadline=11.0)]
    assert p.state is ReconnectState.REDIALING
    # Redial timed out: attempt 2, ceiling 4.0 -> delay 2.0.
    assert p.handle_timer(11.0) == [BackoffStarted(2, 2.0, 13.0, "redial timed out")]
    assert p.handle_timer(13.0) == [Redial(2, deadline=19.0)]
    # Redial failed outright: attempt 3 at once, ceiling 8.0 -> delay 4.0.
    assert p.state_changed("failed", 14.0) == [BackoffStarted(3, 4.0, 18.0, "redial failed")]
    assert rng.calls == 3


def test_failed_restart_goes_to_backoff_without_waiting() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.0), restart_timeout=100.0))
    p.state_changed("failed", 0.0)
    assert p.state_changed("failed", 1.0) == [BackoffStarted(1, 0.0, 1.0, "ice restart failed")]


def test_backoff_ceiling_doubles_and_is_capped() -> None:
    p = ReconnectPolicy(FixedRandom(0.0), base_delay=0.5, max_delay=10.0)
    assert [p.backoff_ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.backoff_ceiling(5000) == 10.0  # no overflow


def run_outage(p: ReconnectPolicy, start: float) -> list[ReconnectEvent]:
    """Drive one outage where nothing ever reconnects; return every event."""
    events = p.state_changed("failed", start)
    while (timer := p.get_timer()) is not None:
        events += p.handle_timer(timer)
    return events


@given(seed=st.integers(0, 2**32 - 1))
def test_jittered_delays_stay_within_bounds_and_are_deterministic(seed: int) -> None:
    def make() -> ReconnectPolicy:
        return up(ReconnectPolicy(random.Random(seed), base_delay=1.0, max_delay=8.0, max_attempts=6))

    events = run_outage(make(), 0.0)
    backoffs = [e for e in events if isinstance(e, BackoffStarted)]
    assert [b.attempt for b in backoffs] == [1, 2, 3, 4, 5, 6]
    for b in backoffs:
        assert 0.0 <= b.delay < min(8.0, 2.0 ** (b.attempt - 1))
    assert events == run_outage(make(), 0.0)  # same seed, same schedule


def test_jitter_is_actually_random() -> None:
    delays = set()
    for seed in range(20):
        events = run_outage(up(ReconnectPolicy(random.Random(seed), max_attempts=1)), 0.0)
        delays.update(e.delay for e in events if isinstance(e, BackoffStarted))
    assert len(delays) == 20


def test_gives_up_after_max_attempts() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), max_attempts=3))
    events = run_outage(p, 0.0)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RestartIce"] + ["BackoffStarted", "Redial"] * 3 + ["GiveUp"]
    give_up = events[-1]
    assert isinstance(give_up, GiveUp) and give_up.attempts == 3
    assert "redial timed out" in give_up.reason
    assert p.state is ReconnectState.GAVE_UP and p.get_timer() is None
    assert p.state_changed("failed", 500.0) == []


def test_zero_attempts_gives_up_after_the_restart() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), max_attempts=0, restart_timeout=3.0))
    p.state_changed("failed", 0.0)
    assert p.handle_timer(3.0) == [GiveUp("ice restart timed out; gave up after 0 redial(s)", 0)]


def test_connected_resets_attempts_for_the_next_outage() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), restart_timeout=1.0, redial_timeout=1.0))
    p.state_changed("failed", 0.0)
    p.handle_timer(1.0)  # backoff 1
    p.handle_timer(p.get_timer() or 0.0)  # redial 1
    p.handle_timer(p.get_timer() or 0.0)  # backoff 2
    assert p.attempts == 2
    p.handle_timer(p.get_timer() or 0.0)  # redial 2
    [recovered] = p.state_changed("connected", 10.0)
    assert recovered == Recovered(attempts=2, downtime=10.0)
    assert p.attempts == 0 and p.down_since is None
    p.state_changed("failed", 20.0)
    [backoff] = p.handle_timer(21.0)
    assert isinstance(backoff, BackoffStarted) and backoff.attempt == 1


def test_gave_up_policy_revives_on_connected() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), max_attempts=0))
    run_outage(p, 0.0)
    assert p.state is ReconnectState.GAVE_UP
    [recovered] = p.state_changed("connected", 100.0)
    assert isinstance(recovered, Recovered) and recovered.downtime == 100.0


def test_before_first_connect_and_after_close_nothing_happens() -> None:
    p = ReconnectPolicy(FixedRandom(0.5))
    assert p.state_changed("failed", 0.0) == []  # the first dial is the dialer's business
    assert p.state_changed("disconnected", 0.0) == []
    assert p.state is ReconnectState.IDLE and p.get_timer() is None
    up(p, 1.0)
    p.state_changed("disconnected", 2.0)
    assert p.close(3.0) == []
    assert p.get_timer() is None
    assert p.state_changed("connected", 4.0) == []
    assert p.handle_timer(100.0) == []
    assert p.state is ReconnectState.CLOSED


def test_closed_rtc_state_and_unknown_states_are_ignored() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5)))
    p.state_changed("failed", 0.0)
    p.handle_timer(p.get_timer() or 0.0)
    p.handle_timer(p.get_timer() or 0.0)  # Redial: the wrapper closes the old pc
    assert p.state is ReconnectState.REDIALING
    assert p.state_changed("closed", 20.0) == []
    assert p.state_changed("bogus", 20.0) == []
    assert p.state is ReconnectState.REDIALING


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(FixedRandom(0.5), grace=-1.0)
    with pytest.raises(ValueError):
        ReconnectPolicy(FixedRandom(0.5), max_attempts=-1)


def test_transport_lost_redials_at_once_from_every_down_or_up_state() -> None:
    # CONNECTED (the association died before ICE noticed), GRACE, RESTARTING, BACKOFF.
    setups = {
        "connected": lambda p: None,
        "grace": lambda p: p.state_changed("disconnected", 1.0),
        "restarting": lambda p: p.state_changed("failed", 1.0),
        "backoff": lambda p: (p.state_changed("failed", 1.0), p.handle_timer(1.0 + p.restart_timeout)),
    }
    for name, setup in setups.items():
        p = up(ReconnectPolicy(FixedRandom(0.5), grace=2.0, restart_timeout=3.0, redial_timeout=20.0))
        setup(p)
        assert p.state is ReconnectState(name), name
        assert p.transport_lost(5.0) == [Redial(1, deadline=25.0)], name
        assert p.state is ReconnectState.REDIALING and p.get_timer() == 25.0, name
        # (in BACKOFF the attempt already scheduled is the one made now, not one more)
        assert p.attempts == 1 and p.down_since is not None, name


def test_transport_lost_while_redialing_changes_nothing() -> None:
    # The old connection's association dying during a redial is expected: the
    # redial under way must not be replaced (a second dial would hang it up).
    p = up(ReconnectPolicy(FixedRandom(0.5), restart_timeout=3.0, redial_timeout=20.0))
    assert p.transport_lost(1.0) == [Redial(1, deadline=21.0)]
    assert p.transport_lost(2.0) == []
    assert p.state is ReconnectState.REDIALING and p.get_timer() == 21.0 and p.attempts == 1
    [recovered] = p.state_changed("connected", 4.0)
    assert recovered == Recovered(attempts=1, downtime=3.0)


def test_transport_lost_counts_against_max_attempts_and_is_ignored_when_over() -> None:
    p = up(ReconnectPolicy(FixedRandom(0.5), max_attempts=0))
    assert p.transport_lost(1.0) == [GiveUp("transport lost; gave up after 0 redial(s)", 0)]
    assert p.state is ReconnectState.GAVE_UP
    assert p.transport_lost(2.0) == []
    closed = ReconnectPolicy(FixedRandom(0.5))
    assert closed.transport_lost(0.0) == []          # IDLE: the first dial is the dialer's
    closed.close(0.0)
    assert closed.transport_lost(1.0) == []


@given(steps=st.lists(st.sampled_from(["connected", "disconnected", "failed", "timer", "lost"]),
                      max_size=40))
def test_at_most_one_redial_is_outstanding(steps: list[str]) -> None:
    # Whatever the order of inputs, a Redial is never issued while the previous
    # one is still the policy's current attempt (REDIALING): a new Redial only
    # follows a backoff (the old attempt failed or timed out) or a recovery.
    p = ReconnectPolicy(FixedRandom(0.5), grace=1.0, restart_timeout=1.0, redial_timeout=1.0,
                        base_delay=0.5, max_delay=1.0, max_attempts=50)
    now = 0.0
    for step in steps:
        now += 0.25
        was_redialing = p.state is ReconnectState.REDIALING
        if step == "timer":
            now = max(now, p.get_timer() or now)
            events = p.handle_timer(now)
        elif step == "lost":
            events = p.transport_lost(now)
        else:
            events = p.state_changed(step, now)
        if was_redialing and step in ("lost", "disconnected", "connected"):
            assert not any(isinstance(e, Redial) for e in events), (step, events)
        assert sum(isinstance(e, Redial) for e in events) <= 1
