"""Sans-I/O reconnection policy: ride out ICE blips, restart ICE, then redial with backoff.

Feed it the connection's ICE (or peer-connection) state changes and the time
(``state_changed``); pull :class:`ReconnectEvent` objects with ``next_event()``
until it returns None. Three of them are commands the
wrapper must carry out -- :class:`RestartIce`, :class:`Redial`,
:class:`GiveUp` -- the others only report progress (for the UI and the log).
Timers work as in h11/aioquic: ask :meth:`ReconnectPolicy.get_timer`, call
:meth:`ReconnectPolicy.handle_timer` when it is due.

Example::

    import random
    from pyapp.core.reconnect import BackoffStarted, Redial, ReconnectPolicy, RestartIce

    policy = ReconnectPolicy(random.Random(1), grace=2.0, restart_timeout=5.0)
    events = lambda: list(iter(policy.next_event, None))   # pull until None
    policy.state_changed("connected", now=0.0)
    policy.state_changed("disconnected", now=10.0)
    events()                                               # [..., Disconnected(grace_until=12.0)]
    policy.handle_timer(12.0)
    assert events() == [RestartIce(deadline=17.0)]
    policy.handle_timer(17.0)                              # the restart did not connect
    [backoff] = events()
    assert isinstance(backoff, BackoffStarted) and 0 <= backoff.delay < 1.0
    policy.handle_timer(backoff.redial_at)
    assert events() == [Redial(1, backoff.redial_at + 15.0)]
    policy.state_changed("connected", now=20.0)
    [recovered] = events()
    assert policy.attempts == 0                            # connected resets the count

Transitions (the only place they live is :meth:`ReconnectPolicy._step`):

==============  ====================  ==================================================
state           input                 result
==============  ====================  ==================================================
IDLE            connected             CONNECTED (the first dial is the dialer's business)
CONNECTED       disconnected          GRACE; ``Disconnected``; timer ``now + grace``
CONNECTED       failed                RESTARTING; ``RestartIce``
GRACE           timer                 RESTARTING; ``RestartIce``; timer ``+ restart_timeout``
GRACE           failed                RESTARTING; ``RestartIce``
RESTARTING      timer / failed        backoff (below)
BACKOFF         timer                 REDIALING; ``Redial(attempt)``; timer ``+ redial_timeout``
REDIALING       timer / failed        backoff (below)
CONNECTED,      transport lost        REDIALING at once; ``Redial(attempt)`` (or ``GiveUp``
GRACE,                                past ``max_attempts``); timer ``+ redial_timeout``
RESTARTING
BACKOFF         transport lost        REDIALING at once with the attempt already scheduled
any but CLOSED  connected             CONNECTED; ``Recovered`` (if it was down); attempts = 0
any             :meth:`close`         CLOSED (terminal, no more events or timers)
==============  ====================  ==================================================

*backoff*: ``attempt = attempts + 1``; past ``max_attempts`` the policy emits
``GiveUp`` and goes to GAVE_UP (a later ``connected`` still revives it);
otherwise it waits ``delay = rng.random() * min(max_delay, base_delay * 2**(attempt-1))``
("full jitter", AWS Architecture Blog, 2015), emitting ``BackoffStarted``.
Every other (state, input) pair is ignored: e.g. ``disconnected`` while a
restart or redial is under way, ``transport lost`` (:meth:`ReconnectPolicy.transport_lost`)
while redialing, or the ``new``/``checking`` states of a redialled connection.
The ``closed`` RTC state is ignored too, because the wrapper closes the old RTCPeerConnection itself when it redials; call
:meth:`ReconnectPolicy.close` to stop the policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from pyapp.core._queue import EventQueue, emits
from pyapp.exceptions import InvalidArgumentError

__all__ = [
    "BackoffStarted",
    "Disconnected",
    "GiveUp",
    "RandomSource",
    "ReconnectEvent",
    "ReconnectPolicy",
    "ReconnectState",
    "Recovered",
    "Redial",
    "RestartIce",
]


class RandomSource(Protocol):
    """Where jitter comes from; :class:`random.Random` fits. Inject one seeded in tests."""

    def random(self) -> float:
        """A float in ``[0.0, 1.0)``."""
        ...


class ReconnectState(enum.Enum):
    """Where the policy is."""

    IDLE = "idle"
    CONNECTED = "connected"
    GRACE = "grace"
    RESTARTING = "restarting"
    BACKOFF = "backoff"
    REDIALING = "redialing"
    GAVE_UP = "gave up"
    CLOSED = "closed"


@dataclass(frozen=True)
class ReconnectEvent:
    """Base class of everything the policy reports."""


@dataclass(frozen=True)
class Disconnected(ReconnectEvent):
    """ICE reported ``disconnected``; waiting for it to recover by itself."""

    #: When the grace period ends and an ICE restart is issued.
    grace_until: float


@dataclass(frozen=True)
class RestartIce(ReconnectEvent):
    """Command: restart ICE on the current connection (``restartIce()`` + new offer)."""

    #: When the restart counts as failed unless ``connected`` arrives first.
    deadline: float


@dataclass(frozen=True)
class BackoffStarted(ReconnectEvent):
    """The last try did not reconnect; a redial is scheduled."""

    #: The redial attempt being scheduled, from 1.
    attempt: int
    #: Seconds to wait (jittered), so ``redial_at - now``.
    delay: float
    #: When ``Redial`` will be issued.
    redial_at: float
    #: What failed: ``"ice restart failed"``, ``"ice restart timed out"``,
    #: ``"redial failed"`` or ``"redial timed out"``.
    reason: str


@dataclass(frozen=True)
class Redial(ReconnectEvent):
    """Command: close the old connection and dial a new one; feed its states here."""

    #: The attempt number, from 1 up to ``max_attempts``.
    attempt: int
    #: When the redial counts as failed unless ``connected`` arrives first.
    deadline: float


@dataclass(frozen=True)
class Recovered(ReconnectEvent):
    """The connection is up again."""

    #: Redial attempts it took (0: ICE recovered by itself or by the restart).
    attempts: int
    #: Seconds since the connection was first seen down.
    downtime: float


@dataclass(frozen=True)
class GiveUp(ReconnectEvent):
    """Command: stop trying; tell the user the peer is unreachable."""

    #: Printable explanation.
    reason: str
    #: Redial attempts made.
    attempts: int


_UP = frozenset({"connected", "completed"})
_ALL_STATES = _UP | {"new", "checking", "connecting", "disconnected", "failed", "closed"}


def _check_seconds(name: str, value: float) -> float:
    if not value >= 0:
        raise InvalidArgumentError(f"{name} must be >= 0, got {value!r}")
    return value


class ReconnectPolicy:
    """The reconnection state machine for one peer connection.

    ``rng`` supplies jitter (``random.Random(seed)`` in tests). Durations are
    seconds. ``max_attempts`` counts redials; the single ICE restart per outage
    is not an attempt.
    """

    def __init__(
        self,
        rng: RandomSource,
        *,
        grace: float = 2.0,
        restart_timeout: float = 10.0,
        redial_timeout: float = 15.0,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        self._events: EventQueue[ReconnectEvent] = EventQueue()
        self._rng = rng
        self.grace = _check_seconds("grace", grace)
        self.restart_timeout = _check_seconds("restart_timeout", restart_timeout)
        self.redial_timeout = _check_seconds("redial_timeout", redial_timeout)
        self.base_delay = _check_seconds("base_delay", base_delay)
        self.max_delay = _check_seconds("max_delay", max_delay)
        if max_attempts < 0:
            raise InvalidArgumentError(f"max_attempts must be >= 0, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self._state = ReconnectState.IDLE
        self._attempts = 0
        self._timer: float | None = None
        self._down_since: float | None = None

    @property
    def state(self) -> ReconnectState:
        """The current state."""
        return self._state

    @property
    def attempts(self) -> int:
        """Redial attempts made in the current outage (0 while connected)."""
        return self._attempts

    @property
    def down_since(self) -> float | None:
        """When the current outage began; ``None`` while connected."""
        return self._down_since

    def backoff_ceiling(self, attempt: int) -> float:
        """The upper bound of the jittered delay before redial ``attempt`` (from 1)."""
        # Cap the exponent: 2.0 ** 1100 overflows, and the cap is reached long before.
        return min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 62))

    # -- inputs --------------------------------------------------------------

    @emits
    def state_changed(self, state: str, now: float) -> list[ReconnectEvent]:
        """Feed ``iceConnectionState`` (or ``connectionState``) of the current connection.

        Accepts both vocabularies: ``new``, ``checking``/``connecting``,
        ``connected``/``completed``, ``disconnected``, ``failed``, ``closed``.
        Unknown values are ignored (browsers have shipped non-standard ones).
        """
        if state not in _ALL_STATES:
            return []
        if state in _UP:
            return self._step("connected", now)
        return self._step(state, now)

    @emits
    def transport_lost(self, now: float) -> list[ReconnectEvent]:
        """Feed this when the connection's transport died for good while the path was
        down (SCTP ran out of retransmissions): an ICE restart cannot bring it back.

        Redials at once (a ``Redial``, counted like any other attempt, or ``GiveUp``
        past ``max_attempts``) unless a redial is already under way.
        """
        return self._step("transport lost", now)

    @emits
    def handle_timer(self, now: float) -> list[ReconnectEvent]:
        """Act on the timer if it is due (``now >= get_timer()``); otherwise do nothing."""
        if self._timer is None or now < self._timer:
            return []
        self._timer = None
        return self._step("timer", now)

    def next_event(self) -> ReconnectEvent | None:
        """The next action that followed from the inputs so far, or None (pull until None)."""
        return self._events.next_event()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called; ``None`` if nothing is pending."""
        return self._timer

    @emits
    def close(self, now: float) -> list[ReconnectEvent]:
        """Stop for good (the app closed the connection): no more events, no timer."""
        self._state = ReconnectState.CLOSED
        self._timer = None
        return []

    # -- the transition function ---------------------------------------------

    def _step(self, event: str, now: float) -> list[ReconnectEvent]:
        S = ReconnectState
        state = self._state
        if state is S.CLOSED:
            return []
        if event == "connected":
            return self._connected(now)
        match state, event:
            case S.CONNECTED, "disconnected":
                self._down_since = now
                self._state, self._timer = S.GRACE, now + self.grace
                return [Disconnected(grace_until=self._timer)]
            case (S.CONNECTED, "failed") | (S.GRACE, "failed") | (S.GRACE, "timer"):
                if self._down_since is None:
                    self._down_since = now
                self._state, self._timer = S.RESTARTING, now + self.restart_timeout
                return [RestartIce(deadline=self._timer)]
            case S.RESTARTING, "failed":
                return self._backoff("ice restart failed", now)
            case S.RESTARTING, "timer":
                return self._backoff("ice restart timed out", now)
            case S.BACKOFF, "timer":
                self._state, self._timer = S.REDIALING, now + self.redial_timeout
                return [Redial(self._attempts, deadline=self._timer)]
            case S.REDIALING, "failed":
                return self._backoff("redial failed", now)
            case S.REDIALING, "timer":
                return self._backoff("redial timed out", now)
            case (S.CONNECTED | S.GRACE | S.RESTARTING | S.BACKOFF), "transport lost":
                return self._redial_now(now)
        return []

    def _redial_now(self, now: float) -> list[ReconnectEvent]:
        if self._down_since is None:
            self._down_since = now
        if self._state is not ReconnectState.BACKOFF:  # in BACKOFF the attempt is counted
            if self._attempts + 1 > self.max_attempts:
                self._state, self._timer = ReconnectState.GAVE_UP, None
                return [GiveUp(f"transport lost; gave up after {self._attempts} redial(s)",
                               self._attempts)]
            self._attempts += 1
        attempt = self._attempts
        self._state, self._timer = ReconnectState.REDIALING, now + self.redial_timeout
        return [Redial(attempt, deadline=self._timer)]

    def _connected(self, now: float) -> list[ReconnectEvent]:
        was_down = self._down_since
        attempts = self._attempts
        self._state = ReconnectState.CONNECTED
        self._timer = self._down_since = None
        self._attempts = 0
        if was_down is None:
            return []
        return [Recovered(attempts=attempts, downtime=now - was_down)]

    def _backoff(self, reason: str, now: float) -> list[ReconnectEvent]:
        attempt = self._attempts + 1
        if attempt > self.max_attempts:
            self._state, self._timer = ReconnectState.GAVE_UP, None
            return [
                GiveUp(f"{reason}; gave up after {self._attempts} redial(s)", self._attempts)
            ]
        self._attempts = attempt
        delay = self._rng.random() * self.backoff_ceiling(attempt)
        self._state, self._timer = ReconnectState.BACKOFF, now + delay
        return [BackoffStarted(attempt, delay, self._timer, reason)]
