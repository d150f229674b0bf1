"""The browser layer's one clock and one timer driver for the sans-I/O cores.

Every core in :mod:`pyapp.core` that depends on time exposes ``get_timer()``
(the next deadline, or None) and ``handle_timer(now)``. A :class:`TimerDriver`
keeps exactly one asyncio timer handle armed for that deadline; the wrapper
calls :meth:`TimerDriver.rearm` after every input it feeds the core, and when
the handle fires the driver calls ``handle_timer(now)`` and re-arms.
:func:`now` is the clock they all share (the event loop's monotonic time, in
seconds), so deadlines computed by one wrapper mean the same to another.

Example (in the page)::

    from pyapp.browser.timer import TimerDriver, now
    from pyapp.core.limiter import ConnectionLimiter

    core = ConnectionLimiter(4)
    timer = TimerDriver(core.get_timer, lambda t: apply(core.handle_timer(t)))
    apply(core.request(1, "bob", now(), deadline=now() + 5.0))
    timer.rearm()                       # one call_later for the core's next deadline
    ...
    timer.cancel()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["TimerDriver", "now"]


def now() -> float:
    """The browser layer's clock: the running event loop's monotonic time (seconds)."""
    return asyncio.get_event_loop().time()


class TimerDriver:
    """One asyncio timer handle for a sans-I/O core, re-armed after every input.

    ``get_timer`` returns the core's next deadline (on the :func:`now` clock) or
    None; ``fire(now)`` is called when it is due (usually it calls the core's
    ``handle_timer(now)`` and applies what comes out). After ``fire`` the
    driver re-arms by itself. ``clock`` replaces :func:`now` (a test's fake
    clock; deadlines are then on that clock and the delay is computed on it).
    """

    def __init__(self, get_timer: Callable[[], float | None], fire: Callable[[float], None], *,
                 clock: Callable[[], float] | None = None) -> None:
        self._get_timer = get_timer
        self._fire = fire
        self._loop = asyncio.get_event_loop()
        self._clock = clock or self._loop.time
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def now(self) -> float:
        """The clock (:func:`now` unless another was given)."""
        return self._clock()

    @property
    def armed(self) -> bool:
        """Whether a timer handle is scheduled."""
        return self._handle is not None

    @property
    def when(self) -> float | None:
        """The deadline the handle is armed for."""
        return self._when

    def rearm(self) -> None:
        """Schedule the handle for ``get_timer()`` (cancel it when that is None)."""
        when = self._get_timer()
        if when == self._when and self._handle is not None:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = when
        if when is not None:
            # Not call_at: Pyodide's WebLoop refuses to schedule in the past
            # (ValueError), and a due timer is routine here.
            self._handle = self._loop.call_later(max(0.0, when - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        self._when = None
        self._fire(self.now())
        self.rearm()

    def cancel(self) -> None:
        """Cancel the handle; :meth:`rearm` schedules it again."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._when = None

