"""Power policy: what to cap and pause, from device, battery, visibility and network.

:func:`decide_power` is pure. The adapter calls it again whenever an input
changes (battery ``levelchange``/``chargingchange``, ``visibilitychange``,
``navigator.connection`` ``change``) and passes the previous mode so the
battery rule has hysteresis. The numbers are explained in ``docs/power.md``.

Rules:

* Battery: level < 20 % and not charging → power saving; once in power
  saving, back to normal only when charging or level > 25 %. No Battery API
  (Safari, Firefox) → battery state "unknown", mode normal.
* Caps: desktop normal 2.5 Mbit/s, 30 fps, no resolution constraint;
  handheld normal 128 kbit/s, 320x240 @ 15 fps; power saving 64 kbit/s,
  320x240 @ 10 fps and VERY_LOW bulk plus unreliable low-priority traffic
  paused; Save-Data or a 2g/slow-2g link also lower the video caps to the
  power-saving ones (mode stays normal, nothing is paused); 3g caps desktop
  video at 256 kbit/s.
* Stats/quality polling: 1 s normal, 5 s power saving, 10 s while hidden.
* Pool: 8 connections / 60 s idle normally, 2 / 15 s in power saving.

Example::

    from pyapp.core.device import classify_device
    from pyapp.core.power import BatteryState, PowerMode, decide_power

    phone = classify_device("Mozilla/5.0 (Android 14; Mobile; rv:128.0) "
                            "Gecko/128.0 Firefox/128.0", None, 5, None, None)
    low = decide_power(phone, BatteryState(level=0.15, charging=False), visible=True)
    assert low.mode is PowerMode.POWER_SAVING and low.video_max_bitrate == 64_000
    # 22 %: still saving (hysteresis), because the previous mode was saving.
    mid = decide_power(phone, BatteryState(0.22, False), visible=True, previous_mode=low.mode)
    assert mid.mode is PowerMode.POWER_SAVING
    assert decide_power(phone, None, visible=True).battery_state == "unknown"
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from pyapp.core.device import DeviceProfile, NetworkInfo
from pyapp.exceptions import InvalidArgumentError

__all__ = [
    "ENTER_POWER_SAVING_BELOW",
    "EXIT_POWER_SAVING_ABOVE",
    "BatteryState",
    "PowerMode",
    "PowerSettings",
    "decide_power",
]

#: Enter power saving below this battery level (not charging).
ENTER_POWER_SAVING_BELOW = 0.20
#: Leave power saving above this level (or when charging).
EXIT_POWER_SAVING_ABOVE = 0.25

DESKTOP_VIDEO_BITRATE = 2_500_000
HANDHELD_VIDEO_BITRATE = 128_000
SAVING_VIDEO_BITRATE = 64_000
THREE_G_VIDEO_BITRATE = 256_000
NORMAL_POLL = 1.0
SAVING_POLL = 5.0
HIDDEN_POLL = 10.0
NORMAL_POOL = (8, 60.0)
SAVING_POOL = (2, 15.0)


class PowerMode(enum.StrEnum):
    """The policy's mode."""

    NORMAL = "normal"
    POWER_SAVING = "power_saving"


@dataclass(frozen=True)
class BatteryState:
    """A Battery API reading (``BatteryManager.level`` / ``.charging``)."""

    level: float
    """0.0 .. 1.0."""
    charging: bool
    """Whether the device is on external power."""

    def __post_init__(self) -> None:
        if not (isinstance(self.level, int | float) and math.isfinite(self.level)
                and 0.0 <= self.level <= 1.0):
            raise InvalidArgumentError(f"battery level must be in [0, 1], got {self.level!r}")


@dataclass(frozen=True)
class PowerSettings:
    """What the adapter applies: sender parameters, track constraints, timers, pool."""

    mode: PowerMode
    """normal or power_saving."""
    reason: str
    """Human-readable why, for logs and the UI."""
    battery_state: Literal["unknown", "charging", "discharging"]
    """unknown when there is no Battery API."""
    video_max_bitrate: int
    """``RTCRtpEncodingParameters.maxBitrate`` in bps."""
    video_max_framerate: float
    """``maxFramerate`` / the ``frameRate`` constraint."""
    video_width: int | None
    """``width`` constraint; None = leave the camera's."""
    video_height: int | None
    """``height`` constraint; None = leave the camera's."""
    stats_interval: float
    """Seconds between getStats / quality polls."""
    pool_max_size: int
    """Connection pool size limit."""
    pool_idle_timeout: float
    """Seconds before an idle pooled connection is closed."""
    pause_bulk: bool
    """Pause VERY_LOW priority bulk transfers."""
    pause_unreliable_low_priority: bool
    """Pause unreliable, low-priority traffic (telemetry, previews)."""


def decide_power(
    profile: DeviceProfile,
    battery: BatteryState | None,
    *,
    visible: bool,
    network: NetworkInfo | None = None,
    previous_mode: PowerMode = PowerMode.NORMAL,
) -> PowerSettings:
    """Decide the settings; ``network`` defaults to ``profile.network``."""
    net = profile.network if network is None else network
    reasons: list[str] = []

    state: Literal["unknown", "charging", "discharging"]
    if battery is None:
        state = "unknown"
        mode = PowerMode.NORMAL
        reasons.append("Battery API unavailable; staying in normal mode")
    else:
        state = "charging" if battery.charging else "discharging"
        percent = f"{round(battery.level * 100)}%"
        if battery.charging:
            mode = PowerMode.NORMAL
            reasons.append(f"charging at {percent}")
        elif battery.level < ENTER_POWER_SAVING_BELOW:
            mode = PowerMode.POWER_SAVING
            reasons.append(f"battery at {percent} and discharging (below 20%)")
        elif previous_mode is PowerMode.POWER_SAVING and battery.level <= EXIT_POWER_SAVING_ABOVE:
            mode = PowerMode.POWER_SAVING
            reasons.append(f"battery at {percent}; staying in power saving until above 25%")
        else:
            mode = PowerMode.NORMAL
            reasons.append(f"battery at {percent}")

    saving = mode is PowerMode.POWER_SAVING
    if saving:
        bitrate, fps, size = SAVING_VIDEO_BITRATE, 10.0, (320, 240)
    elif profile.handheld:
        bitrate, fps, size = HANDHELD_VIDEO_BITRATE, 15.0, (320, 240)
        reasons.append("handheld device: mobile video caps")
    else:
        bitrate, fps, size = DESKTOP_VIDEO_BITRATE, 30.0, None

    if net.save_data or net.slow:
        why = "Save-Data is on" if net.save_data else f"slow network ({net.effective_type})"
        if bitrate > SAVING_VIDEO_BITRATE:
            reasons.append(f"{why}: lowest video caps")
        bitrate, fps, size = SAVING_VIDEO_BITRATE, min(fps, 10.0), (320, 240)
    elif net.effective_type == "3g" and bitrate > THREE_G_VIDEO_BITRATE:
        bitrate = THREE_G_VIDEO_BITRATE
        reasons.append("3g network: video capped at 256 kbit/s")

    interval = SAVING_POLL if saving else NORMAL_POLL
    if not visible:
        interval = max(interval, HIDDEN_POLL)
        reasons.append("page hidden: polling every 10 s")
    pool_size, idle = SAVING_POOL if saving else NORMAL_POOL

    return PowerSettings(
        mode=mode,
        reason="; ".join(reasons),
        battery_state=state,
        video_max_bitrate=bitrate,
        video_max_framerate=fps,
        video_width=None if size is None else size[0],
        video_height=None if size is None else size[1],
        stats_interval=interval,
        pool_max_size=pool_size,
        pool_idle_timeout=idle,
        pause_bulk=saving,
        pause_unreliable_low_priority=saving,
    )
