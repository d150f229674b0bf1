"""The async connection limiter over :mod:`pyapp.core.limiter`.

:class:`ConnectionLimiter` -- ``await limiter.request_connection(peer_id)``
returns a :class:`Slot` once one of ``max_connections`` slots is free (FIFO
queue, optional deadline, bounded queue → :class:`~pyapp.exceptions.LimitExceeded`
at once). Cancelling the awaiting task cancels the request; a slot is released
exactly once (``slot.release()``, idempotent). The core's deadlines run on one
:class:`~pyapp.browser.timer.TimerDriver`.

Example (in the page)::

    from pyapp.browser.limiter import ConnectionLimiter

    limiter = ConnectionLimiter(8)
    async with await limiter.request_connection("bob", timeout=5.0):
        ...  # open the connection while holding the slot
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable

from pyapp._events import Emitter
from pyapp.browser.timer import TimerDriver
from pyapp.core import limiter as core_limiter
from pyapp.core.limiter import Granted, LimiterStats
from pyapp.exceptions import (
    LimitExceeded,
)

__all__ = ["ConnectionLimiter", "Slot"]


class Slot:
    """One connection slot granted by a :class:`ConnectionLimiter`.

    Release it when the connection it admitted closes or fails; releasing twice
    is harmless. Usable as an async context manager.
    """

    def __init__(self, limiter: ConnectionLimiter, request_id: int, peer_id: Hashable,
                 inbound: bool) -> None:
        self.limiter = limiter
        self.request_id = request_id
        self.peer_id = peer_id
        self.inbound = inbound
        self.released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self.released:
            self.released = True
            self.limiter._release(self.request_id)

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "inbound" if self.inbound else "outbound"
        return f"<Slot {self.request_id} {kind} {self.peer_id!r}{' released' if self.released else ''}>"


class ConnectionLimiter:
    """At most ``max_connections`` live connections; waiters queue FIFO.

    Wraps :class:`pyapp.core.limiter.ConnectionLimiter`; see its docs for the
    policies (``max_queue``, ``max_inbound_queue``).

    Example::

        limiter = ConnectionLimiter(8)
        slot = await limiter.request_connection("bob", timeout=5.0)
        try:
            ...  # open the connection
        finally:
            slot.release()
    """

    def __init__(self, max_connections: int, *, max_queue: int = 32,
                 max_inbound_queue: int = 4) -> None:
        self.core = core_limiter.ConnectionLimiter(
            max_connections, max_queue=max_queue, max_inbound_queue=max_inbound_queue)
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._timer = TimerDriver(self.core.get_timer, self._on_timer)
        self.events = Emitter()

    @property
    def held(self) -> int:
        """Slots held right now."""
        return self.core.held

    @property
    def queued(self) -> int:
        """Requests waiting right now."""
        return self.core.queued

    @property
    def max_connections(self) -> int:
        return self.core.max_connections

    @property
    def stats(self) -> LimiterStats:
        return self.core.stats

    async def request_connection(self, peer_id: Hashable, *, inbound: bool = False,
                                 timeout: float | None = None) -> Slot:
        """Wait for a slot for a connection to (or, ``inbound``, from) ``peer_id``.

        Raises LimitExceeded when the queue (or its inbound share) is full, or
        when ``timeout`` seconds pass in the queue. Cancelling the calling task
        withdraws the request (and frees the slot if it was granted meanwhile).
        """
        request_id = next(self._ids)
        now = self._timer.now()
        deadline = None if timeout is None else now + timeout
        future: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self._futures[request_id] = future
        self.core.request(request_id, peer_id, now, inbound=inbound, deadline=deadline)
        self._apply()
        try:
            await future
        except asyncio.CancelledError:
            self._futures.pop(request_id, None)
            self.core.cancel(request_id, self._timer.now())
            self._apply()
            raise
        return Slot(self, request_id, peer_id, inbound)

    def reconfigure(self, *, max_connections: int | None = None, max_queue: int | None = None,
                    max_inbound_queue: int | None = None) -> None:
        """Change the limits at runtime (see the core's ``reconfigure``)."""
        self.core.reconfigure(self._timer.now(), max_connections=max_connections,
                              max_queue=max_queue, max_inbound_queue=max_inbound_queue)
        self._apply()

    def _release(self, request_id: int) -> None:
        self.core.release(request_id, self._timer.now())
        self._apply()

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._apply()

    def _apply(self) -> None:
        """Carry out every action the core queued (pulled until None), then re-arm its timer."""
        while (action := self.core.next_event()) is not None:
            future = self._futures.pop(action.request_id, None)  # type: ignore[call-overload]
            if isinstance(action, Granted):
                if future is None or future.done():
                    # Its requester is gone (cancelled in the same tick): hand the slot back.
                    self.core.cancel(action.request_id, self._timer.now())
                    continue
                future.set_result(None)
            else:
                error = getattr(action, "error", None) or LimitExceeded("connection limiter refused")
                reason = getattr(action, "reason", "deadline passed")
                self.events.emit("refused", action.peer_id, reason)
                if future is not None and not future.done():
                    future.set_exception(error)
        self._timer.rearm()


