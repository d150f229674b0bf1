"""``ReconnectSupervisor``: applies :class:`~pyapp.core.reconnect.ReconnectPolicy` to a connection.

It watches the current Connection's ``iceConnectionState``, feeds it to the
sans-I/O policy together with the loop's clock, and carries out the policy's
commands: ``RestartIce`` calls :meth:`Connection.restart_ice` (perfect
negotiation sends the new offer), ``Redial`` hangs the old connection up and
asks ``redial()`` for a fresh one, ``GiveUp`` closes it for good. Every step is
reported as a ``reconnect`` event (the core's :class:`ReconnectEvent` objects),
so the UI and the log can show it. One
:class:`~pyapp.browser.timer.TimerDriver`, re-armed from ``policy.get_timer()``,
drives the policy's timers.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    from pyapp.browser.reconnect import ReconnectSupervisor

    a, b = await connected_pair()
    sup = ReconnectSupervisor(a, redial=my_dialer_coroutine_fn, grace=1.0)
    sup.events.on("reconnect", lambda event: print("reconnect:", event))
    sup.events.on("connection", lambda pc: print("redialled, new connection", pc))
    sup.events.on("closed", lambda reason: print("gone for good:", reason))
    ...
    sup.close()            # stops supervising and closes the current connection

Events (``sup.events.on(name, callback)``): ``reconnect`` (a
:class:`~pyapp.core.reconnect.ReconnectEvent`), ``connection`` (the new
:class:`Connection` after a successful redial), ``closed`` (a reason
string: the connection closed by itself, or the policy gave up, or
:meth:`close` was called).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pyapp._events import Emitter
from pyapp.browser._ffi import spawn
from pyapp.browser.connection import Connection
from pyapp.browser.timer import TimerDriver
from pyapp.core.reconnect import (
    GiveUp,
    RandomSource,
    ReconnectEvent,
    ReconnectPolicy,
    Redial,
    RestartIce,
)
from pyapp.exceptions import ConnectionClosedError, PyAppError

__all__ = ["ReconnectSupervisor", "RedialFn", "HangUpFn"]

RedialFn = Callable[[], Awaitable[Connection]]
"""Dial a fresh connection to the same peer; returns it once connected."""
HangUpFn = Callable[[Connection], None]
"""Close a connection that is being replaced (and tell the remote, if the dialer can)."""


class ReconnectSupervisor:
    """Keeps one logical connection alive across ICE blips, restarts and redials.

    ``redial=None`` means this side never redials (e.g. the answering side of
    a connection: the dialling side will call again); a ``Redial`` command then
    counts as a failed attempt at once, so the policy backs off and finally
    gives up. Extra keyword arguments configure the :class:`ReconnectPolicy`
    (``grace``, ``restart_timeout``, ``redial_timeout``, ``base_delay``,
    ``max_delay``, ``max_attempts``) unless ``policy`` is given.
    """

    def __init__(self, pc: Connection, redial: RedialFn | None = None, *,
                 hang_up: HangUpFn | None = None, policy: ReconnectPolicy | None = None,
                 rng: RandomSource | None = None, **policy_args: Any) -> None:
        self.policy = policy or ReconnectPolicy(rng or random.Random(), **policy_args)
        self.events = Emitter()
        self.history: list[ReconnectEvent] = []
        self.restarts = 0
        self.redials = 0
        self.closed = False
        self.close_reason: str | None = None
        self._redial = redial
        self._hang_up: HangUpFn = hang_up or (lambda old: old.close())
        self._loop = asyncio.get_event_loop()
        self._timer = TimerDriver(self._get_timer, self._on_timer)
        self._redial_task: asyncio.Task[Any] | None = None
        self._session: Any = None  # a MuxSession carried across a redial
        self.resume_token: str | None = None
        """The peer's session id while a redial carries a session (sent with the offer)."""
        self.pc = pc
        self._attach(pc)

    # ------------------------------------------------------------------ wiring

    def _attach(self, pc: Connection) -> None:
        self.pc = pc
        pc.events.on("iceconnectionstatechange", self._on_ice_state)
        pc.events.on("connectionstatechange", self._on_connection_state)
        pc.events.on("signalingstatechange", self._on_signaling_state)
        # A connection handed over already connected: tell the policy, or it
        # would ignore the first "disconnected" (it waits for "connected" first).
        self._feed(pc.ice_connection_state)

    def _detach(self, pc: Connection) -> None:
        pc.events.off("iceconnectionstatechange", self._on_ice_state)
        pc.events.off("connectionstatechange", self._on_connection_state)
        pc.events.off("signalingstatechange", self._on_signaling_state)

    def _now(self) -> float:
        return self._timer.now()

    def _on_ice_state(self, state: str) -> None:
        self._feed(state)

    def _on_signaling_state(self, state: str) -> None:
        # An ICE restart on a path that still works may leave iceConnectionState
        # at "connected" (no event); once the restart's offer/answer completes,
        # report the current state so the policy sees the recovery.
        if state == "stable":
            self._feed(self.pc.ice_connection_state)

    def _on_connection_state(self, state: str) -> None:
        # "closed" is ours to see only when someone else closed the connection
        # (we detach before hanging up on a redial): the logical connection is over.
        if state == "closed" and not self.closed:
            self._finish("connection closed")

    def _feed(self, state: str) -> None:
        if self.closed:
            return
        self.policy.state_changed(state, self._now())
        self._apply()

    def _get_timer(self) -> float | None:
        return None if self.closed else self.policy.get_timer()

    def _on_timer(self, now: float) -> None:
        if not self.closed:
            self.policy.handle_timer(now)
            self._apply()

    def _rearm(self) -> None:
        self._timer.rearm()

    # ------------------------------------------------------------------ commands

    def _apply(self) -> None:
        """Carry out every event the policy queued (pulled until None), then re-arm its timer."""
        while (event := self.policy.next_event()) is not None:
            self.history.append(event)
            self.events.emit("reconnect", event)
            if isinstance(event, RestartIce):
                self._restart_ice()
            elif isinstance(event, Redial):
                self._start_redial(event)
            elif isinstance(event, GiveUp):
                self._finish(f"gave up: {event.reason}")
                while self.policy.next_event() is not None:
                    pass  # the policy is over: what followed the GiveUp does not matter
                return
        self._rearm()

    def _restart_ice(self) -> None:
        self.restarts += 1
        try:
            self.pc.restart_ice()
        except PyAppError:
            # The connection is closed or the browser refused: the restart failed.
            self.policy.state_changed("failed", self._now())  # _apply's loop carries it out
    def transport_dead(self) -> None:
        """The SCTP association died while the path was down (retransmissions ran out).

        An ICE restart cannot bring it back: the policy redials at once (carrying
        the multiplexer session), unless a redial is already under way.
        """
        if self.closed or self._redial is None:
            return
        self.policy.transport_lost(self._now())
        self._apply()

    def _start_redial(self, event: Redial) -> None:
        if self._redial is None:
            # This side does not dial; the attempt fails at once (backoff, then give up).
            self._loop.call_soon(self._feed, "failed")
            return
        if self._redial_task is not None and not self._redial_task.done():
            # The policy gave up on that attempt (its deadline passed): one redial at
            # a time, or the new dial would hang up the old one and its failure would
            # count against the new attempt.
            self._redial_task.cancel()
        old = self.pc
        self._detach(old)
        # Reliable multiplexed channels continue on the new connection: keep the
        # session (and its unacknowledged messages) for the redial.
        session = old.detach_multiplexer()
        if session is not None:
            self._session = session
            self.resume_token = session.resume_token
        self._hang_up(old)
        self.redials += 1
        self._redial_task = spawn(self._do_redial(event), "reconnect: redial")

    async def _do_redial(self, event: Redial) -> None:
        assert self._redial is not None
        try:
            timeout = max(0.0, event.deadline - self._now())
            pc = await asyncio.wait_for(self._redial(), timeout)
        except asyncio.CancelledError:
            raise
        except (PyAppError, TimeoutError) as exc:
            if not self.closed and self._redial_task is asyncio.current_task():
                self.events.emit("redial-failed", exc)
                self._feed("failed")
            return
        if self.closed:
            self._hang_up(pc)
            return
        if self._session is not None:
            session, self._session = self._session, None
            self.resume_token = None
            pc.adopt_multiplexer(session)
        self._attach(pc)
        self.events.emit("connection", pc)
        self._rearm()

    # ------------------------------------------------------------------ lifetime

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.policy.close(self._now())
        self._timer.cancel()
        if self._redial_task is not None and not self._redial_task.done():
            self._redial_task.cancel()
        self._detach(self.pc)
        if not self.pc.closed:
            self._hang_up(self.pc)
        if self._session is not None:
            # Gone for good: pending sends and unacknowledged messages fail loudly.
            session, self._session = self._session, None
            session.fail(f"peer unreachable: {reason}")
        self.events.emit("closed", reason)
        self.events.clear()

    def close(self, reason: str = "closed locally") -> None:
        """Stop supervising and close the current connection. Safe to call twice."""
        self._finish(reason)

    def check_open(self) -> Connection:
        """The current connection; raises ConnectionClosedError once the supervisor is closed."""
        if self.closed:
            raise ConnectionClosedError(f"connection is gone: {self.close_reason}")
        return self.pc

    def __repr__(self) -> str:
        return f"<ReconnectSupervisor {self.policy.state.value} restarts={self.restarts} redials={self.redials}>"
