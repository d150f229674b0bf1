"""One page-wide timer for every quality monitor: a JS ``setTimeout`` and one long-lived proxy.

Why not an asyncio timer per monitor: in Pyodide every ``loop.call_later`` /
``call_soon`` callback enters Python through the WebLoop's
``create_once_callable(..., _may_syncify=True)`` (a new JSPI-capable entry per
callback). Measured in Chromium 156 with Pyodide 314 (main-thread task time,
200 callbacks a second): ~200-360 us per asyncio callback, ~20 us for a JS
``setTimeout`` calling a long-lived ``create_proxy``, ~5 us for a bare JS
timer. A cancelled asyncio handle still fires its JS timeout and enters Python.
Eight monitors at 1 Hz with probes armed about 18 asyncio timers a second, a
third of their whole cost.

A :class:`MonitorClock` keeps one JS timeout armed for the earliest deadline of
all its members; when it fires, every member whose deadline has come runs, in
one entry into Python, and the clock re-arms. ``clearTimeout`` really cancels.
Members provide ``_deadline() -> float | None`` and ``_on_timer(now)`` (the
:class:`~pyapp.core.probe.Prober` / :class:`~pyapp.core.quality.QualityTracker`
convention one level up) and call :meth:`MonitorClock.rearm` after every input
that may move their deadline. An exception in one member is reported
(``_report``) and the others still run.

The clock's proxy is owned by a :class:`~pyapp.browser._ffi.ProxyOwner`,
created when the first member joins and destroyed when the last one leaves:
an idle page holds none.

Example (in the page)::

    from pyapp.browser.monitor_clock import monitor_clock

    clock = monitor_clock()              # the page's shared clock
    clock.add(member)                    # member._deadline(), member._on_timer(now)
    clock.rearm()                        # after anything that moves member's deadline
    ...
    clock.discard(member)                # the last one out releases the proxy
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol

import js

from pyapp.browser._ffi import ProxyOwner, _report, guard
from pyapp.browser.timer import now

__all__ = ["ClockMember", "MonitorClock", "monitor_clock"]

_JS_TIMER = """
let id = null;
return {
  arm(ms) { if (id !== null) clearTimeout(id); id = setTimeout(() => { id = null; fire(); }, ms); },
  cancel() { if (id !== null) clearTimeout(id); id = null; },
};"""

_MAKE_TIMER: Any = None


class ClockMember(Protocol):
    """What a :class:`MonitorClock` drives."""

    def _deadline(self) -> float | None: ...

    def _on_timer(self, now: float) -> None: ...


class MonitorClock:
    """One JS timeout for the earliest deadline of its members (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = now, name: str = "quality monitors") -> None:
        self._clock = clock
        self.name = name
        self._members: dict[int, ClockMember] = {}  # in the order they joined
        self._owner: ProxyOwner | None = None
        self._js_timer: Any = None
        self._when: float | None = None
        self._firing = False
        self.fires = 0
        """JS timeouts that ran (each one entry into Python for every due member)."""
        self.served = 0
        """Member timer calls those timeouts made (``served / fires``: members per entry)."""

    def now(self) -> float:
        """The clock's time (:func:`~pyapp.browser.timer.now` unless another was given)."""
        return self._clock()

    @property
    def members(self) -> int:
        return len(self._members)

    @property
    def armed(self) -> bool:
        """Whether the JS timeout is scheduled."""
        return self._when is not None

    @property
    def when(self) -> float | None:
        """The deadline the JS timeout is armed for."""
        return self._when

    def scheduled(self, member: ClockMember) -> bool:
        """Whether ``member`` has a deadline this clock will wake it for."""
        return id(member) in self._members and member._deadline() is not None

    def add(self, member: ClockMember) -> None:
        """Drive ``member`` (idempotent); call :meth:`rearm` once its deadline is set."""
        self._members[id(member)] = member

    def discard(self, member: ClockMember) -> None:
        """Stop driving ``member``; the last one out cancels the timeout and frees the proxy."""
        if self._members.pop(id(member), None) is None or self._firing:
            return  # (while firing, _fire re-arms or releases at its end)
        if not self._members:
            self._release()
        else:
            self.rearm()

    def rearm(self) -> None:
        """Arm the JS timeout for the earliest member deadline (cancel it when there is none)."""
        if self._firing:
            return  # _fire re-arms once, after every due member ran
        when: float | None = None
        for member in self._members.values():
            deadline = member._deadline()
            if deadline is not None and (when is None or deadline < when):
                when = deadline
        if when == self._when:
            return
        self._when = when
        if when is None:
            if self._js_timer is not None:
                self._js_timer.cancel()
            return
        if self._js_timer is None:
            self._js_timer = self._make_timer()
        # Whole milliseconds, rounded up: a timeout that fires a fraction early
        # (performance.now() is coarsened) would find nothing due and re-arm.
        self._js_timer.arm(max(0, math.ceil((when - self._clock()) * 1000.0)))

    def _make_timer(self) -> Any:
        global _MAKE_TIMER
        if _MAKE_TIMER is None:
            _MAKE_TIMER = js.Function.new("fire", _JS_TIMER)
        self._owner = ProxyOwner(self.name + " clock")
        return _MAKE_TIMER(self._owner.proxy(guard(self._fire, self.name + " timer")))

    def _fire(self) -> None:
        self._when = None
        self.fires += 1
        now = self._clock()
        self._firing = True
        try:
            for member in list(self._members.values()):
                if id(member) not in self._members:
                    continue  # stopped by a member that ran before it
                deadline = member._deadline()
                if deadline is None or deadline > now:
                    continue
                self.served += 1
                try:
                    member._on_timer(now)
                except Exception as exc:  # one member's bug must not stop the others
                    _report(f"{self.name} timer", exc)
        finally:
            self._firing = False
        if self._members:
            self.rearm()
        else:
            # Not from inside the proxy's own call: destroy it on the next turn
            # (rare: the last monitor stopped from its own timer, a closed connection).
            self._when = None
            asyncio.get_event_loop().call_soon(self._release_if_idle)

    def _release_if_idle(self) -> None:
        if not self._members:
            self._release()

    def _release(self) -> None:
        self._when = None
        if self._js_timer is not None:
            self._js_timer.cancel()
            self._js_timer = None
        if self._owner is not None:
            self._owner.close()
            self._owner = None


_SHARED: MonitorClock | None = None


def monitor_clock(clock: Callable[[], float] = now) -> MonitorClock:
    """The page's shared :class:`MonitorClock`; another ``clock`` (a test's) gets its own."""
    global _SHARED
    if clock is not now:
        return MonitorClock(clock)
    if _SHARED is None:
        _SHARED = MonitorClock()
    return _SHARED
