"""ConnectionPool: shared dials, leases, LRU eviction, idle close, deadlines, health, reconfigure."""

from __future__ import annotations

import textwrap
from collections.abc import Hashable

import pytest

import pyapp.core.pool as pool_module
from pyapp.core.limiter import ConnectionLimiter as CoreLimiter
from pyapp.core.limiter import Granted, LimiterAction
from pyapp.core.pool import Close, Dial, Fail, Grant, PoolAction
from pyapp.core.pool import ConnectionPool as CorePool
from pyapp.exceptions import ConnectionClosedError, LocalProtocolError, PoolExhausted
from tests.unit.events import drain, returning_events

pytestmark = pytest.mark.unit

#: Inputs return the events they queued (pulled with next_event(), as the wrappers do).
ConnectionPool = returning_events(CorePool)
ConnectionLimiter = returning_events(CoreLimiter)


def test_pool_convention_inputs_queue_and_next_event_pulls() -> None:
    pool: CorePool[str] = CorePool(1, timeout=10.0)
    assert pool.get_connection("w1", "alice", 0.0) is None
    assert pool.next_event() == Dial("alice")
    assert pool.next_event() is None
    assert pool.dial_succeeded("alice", "conn", 1.0) is None
    assert drain(pool) == [Grant("w1", "alice", "conn")]
    assert pool.release("w1", 2.0) is None and pool.next_event() is None
    assert pool.get_timer() == 12.0
    assert pool.handle_timer(12.0) is None
    assert drain(pool) == [Close("alice", "conn", "idle")]


def connected(pool: ConnectionPool[str], waiter: str, peer: str, now: float) -> str:
    """Get a lease on a fresh connection ``conn-<peer>``; return the connection."""
    assert pool.get_connection(waiter, peer, now) == [Dial(peer)]
    conn = f"conn-{peer}"
    assert pool.dial_succeeded(peer, conn, now) == [Grant(waiter, peer, conn)]
    return conn


def test_docstring_example_runs() -> None:
    doc = pool_module.__doc__
    assert doc is not None
    code = doc.split("Example::")[1].split("Policies")[0]
    exec(compile(textwrap.dedent(code), "pool-example", "exec"), {})


def test_concurrent_gets_share_one_dial() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 30.0)
    assert pool.get_connection(1, "bob", 0.0) == [Dial("bob")]
    assert pool.get_connection(2, "bob", 0.1) == []
    assert pool.get_connection(3, "bob", 0.2) == []
    assert pool.is_dialing("bob")
    s = pool.stats
    assert (s.size, s.dialing, s.waiting, s.dials) == (1, 1, 3, 1)
    out = pool.dial_succeeded("bob", "B", 1.0)
    assert out == [Grant(1, "bob", "B"), Grant(2, "bob", "B"), Grant(3, "bob", "B")]
    s = pool.stats
    assert (s.size, s.leased, s.idle, s.dialing, s.waiting, s.dials) == (1, 1, 0, 0, 0, 1)
    assert pool.lease_count("bob") == 3


def test_live_connection_is_reused() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 30.0)
    conn = connected(pool, "w1", "bob", 0.0)
    assert pool.get_connection("w2", "bob", 1.0) == [Grant("w2", "bob", conn)]
    pool.release("w1", 2.0)
    pool.release("w2", 2.0)
    assert pool.get_connection("w3", "bob", 3.0) == [Grant("w3", "bob", conn)]
    assert pool.stats.reuses == 2 and pool.stats.dials == 1
    assert pool.peek("bob") == conn


def test_idle_connection_closes_after_timeout() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 30.0)
    conn = connected(pool, "w1", "bob", 0.0)
    assert pool.get_timer() is None  # leased: no idle clock
    pool.release("w1", 5.0)
    assert pool.get_timer() == 35.0
    assert pool.handle_timer(34.9) == []
    assert pool.handle_timer(35.0) == [Close("bob", conn, "idle")]
    assert pool.stats.size == 0 and pool.stats.idle_closes == 1
    assert pool.get_timer() is None
    # The next get redials.
    assert pool.get_connection("w2", "bob", 36.0) == [Dial("bob")]


def test_reuse_restarts_the_idle_clock() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 10.0)
    connected(pool, "w1", "bob", 0.0)
    pool.release("w1", 1.0)
    pool.get_connection("w2", "bob", 9.0)
    pool.release("w2", 9.5)
    assert pool.get_timer() == 19.5
    assert pool.handle_timer(11.0) == []


def test_full_pool_evicts_least_recently_used_idle() -> None:
    pool: ConnectionPool[str] = ConnectionPool(3, 100.0)
    a = connected(pool, "wa", "a", 0.0)
    connected(pool, "wb", "b", 0.0)
    connected(pool, "wc", "c", 0.0)
    pool.release("wb", 1.0)
    pool.release("wa", 2.0)  # a used more recently than b
    # c is leased; b is the LRU idle one.
    assert pool.get_connection("wd", "d", 3.0) == [Close("b", "conn-b", "evicted"), Dial("d")]
    pool.dial_succeeded("d", "conn-d", 3.5)
    assert pool.get_connection("we", "e", 4.0) == [Close("a", a, "evicted"), Dial("e")]
    assert pool.stats.evictions == 2 and pool.stats.size == 3


def test_full_pool_of_leased_connections_queues_fifo_until_one_frees() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 100.0, wait_timeout=10.0)
    connected(pool, "wa", "a", 0.0)
    connected(pool, "wb", "b", 0.0)
    assert pool.get_connection("w1", "x", 1.0) == []
    assert pool.get_connection("w2", "y", 1.5) == []
    assert pool.get_connection("w3", "x", 2.0) == []  # same peer as w1: joins w1's dial later
    assert pool.stats.waiting == 3
    assert pool.get_timer() == 11.0
    # b frees: it is evicted for the oldest waiter, whose peer-mates share the dial.
    assert pool.release("wb", 3.0) == [Close("b", "conn-b", "evicted"), Dial("x")]
    assert pool.dial_succeeded("x", "conn-x", 3.5) == [
        Grant("w1", "x", "conn-x"),
        Grant("w3", "x", "conn-x"),
    ]
    assert pool.release("wa", 4.0) == [Close("a", "conn-a", "evicted"), Dial("y")]


def test_waiting_past_deadline_fails_with_pool_exhausted() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 100.0, wait_timeout=5.0)
    connected(pool, "wa", "a", 0.0)
    assert pool.get_connection("w1", "x", 1.0) == []
    assert pool.get_connection("w2", "y", 2.0, deadline=3.0) == []
    assert pool.get_timer() == 3.0
    [fail] = pool.handle_timer(3.0)
    assert fail == Fail("w2", "y", PoolExhausted())
    assert isinstance(fail.error, PoolExhausted)
    assert pool.handle_timer(5.9) == []
    [fail] = pool.handle_timer(6.0)
    assert isinstance(fail, Fail) and fail.waiter_id == "w1"
    s = pool.stats
    assert (s.waiting, s.exhausted, s.size) == (0, 2, 1)
    # A release after the deadline dials for nobody.
    assert pool.release("wa", 7.0) == []


def test_zero_wait_timeout_fails_at_once() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 100.0, wait_timeout=0.0)
    connected(pool, "wa", "a", 0.0)
    [fail] = pool.get_connection("w1", "x", 1.0)
    assert isinstance(fail, Fail) and isinstance(fail.error, PoolExhausted)
    assert pool.stats.waiting == 0


def test_waiting_queue_is_bounded() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 100.0, max_waiting=2)
    connected(pool, "wa", "a", 0.0)
    assert pool.get_connection("w1", "x", 1.0) == []
    assert pool.get_connection("w2", "y", 1.0) == []
    [fail] = pool.get_connection("w3", "z", 1.0)
    assert isinstance(fail, Fail) and fail.waiter_id == "w3"
    assert isinstance(fail.error, PoolExhausted)
    assert pool.stats.waiting == 2


def test_cancel_leaves_no_trace_in_any_state() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 100.0, wait_timeout=5.0)
    conn = connected(pool, "leased", "a", 0.0)
    pool.get_connection("queued", "x", 1.0)
    pool.get_connection("sharing", "a", 1.0)  # granted at once: a is live
    assert pool.cancel("queued", 2.0) == []
    assert pool.get_timer() is None  # its deadline is gone too
    assert pool.cancel("sharing", 2.0) == []  # granted: cancel releases the lease
    assert pool.lease_count("a") == 1
    assert pool.cancel("leased", 2.0) == []
    assert pool.stats.idle == 1 and pool.stats.waiting == 0
    assert pool.cancel("never-seen", 2.0) == []
    # Ids are free for reuse.
    assert pool.get_connection("queued", "a", 3.0) == [Grant("queued", "a", conn)]


def test_cancelling_a_dial_waiter_keeps_the_dial_for_reuse() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 30.0)
    pool.get_connection("w1", "bob", 0.0)
    assert pool.cancel("w1", 0.5) == []
    assert pool.stats.waiting == 0 and pool.is_dialing("bob")
    assert pool.dial_succeeded("bob", "B", 1.0) == []
    assert pool.stats.idle == 1
    assert pool.get_timer() == 31.0


def test_release_is_idempotent_and_duplicate_waiter_is_an_error() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 30.0)
    connected(pool, "w1", "bob", 0.0)
    pool.get_connection("w2", "bob", 0.0)
    with pytest.raises(LocalProtocolError):
        pool.get_connection("w1", "carol", 0.0)
    pool.release("w1", 1.0)
    pool.release("w1", 1.0)
    assert pool.lease_count("bob") == 1  # w2's lease survived the double release


def test_dial_failure_fails_every_sharing_waiter_and_next_get_redials() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 30.0)
    pool.get_connection("w1", "bob", 0.0)
    pool.get_connection("w2", "bob", 0.0)
    err = ConnectionError("ice failed")
    out = pool.dial_failed("bob", err, 1.0)
    assert [(a.waiter_id, a.error) for a in out if isinstance(a, Fail)] == [("w1", err), ("w2", err)]
    assert len(out) == 2
    s = pool.stats
    assert (s.size, s.waiting, s.failures) == (0, 0, 1)
    assert pool.get_connection("w3", "bob", 2.0) == [Dial("bob")]
    with pytest.raises(LocalProtocolError):
        pool.dial_failed("nobody", err, 2.0)
    with pytest.raises(LocalProtocolError):
        pool.dial_succeeded("nobody", "N", 2.0)


def test_dial_failure_frees_room_for_the_queue() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 30.0)
    pool.get_connection("w1", "a", 0.0)
    pool.get_connection("w2", "b", 0.0)
    out = pool.dial_failed("a", ConnectionError("x"), 1.0)
    assert out[-1] == Dial("b") and isinstance(out[0], Fail)


def test_connection_closed_drops_it_and_next_get_redials() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 30.0)
    conn = connected(pool, "w1", "bob", 0.0)
    assert pool.connection_closed("bob", 1.0, connection="some-older-conn") == []
    assert pool.peek("bob") == conn  # stale event ignored
    assert pool.connection_closed("bob", 1.0, connection=conn) == []
    assert pool.peek("bob") is None and pool.stats.size == 0 and pool.stats.failures == 0
    assert pool.release("w1", 2.0) == []  # its lease vanished with it
    assert pool.get_connection("w1", "bob", 3.0) == [Dial("bob")]
    assert pool.connection_closed("nobody", 3.0) == []


def test_connection_failed_counts_and_fails_dial_waiters() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 30.0)
    connected(pool, "w1", "bob", 0.0)
    pool.connection_failed("bob", ConnectionError("gone"), 1.0)
    assert pool.stats.failures == 1 and pool.stats.size == 0
    pool.get_connection("w2", "carol", 2.0)
    [fail] = pool.connection_closed("carol", 3.0)  # closed while still dialling
    assert isinstance(fail, Fail) and isinstance(fail.error, ConnectionClosedError)
    assert not pool.is_dialing("carol")


def test_idle_poor_connection_is_recycled() -> None:
    pool: ConnectionPool[str] = ConnectionPool(
        4, 1000.0, poor_quality_threshold=0.5, poor_quality_period=10.0
    )
    conn = connected(pool, "w1", "bob", 0.0)
    assert pool.report_quality("bob", 0.2, 1.0) == []
    # Leased: poor for far longer than the period, yet left alone.
    assert pool.report_quality("bob", 0.1, 50.0) == []
    assert pool.get_timer() is None
    # Idle now, and it has been poor since t=1: recycled at once.
    assert pool.release("w1", 60.0) == [Close("bob", conn, "poor quality")]
    assert pool.stats.recycled == 1
    assert pool.get_connection("w2", "bob", 61.0) == [Dial("bob")]


def test_poor_period_is_timed_and_reset_by_a_good_score() -> None:
    pool: ConnectionPool[str] = ConnectionPool(
        4, 1000.0, poor_quality_threshold=0.5, poor_quality_period=10.0
    )
    conn = connected(pool, "w1", "bob", 0.0)
    pool.release("w1", 0.0)
    pool.report_quality("bob", 0.3, 1.0)
    assert pool.get_timer() == 11.0
    pool.report_quality("bob", 0.9, 5.0)  # recovered: clock reset
    assert pool.get_timer() == 1000.0
    pool.report_quality("bob", 0.3, 6.0)
    pool.report_quality("bob", 0.2, 8.0)  # still poor: clock keeps t=6
    assert pool.handle_timer(15.9) == []
    assert pool.handle_timer(16.0) == [Close("bob", conn, "poor quality")]
    assert pool.report_quality("nobody", 0.0, 17.0) == []


def test_reconfigure_shrink_closes_idle_lru_and_never_leased() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 300.0)
    for peer in "abcd":
        connected(pool, "w" + peer, peer, 0.0)
    pool.release("wb", 1.0)
    pool.release("wa", 2.0)
    out = pool.reconfigure(max_size=1, idle_timeout=60.0, now=3.0)
    # Over by 3; only a and b are idle (b older). c, d stay leased.
    assert out == [Close("b", "conn-b", "shrink"), Close("a", "conn-a", "shrink")]
    assert pool.max_size == 1 and pool.idle_timeout == 60.0
    assert pool.stats.size == 2 and pool.stats.leased == 2
    # Still over: a connection turning idle is closed at once rather than kept.
    assert pool.release("wc", 4.0) == [Close("c", "conn-c", "shrink")]
    assert pool.stats.size == 1 and pool.stats.evictions == 3
    # At the limit now: the last one is kept idle, and a new peer must wait for it.
    assert pool.get_connection("we", "e", 5.0) == []
    assert pool.release("wd", 6.0) == [Close("d", "conn-d", "evicted"), Dial("e")]


def test_reconfigure_shorter_idle_timeout_closes_expired_at_once() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 300.0)
    conn = connected(pool, "w", "a", 0.0)
    pool.release("w", 0.0)
    assert pool.reconfigure(idle_timeout=10.0, now=20.0) == [Close("a", conn, "idle")]


def test_reconfigure_grow_serves_the_queue() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 300.0)
    connected(pool, "w", "a", 0.0)
    pool.get_connection("w1", "x", 1.0)
    pool.get_connection("w2", "y", 1.0)
    assert pool.reconfigure(max_size=3, now=2.0) == [Dial("x"), Dial("y")]


def test_close_shuts_everything() -> None:
    pool: ConnectionPool[str] = ConnectionPool(1, 300.0)
    conn = connected(pool, "w", "a", 0.0)
    pool.get_connection("w1", "x", 1.0)
    out = pool.close(2.0)
    assert out == [Fail("w1", "x", ConnectionClosedError()), Close("a", conn, "pool closed")]
    [fail] = pool.get_connection("w2", "a", 3.0)
    assert isinstance(fail, Fail) and isinstance(fail.error, ConnectionClosedError)
    assert pool.stats.size == 0 and pool.get_timer() is None


def test_dial_that_finishes_after_close_is_closed() -> None:
    pool: ConnectionPool[str] = ConnectionPool(2, 300.0)
    pool.get_connection("w1", "a", 0.0)
    [fail] = pool.close(1.0)
    assert isinstance(fail, Fail)
    assert pool.dial_succeeded("a", "A", 2.0) == [Close("a", "A", "pool closed")]


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        ConnectionPool(0, 1.0)
    with pytest.raises(ValueError):
        ConnectionPool(1, -1.0)
    pool: ConnectionPool[str] = ConnectionPool(1, 1.0)
    with pytest.raises(ValueError):
        pool.reconfigure(max_size=0, now=0.0)


# -- composition with the limiter, as the async wrapper does it ---------------------


class Driver:
    """What the async wrapper does, minus asyncio: route actions between the two cores.

    * pool ``Dial(peer)``     -> limiter.request(("dial", peer)); dial only once ``Granted``
    * limiter refusal/timeout -> pool.dial_failed(peer, error)
    * pool ``Close``          -> close the connection, limiter.release(("dial", peer))
    * a dial completes        -> pool.dial_succeeded(peer, conn)
    """

    def __init__(self, pool: ConnectionPool[str], limiter: ConnectionLimiter) -> None:
        self.pool = pool
        self.limiter = limiter
        self.active: set[Hashable] = set()  # connections open or being dialled for real
        self.dialing: dict[Hashable, float] = {}  # peer -> when its dial completes
        self.results: dict[Hashable, object] = {}
        self.peak = 0

    def on_pool(self, actions: list[PoolAction], now: float) -> None:
        for action in actions:
            if isinstance(action, Dial):
                self.on_limiter(self.limiter.request(("dial", action.peer_id), action.peer_id, now), now)
            elif isinstance(action, Close):
                self.active.remove(action.peer_id)
                self.on_limiter(self.limiter.release(("dial", action.peer_id), now), now)
            elif isinstance(action, Grant):
                assert action.waiter_id not in self.results
                self.results[action.waiter_id] = action.connection
            elif isinstance(action, Fail):
                assert action.waiter_id not in self.results
                self.results[action.waiter_id] = action.error

    def on_limiter(self, actions: list[LimiterAction], now: float) -> None:
        for action in actions:
            if isinstance(action, Granted):
                self.active.add(action.peer_id)
                self.peak = max(self.peak, len(self.active))
                self.dialing[action.peer_id] = now + 0.5  # the fake network's dial time
            else:
                error = getattr(action, "error")  # noqa: B009
                self.on_pool(self.pool.dial_failed(action.peer_id, error, now), now)
        assert len(self.active) <= self.limiter.max_connections

    def advance(self, now: float) -> None:
        for peer, done in sorted(self.dialing.items(), key=lambda kv: kv[1]):
            if done <= now:
                del self.dialing[peer]
                self.on_pool(self.pool.dial_succeeded(peer, f"conn-{peer}", now), now)
        for core in (self.pool, self.limiter):
            timer = core.get_timer()
            if timer is not None and timer <= now:
                if core is self.pool:
                    self.on_pool(self.pool.handle_timer(now), now)
                else:
                    self.on_limiter(self.limiter.handle_timer(now), now)


def test_pool_and_limiter_never_exceed_n_active_with_24_requested() -> None:
    n = 4
    pool: ConnectionPool[str] = ConnectionPool(8, 5.0, wait_timeout=None)
    limiter = ConnectionLimiter(n, max_queue=32)
    drv = Driver(pool, limiter)
    now = 0.0
    for i in range(24):  # 24 users, 12 peers: each peer asked for twice
        drv.on_pool(pool.get_connection(i, f"peer{i % 12}", now), now)
        assert len(drv.active) <= n
    in_use: dict[Hashable, float] = {}  # lease -> when the user is done with it
    while now < 200.0 and (len(drv.results) < 24 or in_use):
        now += 0.25
        drv.advance(now)
        for wid, result in drv.results.items():
            if isinstance(result, str) and wid not in in_use:
                in_use[wid] = now + 1.0
        for wid, done in sorted(in_use.items(), key=lambda kv: kv[1]):
            if done <= now and done >= 0:
                in_use[wid] = -1.0  # released
                drv.on_pool(pool.release(wid, now), now)
        in_use = {w: t for w, t in in_use.items() if t >= 0}
        assert len(drv.active) <= n
        assert limiter.held <= n
    assert sorted(drv.results) == list(range(24))
    assert all(r == f"conn-peer{w % 12}" for w, r in drv.results.items())  # type: ignore[operator]
    assert drv.peak == n  # the limit was reached, never passed
    # Everything idles out; then every slot is free.
    drv.advance(now + 10.0)
    assert pool.stats.size == 0 and limiter.held == 0 and not drv.active
    assert pool.stats.dials == 12  # shared dials: one per peer


def test_limiter_refusal_fails_the_pool_dial() -> None:
    pool: ConnectionPool[str] = ConnectionPool(4, 5.0)
    limiter = ConnectionLimiter(1, max_queue=0)
    drv = Driver(pool, limiter)
    drv.on_pool(pool.get_connection("w1", "a", 0.0), 0.0)
    drv.on_pool(pool.get_connection("w2", "b", 0.0), 0.0)
    assert "w2" in drv.results and not isinstance(drv.results["w2"], str)
    assert not pool.is_dialing("b") and pool.is_dialing("a")
