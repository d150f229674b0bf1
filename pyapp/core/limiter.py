"""Sans-I/O connection limiter: at most N live connections, a bounded FIFO queue.

Every connection the page holds -- dialled by the pool, accepted from an inbound
offer, or anything else -- takes one *slot*. A request that finds no free slot
waits in one FIFO queue until a slot is released, its deadline passes, or the
caller cancels it; a request that finds the queue full is refused at once with
:class:`~pyapp.exceptions.LimitExceeded`. Nothing here waits: every input
queues the actions that follow from it, the async wrapper pulls them with
``next_event()`` (until None) and resolves its futures from them.

Example::

    from pyapp.core.limiter import ConnectionLimiter, Granted, TimedOut

    limiter = ConnectionLimiter(1, max_queue=4)
    events = lambda: list(iter(limiter.next_event, None))   # pull until None
    limiter.request("r1", "alice", now=0.0)
    assert events() == [Granted("r1", "alice")]
    limiter.request("r2", "bob", now=0.0, deadline=5.0)
    assert events() == []                                   # queued
    assert limiter.get_timer() == 5.0
    limiter.release("r1", now=1.0)
    assert events() == [Granted("r2", "bob")]               # FIFO hand-over
    limiter.request("r3", "carol", now=1.0, deadline=2.0)
    limiter.handle_timer(now=2.0)
    [expired] = events()
    assert isinstance(expired, TimedOut) and expired.request_id == "r3"
    assert (limiter.held, limiter.queued) == (1, 0)

Policies (see ``docs/pooling.md``):

* Strict FIFO. A queued request is granted before any later one, whatever its
  kind; a new request never overtakes the queue, even when ``reconfigure``
  has just opened slots (they are handed to the queue first).
* Every request ends in exactly one outcome: :class:`Granted` (then holds its
  slot until :meth:`ConnectionLimiter.release` or ``cancel``),
  :class:`Refused` (queue full), :class:`TimedOut` (deadline passed while
  queued) or cancelled (the caller called ``cancel``; no action is emitted).
* Inbound offers (``inbound=True``) share the queue but may occupy at most
  ``max_inbound_queue`` places of it, so a burst of offers from strangers is
  refused with reason ``"inbound queue full"`` long before it can crowd out the
  page's own dials.
* ``release`` and ``cancel`` are idempotent: an unknown or already finished id
  is ignored, so cleanup paths that race (close *and* fail events, a cancel
  that lands after the grant) can never free a slot twice.
* Lowering ``max_connections`` never revokes a held slot; the limiter simply
  grants nothing until enough slots are released.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from pyapp.core._queue import EventQueue, emits
from pyapp.exceptions import InvalidArgumentError, LimitExceeded, LocalProtocolError

__all__ = [
    "ConnectionLimiter",
    "Granted",
    "LimiterAction",
    "LimiterStats",
    "Refused",
    "TimedOut",
]

#: Reasons carried by :class:`Refused`.
QUEUE_FULL = "queue full"
INBOUND_QUEUE_FULL = "inbound queue full"
QUEUE_SHRUNK = "queue shrunk"


@dataclass(frozen=True)
class LimiterAction:
    """Base class of everything the limiter asks its caller to do."""

    #: The caller's opaque id of the request this action resolves.
    request_id: Hashable
    #: The peer named in the request.
    peer_id: Hashable


@dataclass(frozen=True)
class Granted(LimiterAction):
    """The request now holds a slot; the caller may open the connection."""


@dataclass(frozen=True)
class Refused(LimiterAction):
    """The request was refused without ever holding a slot; raise ``error``."""

    #: Why: ``"queue full"``, ``"inbound queue full"`` or ``"queue shrunk"``.
    reason: str = QUEUE_FULL
    #: The exception the wrapper should raise to the requester.
    error: LimitExceeded = field(
        default_factory=lambda: LimitExceeded(f"connection limiter: {QUEUE_FULL}"), compare=False
    )


@dataclass(frozen=True)
class TimedOut(LimiterAction):
    """The request's deadline passed while it was queued; raise ``error``."""

    #: The exception the wrapper should raise to the requester.
    error: LimitExceeded = field(
        default_factory=lambda: LimitExceeded("connection limiter: deadline passed"),
        compare=False,
    )


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of the limiter's counters."""

    #: Slots held right now.
    held: int
    #: Requests waiting right now (inbound included).
    queued: int
    #: Inbound requests waiting right now.
    queued_inbound: int
    #: Requests granted so far.
    granted: int
    #: Requests refused so far (queue full / shrunk).
    refused: int
    #: Requests that timed out in the queue so far.
    timed_out: int
    #: Requests cancelled by the caller so far (queued or granted).
    cancelled: int
    #: Slots released by ``release`` so far.
    released: int
    #: The most slots ever held at once.
    peak_held: int


@dataclass
class _Waiting:
    peer_id: Hashable
    inbound: bool
    deadline: float | None


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{name} must be an int >= 0, got {value!r}")
    return value


class ConnectionLimiter:
    """At most ``max_connections`` slots held; waiters queue FIFO, the queue is bounded.

    ``max_queue`` bounds the whole queue, ``max_inbound_queue`` the number of
    inbound requests in it. Request ids are opaque and chosen by the caller
    (the async wrapper uses them to find its future); they must be unique among
    live (queued or held) requests.
    """

    def __init__(
        self, max_connections: int, *, max_queue: int = 32, max_inbound_queue: int = 4
    ) -> None:
        self._events: EventQueue[LimiterAction] = EventQueue()
        self._max = _check_count("max_connections", max_connections)
        self._max_queue = _check_count("max_queue", max_queue)
        self._max_inbound_queue = _check_count("max_inbound_queue", max_inbound_queue)
        self._held: dict[Hashable, Hashable] = {}
        self._queue: OrderedDict[Hashable, _Waiting] = OrderedDict()
        self._queued_inbound = 0
        self._granted = self._refused = self._timed_out = 0
        self._cancelled = self._released = self._peak_held = 0

    # -- introspection -------------------------------------------------------

    @property
    def max_connections(self) -> int:
        """The number of slots; at most this many are granted at once."""
        return self._max

    @property
    def max_queue(self) -> int:
        """The most requests that may wait at once."""
        return self._max_queue

    @property
    def max_inbound_queue(self) -> int:
        """The most inbound requests that may wait at once."""
        return self._max_inbound_queue

    @property
    def held(self) -> int:
        """Slots held right now."""
        return len(self._held)

    @property
    def queued(self) -> int:
        """Requests waiting right now."""
        return len(self._queue)

    @property
    def stats(self) -> LimiterStats:
        """A snapshot of the counters."""
        return LimiterStats(
            held=len(self._held),
            queued=len(self._queue),
            queued_inbound=self._queued_inbound,
            granted=self._granted,
            refused=self._refused,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            released=self._released,
            peak_held=self._peak_held,
        )

    def is_held(self, request_id: Hashable) -> bool:
        """Whether ``request_id`` holds a slot."""
        return request_id in self._held

    def is_queued(self, request_id: Hashable) -> bool:
        """Whether ``request_id`` is waiting for a slot."""
        return request_id in self._queue

    # -- inputs --------------------------------------------------------------

    @emits
    def request(
        self,
        request_id: Hashable,
        peer_id: Hashable,
        now: float,
        *,
        inbound: bool = False,
        deadline: float | None = None,
    ) -> list[LimiterAction]:
        """Ask for a slot for a connection to (or from, if ``inbound``) ``peer_id``.

        Queues ``Granted`` when a slot is free, nothing when the request was
        queued (a later input queues its outcome), ``Refused`` when the queue
        (or its inbound share) is full, and ``TimedOut`` when it would have to
        wait but ``deadline`` (absolute, like ``now``) has already passed.
        """
        if request_id in self._held or request_id in self._queue:
            raise LocalProtocolError(f"request id {request_id!r} is already in use")
        actions = self._expire(now)
        if len(self._held) < self._max:
            # FIFO: a free slot implies an empty queue, because slots are always
            # handed to the queue first (see _drain).
            actions.append(self._grant(request_id, peer_id))
            return actions
        if deadline is not None and deadline <= now:
            self._timed_out += 1
            actions.append(TimedOut(request_id, peer_id))
            return actions
        if inbound and self._queued_inbound >= self._max_inbound_queue:
            actions.append(self._refuse(request_id, peer_id, INBOUND_QUEUE_FULL))
            return actions
        if len(self._queue) >= self._max_queue:
            actions.append(self._refuse(request_id, peer_id, QUEUE_FULL))
            return actions
        self._queue[request_id] = _Waiting(peer_id, inbound, deadline)
        if inbound:
            self._queued_inbound += 1
        return actions

    @emits
    def release(self, request_id: Hashable, now: float) -> list[LimiterAction]:
        """The connection holding ``request_id``'s slot closed or failed; free the slot.

        Unknown ids are ignored (idempotent). Queues grants for queued requests.
        """
        if self._held.pop(request_id, _MISSING) is not _MISSING:
            self._released += 1
        return self._expire(now) + self._drain()

    @emits
    def cancel(self, request_id: Hashable, now: float) -> list[LimiterAction]:
        """The requester gave up: drop it from the queue, or free its slot if granted.

        Cancelling a granted request covers the race where the grant was
        emitted but the waiting task was cancelled before it saw it. Unknown or
        finished ids are ignored; nothing of the request remains afterwards.
        """
        waiting = self._queue.pop(request_id, None)
        if waiting is not None:
            self._cancelled += 1
            if waiting.inbound:
                self._queued_inbound -= 1
        elif self._held.pop(request_id, _MISSING) is not _MISSING:
            self._cancelled += 1
        return self._expire(now) + self._drain()

    @emits
    def reconfigure(
        self,
        now: float,
        *,
        max_connections: int | None = None,
        max_queue: int | None = None,
        max_inbound_queue: int | None = None,
    ) -> list[LimiterAction]:
        """Change the limits at runtime (e.g. battery power-saving).

        More slots are granted to the queue at once. Fewer slots never revoke a
        held one. A smaller queue cap refuses the newest waiters over the cap
        (reason ``"queue shrunk"``), so ``queued <= max_queue`` always holds.
        """
        if max_connections is not None:
            self._max = _check_count("max_connections", max_connections)
        if max_queue is not None:
            self._max_queue = _check_count("max_queue", max_queue)
        if max_inbound_queue is not None:
            self._max_inbound_queue = _check_count("max_inbound_queue", max_inbound_queue)
        actions = self._expire(now) + self._drain()
        # Newest first: the oldest waiters have the best claim to stay.
        for request_id in reversed(list(self._queue)):
            waiting = self._queue[request_id]
            over_total = len(self._queue) > self._max_queue
            over_inbound = waiting.inbound and self._queued_inbound > self._max_inbound_queue
            if over_total or over_inbound:
                del self._queue[request_id]
                if waiting.inbound:
                    self._queued_inbound -= 1
                actions.append(self._refuse(request_id, waiting.peer_id, QUEUE_SHRUNK))
        return actions

    def next_event(self) -> LimiterAction | None:
        """The next action that followed from the inputs so far, or None (pull until None)."""
        return self._events.next_event()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (the earliest queued deadline)."""
        deadlines = [w.deadline for w in self._queue.values() if w.deadline is not None]
        return min(deadlines) if deadlines else None

    @emits
    def handle_timer(self, now: float) -> list[LimiterAction]:
        """Time out every queued request whose deadline is ``<= now``."""
        return self._expire(now)

    # -- internals -----------------------------------------------------------

    def _grant(self, request_id: Hashable, peer_id: Hashable) -> Granted:
        self._held[request_id] = peer_id
        self._granted += 1
        self._peak_held = max(self._peak_held, len(self._held))
        return Granted(request_id, peer_id)

    def _refuse(self, request_id: Hashable, peer_id: Hashable, reason: str) -> Refused:
        self._refused += 1
        return Refused(request_id, peer_id, reason, LimitExceeded(f"connection limiter: {reason}"))

    def _drain(self) -> list[LimiterAction]:
        actions: list[LimiterAction] = []
        while self._queue and len(self._held) < self._max:
            request_id, waiting = self._queue.popitem(last=False)
            if waiting.inbound:
                self._queued_inbound -= 1
            actions.append(self._grant(request_id, waiting.peer_id))
        return actions

    def _expire(self, now: float) -> list[LimiterAction]:
        expired = [
            rid for rid, w in self._queue.items() if w.deadline is not None and w.deadline <= now
        ]
        actions: list[LimiterAction] = []
        for request_id in expired:
            waiting = self._queue.pop(request_id)
            if waiting.inbound:
                self._queued_inbound -= 1
            self._timed_out += 1
            actions.append(TimedOut(request_id, waiting.peer_id))
        return actions


_MISSING = object()
