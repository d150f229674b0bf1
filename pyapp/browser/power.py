"""Battery-aware power saving: follow the device, apply :func:`decide_power`.

A :class:`PowerManager` combines

* the :class:`~pyapp.core.device.DeviceProfile` (read once from ``navigator``),
* a live :class:`~pyapp.browser.battery.Battery` (``levelchange`` /
  ``chargingchange``; "unknown" where there is no Battery API),
* ``document.visibilityState`` (``visibilitychange``),
* ``navigator.connection`` (its ``change`` event, where the API exists),

runs :func:`pyapp.core.power.decide_power` on every change -- passing the
previous mode, so leaving power saving has hysteresis (below 20 % in, above
25 % or charging out) -- and applies the result to registered targets:

=====================  =============================================  ==================
target (duck-typed)    called with                                    setting
=====================  =============================================  ==================
:class:`Poller`        ``set_interval(seconds)``                      stats / quality polling
:class:`PoolTarget`    ``reconfigure(max_size=..., idle_timeout=...)``  connection pool
:class:`PauseTarget`   ``set_paused_priorities(bulk=..., unreliable_low_priority=...)``  mux traffic
:class:`VideoTarget`   ``await apply_caps(VideoCaps)``                video senders / tracks
=====================  =============================================  ==================

A plain callable registered with :meth:`PowerManager.on_pause` gets
``(bulk, unreliable_low_priority)`` instead. Each target is called once when
registered (with the settings in force) and again only when its part of the
settings changes. A target that raises is reported and counted in
``target_errors``; the others still get their settings. Every decision is
emitted as a ``settings`` event.

Example (in the page)::

    from pyapp.browser.power import PowerManager
    power = await PowerManager.open()
    power.events.on("settings", lambda s: print(s.mode, s.reason))
    power.register(quality_monitor)       # has set_interval(seconds)
    power.register(pool)                  # has reconfigure(max_size=, idle_timeout=)
    await pc.set_battery_aware_options(power)   # the video caps follow the battery
    ...
    power.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import js

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, _report, is_null, spawn
from pyapp.browser.battery import Battery
from pyapp.browser.device import connection_object, read_connection, read_device_profile
from pyapp.browser.media import VideoCaps
from pyapp.core.device import DeviceProfile, NetworkInfo, network_info
from pyapp.core.power import PowerMode, PowerSettings, decide_power
from pyapp.exceptions import InvalidArgumentError

__all__ = [
    "PauseTarget",
    "Poller",
    "PoolTarget",
    "PowerManager",
    "Transition",
    "VideoTarget",
]


@runtime_checkable
class Poller(Protocol):
    """Something that polls on a timer (stats, quality monitor)."""

    def set_interval(self, seconds: float) -> None: ...


@runtime_checkable
class PoolTarget(Protocol):
    """A connection pool whose limits can change at runtime."""

    def reconfigure(self, *, max_size: int, idle_timeout: float) -> Any: ...


@runtime_checkable
class PauseTarget(Protocol):
    """A multiplexer that can hold back VERY_LOW bulk and unreliable low-priority traffic."""

    def set_paused_priorities(self, *, bulk: bool, unreliable_low_priority: bool) -> Any: ...


@runtime_checkable
class VideoTarget(Protocol):
    """Outgoing video (a :class:`~pyapp.browser.media.MediaTuner`)."""

    async def apply_caps(self, caps: VideoCaps) -> None: ...


PauseCallback = Callable[[bool, bool], Any]


@dataclass(frozen=True)
class Transition:
    """One mode change, for logs, the UI and tests."""

    at: float
    """``time.time()`` of the change."""
    mode: PowerMode
    """The new mode."""
    reason: str
    """Why (the decision's reason)."""
    trigger: str
    """What changed: start, battery, visibility, network, refresh."""


class PowerManager:
    """Applies the power policy to registered targets; see the module docstring.

    ``settings`` is the decision in force, ``transitions`` the mode changes so
    far, ``decisions`` how many times the policy ran, ``target_errors`` how
    many target calls raised.
    """

    def __init__(self, profile: DeviceProfile, battery: Battery, *,
                 visible: bool = True, watch_page: bool = True) -> None:
        self.profile = profile
        self.battery = battery
        self.visible = visible
        self.network: NetworkInfo = profile.network
        self.events = Emitter()
        self.decisions = 0
        self.target_errors = 0
        self.transitions: list[Transition] = []
        self._pollers: list[Poller] = []
        self._pools: list[PoolTarget] = []
        self._pausers: list[PauseTarget | PauseCallback] = []
        self._videos: list[VideoTarget] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._owner = ProxyOwner("power manager")
        self._closed = False
        self.settings = self._decide(None)
        self.transitions.append(Transition(time.time(), self.settings.mode,
                                           self.settings.reason, "start"))
        battery.events.on("change", self._on_battery)
        if watch_page:
            self._owner.listen(js.document, "visibilitychange", self._on_visibility)
            conn = connection_object()
            if conn is not None and not is_null(getattr(conn, "addEventListener", None)):
                self._owner.listen(conn, "change", self._on_network)

    @classmethod
    async def open(cls) -> PowerManager:
        """Read the device, open the battery, follow the page (never raises for a missing API)."""
        battery = await Battery.open()
        return cls(read_device_profile(), battery, visible=_page_visible())

    @classmethod
    async def shared(cls) -> PowerManager:
        """The page-wide manager (opened on first use); what the app and its features share."""
        global _SHARED
        if _SHARED is None or _SHARED._closed:
            manager = await cls.open()
            if _SHARED is None or _SHARED._closed:  # another task may have opened one meanwhile
                _SHARED = manager
            else:
                manager.close()
        return _SHARED

    # ------------------------------------------------------------------ registration

    def register(self, target: Any) -> None:
        """Register ``target`` under every role it fits (see the module table).

        Raises TypeError for an object that fits none, so a typo is not silent.
        """
        fitted = False
        if isinstance(target, Poller):
            self.add_poller(target)
            fitted = True
        if isinstance(target, PoolTarget):
            self.add_pool(target)
            fitted = True
        if isinstance(target, PauseTarget):
            self.add_pauser(target)
            fitted = True
        if isinstance(target, VideoTarget):
            self.add_video(target)
            fitted = True
        if not fitted:
            raise InvalidArgumentError(f"{target!r} has none of set_interval, reconfigure, "
                                       "set_paused_priorities, apply_caps: register a monitor, pool, "
                                       "multiplexer or VideoTarget")

    def unregister(self, target: Any) -> None:
        """Stop applying settings to ``target`` (no error if it was not registered)."""
        for group in (self._pollers, self._pools, self._pausers, self._videos):
            while target in group:
                group.remove(target)

    def add_poller(self, target: Poller) -> None:
        """``target.set_interval(settings.stats_interval)`` now and on every change."""
        if target in self._pollers:
            return  # registered already: it has the settings in force
        self._pollers.append(target)
        self._call(target.set_interval, self.settings.stats_interval)

    def add_pool(self, target: PoolTarget) -> None:
        """``target.reconfigure(max_size=..., idle_timeout=...)`` now and on every change."""
        if target in self._pools:
            return  # registered already: it has the settings in force
        self._pools.append(target)
        self._call(_reconfigure(target), self.settings)

    def add_pauser(self, target: PauseTarget | PauseCallback) -> None:
        """A multiplexer (``set_paused_priorities``) or a callback ``(bulk, unreliable_low)``."""
        if target in self._pausers:
            return  # registered already: it has the settings in force
        self._pausers.append(target)
        self._call(_pause(target), self.settings)

    def on_pause(self, callback: PauseCallback) -> None:
        """Call ``callback(bulk, unreliable_low_priority)`` now and on every change."""
        self.add_pauser(callback)

    def add_video(self, target: VideoTarget) -> None:
        """``await target.apply_caps(VideoCaps)`` now and on every change."""
        if target in self._videos:
            return  # registered already: it has the settings in force
        self._videos.append(target)
        self._apply_video(target, VideoCaps.from_settings(self.settings))

    # ------------------------------------------------------------------ decisions

    @property
    def mode(self) -> PowerMode:
        return self.settings.mode

    def _decide(self, previous: PowerSettings | None) -> PowerSettings:
        self.decisions += 1
        return decide_power(self.profile, self.battery.state, visible=self.visible,
                            network=self.network,
                            previous_mode=PowerMode.NORMAL if previous is None else previous.mode)

    def refresh(self, trigger: str = "refresh") -> PowerSettings:
        """Decide again from the current inputs and apply what changed."""
        if self._closed:
            return self.settings
        old = self.settings
        new = self.settings = self._decide(old)
        if new.mode is not old.mode:
            self.transitions.append(Transition(time.time(), new.mode, new.reason, trigger))
        if new.stats_interval != old.stats_interval:
            for poller in list(self._pollers):
                self._call(poller.set_interval, new.stats_interval)
        if (new.pool_max_size, new.pool_idle_timeout) != (old.pool_max_size, old.pool_idle_timeout):
            for pool in list(self._pools):
                self._call(_reconfigure(pool), new)
        if ((new.pause_bulk, new.pause_unreliable_low_priority)
                != (old.pause_bulk, old.pause_unreliable_low_priority)):
            for pauser in list(self._pausers):
                self._call(_pause(pauser), new)
        caps = VideoCaps.from_settings(new)
        if caps != VideoCaps.from_settings(old):
            for video in list(self._videos):
                self._apply_video(video, caps)
        self.events.emit("settings", new)
        return new

    async def settled(self) -> None:
        """Wait until every video target finished applying the latest caps."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def describe(self) -> str:
        """For the UI: ``power saving — battery at 15% and discharging (below 20%)``."""
        name = "power saving" if self.mode is PowerMode.POWER_SAVING else "normal"
        return f"{name} — {self.settings.reason}"

    # ------------------------------------------------------------------ inputs

    def _on_battery(self, _state: Any) -> None:
        self.refresh("battery")

    def _on_visibility(self, _event: Any) -> None:
        self.visible = _page_visible()
        self.refresh("visibility")

    def _on_network(self, _event: Any) -> None:
        self.network = network_info(read_connection())
        self.refresh("network")

    # ------------------------------------------------------------------ applying

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            self.target_errors += 1
            _report("a power-saving target", exc)
            return
        if asyncio.iscoroutine(result):
            self._track(result)

    def _apply_video(self, target: VideoTarget, caps: VideoCaps) -> None:
        try:
            coro = target.apply_caps(caps)
        except Exception as exc:
            self.target_errors += 1
            _report("a video power target", exc)
            return
        self._track(coro)

    def _track(self, coro: Any) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                self.target_errors += 1
                raise  # spawn() reports it

        task = spawn(run(), "applying power settings")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def close(self) -> None:
        """Stop following battery, page and network; the battery is closed too."""
        if self._closed:
            return
        self._closed = True
        self.battery.events.off("change", self._on_battery)
        self.battery.close()
        self._owner.close()
        self.events.clear()


_SHARED: PowerManager | None = None


def _reconfigure(pool: PoolTarget) -> Callable[[PowerSettings], Any]:
    return lambda s: pool.reconfigure(max_size=s.pool_max_size, idle_timeout=s.pool_idle_timeout)


def _pause(target: PauseTarget | PauseCallback) -> Callable[[PowerSettings], Any]:
    if isinstance(target, PauseTarget):
        return lambda s: target.set_paused_priorities(
            bulk=s.pause_bulk, unreliable_low_priority=s.pause_unreliable_low_priority)
    return lambda s: target(s.pause_bulk, s.pause_unreliable_low_priority)


def _page_visible() -> bool:
    state = getattr(js.document, "visibilityState", None)
    return is_null(state) or str(state) != "hidden"
