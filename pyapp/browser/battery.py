"""The Battery Status API (``navigator.getBattery()``), live, from Python.

:meth:`Battery.open` reads the battery once and then follows it: it subscribes
to ``levelchange`` and ``chargingchange`` and emits a ``change`` event with
the new :class:`~pyapp.core.power.BatteryState` each time. Where there is no
Battery API -- Firefox, Safari, insecure contexts (plain http on a LAN
address), or a browser that rejects the call -- ``open()`` still succeeds:
:attr:`Battery.state` is None ("unknown"), :attr:`Battery.unavailable_reason`
says why, and no event ever fires. Nothing is raised.

Example (in the page)::

    from pyapp.browser.battery import Battery
    battery = await Battery.open()
    if battery.state is None:
        print("unknown:", battery.unavailable_reason)
    battery.events.on("change", lambda state: print(state.level, state.charging))
    ...
    battery.close()        # removes the listeners, destroys the proxies
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import js
from pyodide.ffi import JsException

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, is_null
from pyapp.core.power import BatteryState

__all__ = ["OPEN_TIMEOUT", "Battery"]

#: A getBattery() promise that neither resolves nor rejects within this many
#: seconds is treated as "no Battery API" (the page must not hang on it).
OPEN_TIMEOUT = 3.0

_EVENTS = ("levelchange", "chargingchange")


class Battery:
    """A live view of the device battery; ``state`` None means unknown.

    Events (``battery.events.on(name, callback)``): ``change`` (the new
    :class:`BatteryState`) after ``levelchange``/``chargingchange``.
    ``bad_readings`` counts readings the browser gave that were not a valid
    level (NaN, out of range); the last good state is kept for those.
    """

    def __init__(self, js_battery: Any | None, unavailable_reason: str | None = None) -> None:
        self.js_battery = js_battery
        self.unavailable_reason = unavailable_reason
        self.events = Emitter()
        self.bad_readings = 0
        self.changes = 0
        self.state: BatteryState | None = None
        self._owner = ProxyOwner("battery")
        if js_battery is not None:
            self.state = self._read()
            for name in _EVENTS:
                self._owner.listen(js_battery, name, self._on_change)

    @classmethod
    async def open(cls, timeout: float = OPEN_TIMEOUT) -> Battery:
        """Call ``navigator.getBattery()``; an unknown-state Battery when there is none."""
        getter = getattr(js.navigator, "getBattery", None)
        if is_null(getter) or not callable(getter):
            secure = bool(getattr(js.globalThis, "isSecureContext", True))
            why = "no Battery API" if secure else "no Battery API (insecure context)"
            return cls(None, why)
        try:
            promise = js.navigator.getBattery()
            manager = await asyncio.wait_for(_as_future(promise), timeout)
        except TimeoutError:
            return cls(None, f"no Battery API (getBattery() did not answer in {timeout:g} s)")
        except JsException as exc:
            name = str(getattr(exc, "name", "") or "Error")
            return cls(None, f"no Battery API ({name})")
        if is_null(manager):
            return cls(None, "no Battery API (getBattery() gave nothing)")
        return cls(manager)

    @property
    def available(self) -> bool:
        """True when the browser has a Battery API and gave a manager."""
        return self.js_battery is not None

    def _read(self) -> BatteryState | None:
        level = getattr(self.js_battery, "level", None)
        charging = getattr(self.js_battery, "charging", None)
        if (isinstance(level, bool) or not isinstance(level, int | float)
                or not math.isfinite(level) or not 0.0 <= level <= 1.0
                or not isinstance(charging, bool)):
            self.bad_readings += 1
            return self.state
        return BatteryState(level=float(level), charging=charging)

    def _on_change(self, _event: Any) -> None:
        state = self._read()
        if state is None or state == self.state:
            return
        self.state = state
        self.changes += 1
        self.events.emit("change", state)

    def describe(self) -> str:
        """For the UI: ``15% · discharging``, or ``unknown (no Battery API)``."""
        if self.state is None:
            return f"unknown ({self.unavailable_reason or 'no reading'})"
        how = "charging" if self.state.charging else "discharging"
        return f"{round(self.state.level * 100)}% · {how}"

    def close(self) -> None:
        """Stop following the battery; safe to call twice."""
        self._owner.close()
        self.events.clear()

    def __repr__(self) -> str:
        return f"<Battery {self.describe()}>"


async def _as_future(promise: Any) -> Any:
    return await promise
