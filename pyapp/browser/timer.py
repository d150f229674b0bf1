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

:func:`end_of_task` is the page's queue for work that must run once the current
task ends (the multiplexer's pump: what a burst of sends queued leaves packed).
It enters Python once per task through one long-lived proxy; Pyodide's
``call_soon`` costs a promise-wrapped entry per callback (measured ~200-360 us
of main-thread time each in Chromium, against ~20 us here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import js

from pyapp.browser._ffi import ProxyOwner, _report, guard

__all__ = ["EndOfTask", "TimerDriver", "end_of_task", "now"]


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


# One MessageChannel: a message is a task of its own, queued behind the current
# one (what Pyodide's call_soon uses too), without a timer's clamping.
_JS_END_OF_TASK = """
const channel = new MessageChannel();
let posted = false;
channel.port1.onmessage = () => { posted = false; run(); };
return {
  post() { if (!posted) { posted = true; channel.port2.postMessage(null); } },
  close() { channel.port1.onmessage = null; channel.port1.close(); channel.port2.close(); },
};"""


class EndOfTask:
    """Callbacks run, in order, in one browser task queued behind the current one.

    :meth:`call` queues a callback; the first one of a batch posts one
    MessageChannel message, and its handler (one proxy, made on first use and
    kept by the queue's :class:`~pyapp.browser._ffi.ProxyOwner` until
    :meth:`close`) runs every callback queued by then. A callback that raises
    is reported and the rest still run. A callback queued while the batch runs
    waits for the next task.
    """

    def __init__(self, name: str = "end-of-task queue", *, page_lifetime: bool = False) -> None:
        self.name = name
        self.page_lifetime = page_lifetime
        self._queue: list[Callable[[], None]] = []
        self._owner: ProxyOwner | None = None
        self._js: Any = None
        self.runs = 0
        """Tasks that ran a batch (one entry into Python each)."""
        self.calls = 0
        """Callbacks run."""

    def call(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current task ends."""
        self._queue.append(callback)
        if len(self._queue) == 1:
            if self._js is None:
                self._owner = ProxyOwner(self.name, page_lifetime=self.page_lifetime)
                self._js = js.Function.new("run", _JS_END_OF_TASK)(
                    self._owner.proxy(guard(self._run, self.name)))
            self._js.post()

    def _run(self) -> None:
        batch, self._queue = self._queue, []
        self.runs += 1
        for callback in batch:
            self.calls += 1
            try:
                callback()
            except Exception as exc:  # one callback's bug must not stop the others
                _report(self.name, exc)

    def close(self) -> None:
        """Release the proxy and the channel; callbacks still queued are dropped."""
        self._queue.clear()
        if self._js is not None:
            self._js.close()
            self._js = None
        if self._owner is not None:
            self._owner.close()
            self._owner = None


_SHARED: EndOfTask | None = None


def end_of_task() -> EndOfTask:
    """The page's shared :class:`EndOfTask` queue (its one proxy lives as long as the page)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = EndOfTask(page_lifetime=True)
    return _SHARED
