"""What the sans-I/O connection pool asks its caller to do, and its counters.

:class:`~pyapp.core.pool.ConnectionPool` queues these actions; the caller pulls
them with ``next_event()``: :class:`Dial` (open a connection), :class:`Close`
(close one, with a reason), :class:`Grant` (a lease for a waiter), :class:`Fail`
(a waiter's error). :class:`PoolStats` is the pool's snapshot of counters.

Example::

    from pyapp.core.pool_actions import Close, Dial, IDLE

    action = Close("alice", "conn-A", IDLE)
    assert action.reason == "idle" and Dial("bob").peer_id == "bob"
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "EVICTED",
    "IDLE",
    "POOL_CLOSED",
    "POOR_QUALITY",
    "SHRINK",
    "Close",
    "Dial",
    "Fail",
    "Grant",
    "PoolAction",
    "PoolStats",
]

C = TypeVar("C")

#: ``Close.reason`` values.
IDLE = "idle"
EVICTED = "evicted"
POOR_QUALITY = "poor quality"
SHRINK = "shrink"
POOL_CLOSED = "pool closed"


@dataclass(frozen=True)
class PoolAction:
    """Base class of everything the pool asks its caller to do."""


@dataclass(frozen=True)
class Dial(PoolAction):
    """Open a connection to ``peer_id``, then report ``dial_succeeded``/``dial_failed``."""

    #: The peer to connect to.
    peer_id: Hashable


@dataclass(frozen=True)
class Close(PoolAction, Generic[C]):
    """Close this connection; the pool has already forgotten it."""

    #: The peer the connection goes to.
    peer_id: Hashable
    #: The connection object passed to ``dial_succeeded``.
    connection: C
    #: Why: ``"idle"``, ``"evicted"``, ``"poor quality"``, ``"shrink"`` or ``"pool closed"``.
    reason: str


@dataclass(frozen=True)
class Grant(PoolAction, Generic[C]):
    """Resolve waiter ``waiter_id`` with ``connection``; it now holds a lease."""

    #: The waiter's opaque id, as passed to ``get_connection``.
    waiter_id: Hashable
    #: The peer it asked for.
    peer_id: Hashable
    #: The connection object passed to ``dial_succeeded``.
    connection: C


@dataclass(frozen=True)
class Fail(PoolAction):
    """Resolve waiter ``waiter_id`` with ``error``; it holds nothing."""

    #: The waiter's opaque id, as passed to ``get_connection``.
    waiter_id: Hashable
    #: The peer it asked for.
    peer_id: Hashable
    #: The exception to raise: :class:`PoolExhausted`, or the dial's error.
    error: Exception = field(compare=False)


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool."""

    #: Open connections plus dials in progress (the capacity in use).
    size: int
    #: Open connections with no lease.
    idle: int
    #: Open connections with at least one lease.
    leased: int
    #: Dials in progress.
    dialing: int
    #: Waiters not yet resolved (queued for capacity or waiting on a dial).
    waiting: int
    #: Dials started so far.
    dials: int
    #: Gets served by an already open connection so far.
    reuses: int
    #: Idle connections closed to make room (LRU or shrink) so far.
    evictions: int
    #: Connections closed by the idle timeout so far.
    idle_closes: int
    #: Connections recycled for poor quality so far.
    recycled: int
    #: Failed dials plus failed connections so far.
    failures: int
    #: Waiters failed with PoolExhausted so far.
    exhausted: int
