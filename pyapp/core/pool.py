"""Sans-I/O connection pool: one connection per peer, shared, bounded, recycled.

The pool decides; the async wrapper acts. Every input method queues
:class:`PoolAction` objects -- :class:`Dial`, :class:`Close`, :class:`Grant`,
:class:`Fail` -- that the wrapper pulls with ``next_event()`` until None; it
never blocks, reads a clock or touches the browser. Time
comes in as ``now`` (seconds); :meth:`ConnectionPool.get_timer` says when the
wrapper must call :meth:`ConnectionPool.handle_timer` next.

A *waiter* is one call of the wrapper's ``get_connection``; the wrapper picks an
opaque, unique ``waiter_id`` for it (to find its future again). Once granted,
the same id names the *lease*: release it with ``release(waiter_id, now)``.

Example::

    from pyapp.core.pool import Close, ConnectionPool, Dial, Grant

    pool = ConnectionPool(max_size=2, timeout=30.0)
    events = lambda: list(iter(pool.next_event, None))            # pull until None
    pool.get_connection("w1", "alice", now=0.0)
    assert events() == [Dial("alice")]
    pool.get_connection("w2", "alice", now=0.1)
    assert events() == []                                         # shares the dial
    pool.dial_succeeded("alice", "conn-A", now=1.0)
    assert events() == [Grant("w1", "alice", "conn-A"), Grant("w2", "alice", "conn-A")]
    pool.release("w1", now=2.0)
    pool.release("w2", now=3.0)                                   # now idle
    assert pool.get_timer() == 33.0
    pool.handle_timer(33.0)
    assert events() == [Close("alice", "conn-A", "idle")]
    assert pool.stats.size == 0

Policies (details and rationale in ``docs/pooling.md``):

* **Sharing.** A WebRTC connection is multiplexed, so one connection per peer
  is leased to any number of waiters at once; it is *idle* when no lease is
  outstanding. Concurrent gets for a peer with no connection share one dial.
* **Capacity.** ``size`` = open connections + dials in progress, at most
  ``max_size``. A get that needs a new dial when the pool is full first closes
  the least-recently-used *idle* connection (``Close(..., "evicted")``); if
  every connection is leased or dialling, the waiter queues FIFO until room
  appears or its deadline (``now + wait_timeout`` unless given) passes, then
  gets ``Fail(..., PoolExhausted)``. At most ``max_waiting`` waiters queue;
  beyond that a get fails at once. Leased connections are never closed.
* **Idle timeout.** A connection idle for ``idle_timeout`` seconds is closed
  (``Close(..., "idle")``).
* **Health.** ``connection_closed``/``connection_failed`` forget the connection
  (its leases vanish, the next get redials); if it was still dialling, its
  waiters get ``Fail``. A connection whose reported quality score stayed below
  ``poor_quality_threshold`` for ``poor_quality_period`` seconds is closed as
  soon as it is idle (``Close(..., "poor quality")``) so the next get redials.
* **Reconfigure.** ``reconfigure`` may change every limit at runtime. Shrinking
  ``max_size`` closes idle connections (LRU first, ``"shrink"``) until the
  pool fits; leased connections and dials in progress are left alone, so
  ``size`` may stay above ``max_size`` until they are released -- and each
  one is closed (``"shrink"``) the moment it turns idle while the pool is over.
* **Limiter.** The pool does not own a :class:`~pyapp.core.limiter.ConnectionLimiter`.
  The wrapper composes them: on ``Dial`` it requests a limiter slot and only
  dials once ``Granted``; ``Refused``/``TimedOut`` become ``dial_failed``; on
  ``Close`` or a closed connection it releases the slot.
* **Idempotent cleanup.** ``release`` and ``cancel`` ignore unknown ids, and
  ``connection_closed`` ignores unknown peers and stale connection objects.
  ``cancel`` works in every state (queued, waiting on a dial, already granted)
  and leaves no trace of the waiter.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pyapp.core._queue import EventQueue, emits
from pyapp.core.pool_actions import (
    EVICTED,
    IDLE,
    POOL_CLOSED,
    POOR_QUALITY,
    SHRINK,
    Close,
    Dial,
    Fail,
    Grant,
    PoolAction,
    PoolStats,
)
from pyapp.exceptions import (
    ConnectionClosedError,
    InvalidArgumentError,
    LocalProtocolError,
    PoolExhausted,
)

__all__ = [
    "Close",
    "ConnectionPool",
    "Dial",
    "Fail",
    "Grant",
    "PoolAction",
    "PoolStats",
]

C = TypeVar("C")


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


@dataclass
class _Entry(Generic[C]):
    connection: C
    leases: set[Hashable]
    # Time of the last grant or release: the LRU key, and when idleness began.
    last_used: float
    # Tie-breaker for equal ``last_used``: bigger is more recent.
    seq: int
    poor_since: float | None = None


@dataclass
class _Queued:
    peer_id: Hashable
    deadline: float | None


def _check_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"max_size must be an int >= 1, got {value!r}")
    return value


def _check_seconds(name: str, value: float | None) -> float | None:
    if value is not None and not value >= 0:
        raise InvalidArgumentError(f"{name} must be >= 0 or None, got {value!r}")
    return value


class ConnectionPool(Generic[C]):
    """A bounded pool of connections, one per peer, leased to any number of users.

    ``timeout`` is the idle timeout in seconds (``None``: never close idle
    connections). ``wait_timeout`` is how long a get may queue when the pool is
    full (``None``: no limit; ``0``: fail at once). Quality scores are "higher
    is better"; below ``poor_quality_threshold`` counts as poor, and
    ``poor_quality_period=None`` disables recycling.
    """

    def __init__(
        self,
        max_size: int,
        timeout: float | None,
        *,
        wait_timeout: float | None = 10.0,
        max_waiting: int = 64,
        poor_quality_threshold: float = 0.5,
        poor_quality_period: float | None = 30.0,
    ) -> None:
        self._events: EventQueue[PoolAction] = EventQueue()
        self._max_size = _check_size(max_size)
        self._idle_timeout = _check_seconds("timeout", timeout)
        self._wait_timeout = _check_seconds("wait_timeout", wait_timeout)
        if max_waiting < 0:
            raise InvalidArgumentError(f"max_waiting must be >= 0, got {max_waiting!r}")
        self._max_waiting = max_waiting
        self._poor_threshold = poor_quality_threshold
        self._poor_period = _check_seconds("poor_quality_period", poor_quality_period)

        self._conns: dict[Hashable, _Entry[C]] = {}
        # peer -> waiter ids sharing the dial, in arrival order (dict as ordered set).
        self._dials: dict[Hashable, dict[Hashable, None]] = {}
        self._attached: dict[Hashable, Hashable] = {}  # waiter -> peer it waits to dial
        self._queue: dict[Hashable, _Queued] = {}  # FIFO: dicts keep insertion order
        self._leases: dict[Hashable, Hashable] = {}  # lease (= waiter) id -> peer
        self._seq = 0
        self._closed = False
        self._n_dials = self._reuses = self._evictions = self._idle_closes = 0
        self._recycled = self._failures = self._exhausted = 0

    # -- introspection -------------------------------------------------------

    @property
    def max_size(self) -> int:
        """The most connections (open or dialling) the pool aims to hold."""
        return self._max_size

    @property
    def idle_timeout(self) -> float | None:
        """Seconds an idle connection stays open; ``None`` for ever."""
        return self._idle_timeout

    @property
    def wait_timeout(self) -> float | None:
        """Default seconds a get may wait for room when the pool is full."""
        return self._wait_timeout

    @property
    def stats(self) -> PoolStats:
        """A snapshot of sizes and counters."""
        idle = sum(1 for e in self._conns.values() if not e.leases)
        return PoolStats(
            size=self._size(),
            idle=idle,
            leased=len(self._conns) - idle,
            dialing=len(self._dials),
            waiting=len(self._queue) + len(self._attached),
            dials=self._n_dials,
            reuses=self._reuses,
            evictions=self._evictions,
            idle_closes=self._idle_closes,
            recycled=self._recycled,
            failures=self._failures,
            exhausted=self._exhausted,
        )

    def peek(self, peer_id: Hashable) -> C | None:
        """The open connection to ``peer_id``, without leasing it; ``None`` if none."""
        entry = self._conns.get(peer_id)
        return None if entry is None else entry.connection

    def is_dialing(self, peer_id: Hashable) -> bool:
        """Whether a dial to ``peer_id`` is in progress."""
        return peer_id in self._dials

    def lease_count(self, peer_id: Hashable) -> int:
        """Outstanding leases on the connection to ``peer_id`` (0 if none)."""
        entry = self._conns.get(peer_id)
        return 0 if entry is None else len(entry.leases)

    # -- inputs from the user ------------------------------------------------

    @emits
    def get_connection(
        self, waiter_id: Hashable, peer_id: Hashable, now: float, *, deadline: float | None = None
    ) -> list[PoolAction]:
        """Ask for a lease on a connection to ``peer_id``.

        The outcome is a ``Grant`` or ``Fail`` for ``waiter_id``, queued now or
        after a later input (pull them with :meth:`next_event`). ``deadline`` (absolute)
        bounds the wait for room in a full pool; it defaults to
        ``now + wait_timeout``. It does not bound a dial: the wrapper times its
        dials and reports ``dial_failed``.
        """
        if waiter_id in self._queue or waiter_id in self._attached or waiter_id in self._leases:
            raise LocalProtocolError(f"waiter id {waiter_id!r} is already in use")
        if self._closed:
            return [Fail(waiter_id, peer_id, ConnectionClosedError("the pool is closed"))]
        actions = self._sweep(now)
        entry = self._conns.get(peer_id)
        if entry is not None:
            self._reuses += 1
            actions.append(self._lease(waiter_id, peer_id, entry, now))
            return actions
        if peer_id in self._dials:
            self._dials[peer_id][waiter_id] = None
            self._attached[waiter_id] = peer_id
            return actions
        if deadline is None and self._wait_timeout is not None:
            deadline = now + self._wait_timeout
        # Join the back of the queue, then let the queue take whatever room
        # there is: a new get never overtakes older waiters.
        self._queue[waiter_id] = _Queued(peer_id, deadline)
        actions += self._serve_queue(now)
        if waiter_id in self._queue and (
            (deadline is not None and deadline <= now) or len(self._queue) > self._max_waiting
        ):
            del self._queue[waiter_id]
            actions.append(self._exhaust(waiter_id, peer_id))
        return actions

    @emits
    def release(self, waiter_id: Hashable, now: float) -> list[PoolAction]:
        """End the lease granted to ``waiter_id``. Unknown ids are ignored."""
        return self._release(waiter_id, now)

    def _release(self, waiter_id: Hashable, now: float) -> list[PoolAction]:
        if waiter_id in self._leases:
            entry = self._conns[self._leases.pop(waiter_id)]
            entry.leases.discard(waiter_id)
            self._touch(entry, now)
        return self._sweep(now)

    @emits
    def cancel(self, waiter_id: Hashable, now: float) -> list[PoolAction]:
        """Forget ``waiter_id`` in whatever state it is; a granted lease is released.

        A dial the waiter was sharing goes on (its connection joins the pool as
        idle, ready for reuse). Unknown ids are ignored.
        """
        if self._queue.pop(waiter_id, None) is not None:
            return self._sweep(now)
        if waiter_id in self._attached:
            del self._dials[self._attached.pop(waiter_id)][waiter_id]
            return self._sweep(now)
        return self._release(waiter_id, now)

    @emits
    def report_quality(self, peer_id: Hashable, score: float, now: float) -> list[PoolAction]:
        """Feed a quality score (higher is better) for the connection to ``peer_id``.

        Unknown peers are ignored. A connection poor for ``poor_quality_period``
        is closed once idle.
        """
        entry = self._conns.get(peer_id)
        if entry is not None:
            if score < self._poor_threshold:
                if entry.poor_since is None:
                    entry.poor_since = now
            else:
                entry.poor_since = None
        return self._sweep(now)

    @emits
    def reconfigure(
        self,
        *,
        now: float,
        max_size: int | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        wait_timeout: float | _Unset | None = _UNSET,
        max_waiting: int | None = None,
        poor_quality_threshold: float | None = None,
        poor_quality_period: float | _Unset | None = _UNSET,
    ) -> list[PoolAction]:
        """Change limits at runtime; omitted arguments keep their value.

        For the timeouts ``None`` means "no limit", so leave an argument out to
        keep it. Waiters already queued keep their deadlines.
        """
        if max_size is not None:
            self._max_size = _check_size(max_size)
        if not isinstance(idle_timeout, _Unset):
            self._idle_timeout = _check_seconds("idle_timeout", idle_timeout)
        if not isinstance(wait_timeout, _Unset):
            self._wait_timeout = _check_seconds("wait_timeout", wait_timeout)
        if max_waiting is not None:
            if max_waiting < 0:
                raise InvalidArgumentError(f"max_waiting must be >= 0, got {max_waiting!r}")
            self._max_waiting = max_waiting
        if poor_quality_threshold is not None:
            self._poor_threshold = poor_quality_threshold
        if not isinstance(poor_quality_period, _Unset):
            self._poor_period = _check_seconds("poor_quality_period", poor_quality_period)
        actions: list[PoolAction] = []
        # A queue longer than a reduced max_waiting keeps its oldest waiters.
        while len(self._queue) > self._max_waiting:
            waiter_id = next(reversed(self._queue))
            actions.append(self._exhaust(waiter_id, self._queue.pop(waiter_id).peer_id))
        return actions + self._sweep(now)

    @emits
    def close(self, now: float) -> list[PoolAction]:
        """Shut the pool: close every connection, fail every waiter.

        Dials in progress are forgotten; if one still succeeds, ``dial_succeeded``
        answers with ``Close(..., "pool closed")``. Later gets fail at once.
        """
        self._closed = True
        actions: list[PoolAction] = []
        waiting = [(w, q.peer_id) for w, q in self._queue.items()]
        for waiter_id, peer_id in waiting + list(self._attached.items()):
            error = ConnectionClosedError("the pool is closed")
            actions.append(Fail(waiter_id, peer_id, error))
        for peer_id in list(self._conns):
            actions.append(self._close(peer_id, POOL_CLOSED))
        self._queue.clear()
        self._attached.clear()
        self._dials.clear()
        return actions

    # -- inputs from the network ---------------------------------------------

    @emits
    def dial_succeeded(self, peer_id: Hashable, connection: C, now: float) -> list[PoolAction]:
        """The dial to ``peer_id`` produced ``connection``; grant it to its waiters."""
        if self._closed:
            return [Close(peer_id, connection, POOL_CLOSED)]
        if peer_id not in self._dials:
            raise LocalProtocolError(f"no dial to {peer_id!r} is in progress")
        # Sweep while the dial still counts towards size, so its slot is not
        # handed to the queue in between.
        actions = self._sweep(now)
        waiters = self._dials.pop(peer_id)
        self._seq += 1
        entry = _Entry(connection, set(), now, self._seq)
        self._conns[peer_id] = entry
        for waiter_id in waiters:
            del self._attached[waiter_id]
            actions.append(self._lease(waiter_id, peer_id, entry, now))
        return actions + self._serve_queue(now)

    @emits
    def dial_failed(self, peer_id: Hashable, error: Exception, now: float) -> list[PoolAction]:
        """The dial to ``peer_id`` failed; every waiter sharing it gets ``error``."""
        return self._dial_failed(peer_id, error, now)

    def _dial_failed(self, peer_id: Hashable, error: Exception, now: float) -> list[PoolAction]:
        if self._closed:
            return []
        waiters = self._dials.pop(peer_id, None)
        if waiters is None:
            raise LocalProtocolError(f"no dial to {peer_id!r} is in progress")
        self._failures += 1
        actions: list[PoolAction] = []
        for waiter_id in waiters:
            del self._attached[waiter_id]
            actions.append(Fail(waiter_id, peer_id, error))
        return actions + self._sweep(now)

    @emits
    def connection_closed(
        self, peer_id: Hashable, now: float, *, connection: C | None = None
    ) -> list[PoolAction]:
        """The connection to ``peer_id`` closed; forget it (its leases vanish).

        Pass ``connection`` to ignore a stale event about an older connection to
        the same peer. If the peer was still dialling, the dial fails with
        :class:`~pyapp.exceptions.ConnectionClosedError`. Unknown peers are ignored.
        """
        error = ConnectionClosedError(f"connection to {peer_id!r} closed")
        return self._gone(peer_id, error, now, connection, failed=False)

    @emits
    def connection_failed(
        self, peer_id: Hashable, error: Exception, now: float, *, connection: C | None = None
    ) -> list[PoolAction]:
        """Like :meth:`connection_closed`, but counted as a failure; dial waiters get ``error``."""
        return self._gone(peer_id, error, now, connection, failed=True)

    # -- timers --------------------------------------------------------------

    def next_event(self) -> PoolAction | None:
        """The next action that followed from the inputs so far, or None (pull until None)."""
        return self._events.next_event()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called; ``None`` if nothing is pending."""
        times = [q.deadline for q in self._queue.values() if q.deadline is not None]
        for entry in self._conns.values():
            if entry.leases:
                continue
            if self._idle_timeout is not None:
                times.append(entry.last_used + self._idle_timeout)
            if self._poor_period is not None and entry.poor_since is not None:
                times.append(entry.poor_since + self._poor_period)
        return min(times) if times else None

    @emits
    def handle_timer(self, now: float) -> list[PoolAction]:
        """Close idle or poor connections and fail waiters whose deadline is due."""
        return self._sweep(now)

    # -- internals -----------------------------------------------------------

    def _size(self) -> int:
        return len(self._conns) + len(self._dials)

    def _touch(self, entry: _Entry[C], now: float) -> None:
        self._seq += 1
        entry.last_used = now
        entry.seq = self._seq

    def _lease(self, waiter_id: Hashable, peer_id: Hashable, entry: _Entry[C], now: float) -> Grant[C]:
        entry.leases.add(waiter_id)
        self._leases[waiter_id] = peer_id
        self._touch(entry, now)
        return Grant(waiter_id, peer_id, entry.connection)

    def _exhaust(self, waiter_id: Hashable, peer_id: Hashable) -> Fail:
        self._exhausted += 1
        error = PoolExhausted(
            f"connection pool full ({self._max_size} connections, none idle); "
            f"gave up waiting for {peer_id!r}"
        )
        return Fail(waiter_id, peer_id, error)

    def _forget(self, peer_id: Hashable) -> _Entry[C]:
        entry = self._conns.pop(peer_id)
        for lease in entry.leases:
            del self._leases[lease]
        return entry

    def _close(self, peer_id: Hashable, reason: str) -> Close[C]:
        return Close(peer_id, self._forget(peer_id).connection, reason)

    def _lru_idle(self) -> Hashable | None:
        idle = [(e.last_used, e.seq, p) for p, e in self._conns.items() if not e.leases]
        return min(idle, key=lambda t: (t[0], t[1]))[2] if idle else None

    def _gone(
        self, peer_id: Hashable, error: Exception, now: float, connection: C | None, *, failed: bool
    ) -> list[PoolAction]:
        if self._closed:
            return []
        if peer_id in self._dials:
            return self._dial_failed(peer_id, error, now)
        entry = self._conns.get(peer_id)
        if entry is None or (connection is not None and entry.connection is not connection):
            return self._sweep(now)
        self._forget(peer_id)  # no Close action: it is closed already
        if failed:
            self._failures += 1
        return self._sweep(now)

    def _serve_queue(self, now: float) -> list[PoolAction]:
        actions: list[PoolAction] = []
        while self._queue:
            head = next(iter(self._queue.values())).peer_id
            # Room: below max_size, or made by closing the LRU idle connection.
            while self._size() >= self._max_size:
                victim = self._lru_idle()
                if victim is None:
                    return actions
                actions.append(self._close(victim, EVICTED))
                self._evictions += 1
            # Everyone queued for this peer shares the dial, in FIFO order.
            sharing = [w for w, q in self._queue.items() if q.peer_id == head]
            self._dials[head] = dict.fromkeys(sharing)
            for waiter_id in sharing:
                del self._queue[waiter_id]
                self._attached[waiter_id] = head
            self._n_dials += 1
            actions.append(Dial(head))
        return actions

    def _sweep(self, now: float) -> list[PoolAction]:
        actions: list[PoolAction] = []
        # Over max_size after a shrink: idle connections go as soon as they are
        # idle, LRU first. Leased ones and dials are never yanked.
        while self._size() > self._max_size:
            victim = self._lru_idle()
            if victim is None:
                break
            actions.append(self._close(victim, SHRINK))
            self._evictions += 1
        for peer_id, entry in list(self._conns.items()):
            if entry.leases:
                continue
            if (
                self._poor_period is not None
                and entry.poor_since is not None
                and now >= entry.poor_since + self._poor_period
            ):
                actions.append(self._close(peer_id, POOR_QUALITY))
                self._recycled += 1
            elif self._idle_timeout is not None and now >= entry.last_used + self._idle_timeout:
                actions.append(self._close(peer_id, IDLE))
                self._idle_closes += 1
        actions += self._serve_queue(now)
        for waiter_id, queued in list(self._queue.items()):
            if queued.deadline is not None and queued.deadline <= now:
                del self._queue[waiter_id]
                actions.append(self._exhaust(waiter_id, queued.peer_id))
        return actions

