"""What kind of device the page runs on, from values the browser adapter reads.

:func:`classify_device` is pure: the adapter passes ``navigator.userAgent``,
``navigator.userAgentData?.mobile``, ``navigator.maxTouchPoints``,
``navigator.platform`` and ``navigator.connection`` (as a dict, or None where
the API is missing — Safari and Firefox have no ``navigator.connection``).

Rules, first match wins:

1. ``userAgentData.mobile`` (Chromium only), when present, decides ``is_mobile``.
2. Otherwise the UA string: ``iPhone``/``iPod``, ``Android`` + ``Mobile``
   (Chrome and Firefox for Android both say ``Mobile``), ``Mobi`` → phone;
   ``iPad`` or ``Android`` without ``Mobile`` → tablet.
3. A Mac UA (or ``platform == "MacIntel"``) with ``maxTouchPoints > 1`` is an
   iPad in desktop mode (iPadOS 13+ sends the desktop Safari UA); no Mac has
   a touch screen.

``is_mobile`` is true for phones and tablets unless ``userAgentData.mobile``
says otherwise; :attr:`DeviceProfile.handheld` is true for any phone or tablet
form factor and is what the power policy keys on.

Example::

    from pyapp.core.device import classify_device

    ipad = classify_device(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        ua_data_mobile=None, max_touch_points=5, platform="MacIntel",
        connection=None,
    )
    assert ipad.form_factor == "tablet" and ipad.os == "ipados" and ipad.is_mobile
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SLOW_EFFECTIVE_TYPES",
    "DeviceProfile",
    "FormFactor",
    "NetworkInfo",
    "classify_device",
    "network_info",
]

FormFactor = Literal["desktop", "phone", "tablet"]

#: ``effectiveType`` values treated as a slow link.
SLOW_EFFECTIVE_TYPES = frozenset({"slow-2g", "2g"})


@dataclass(frozen=True)
class NetworkInfo:
    """``navigator.connection`` (Network Information API); all None when absent."""

    effective_type: str | None = None
    """``effectiveType``: slow-2g / 2g / 3g / 4g."""
    save_data: bool = False
    """``saveData``: the user asked for reduced data use."""
    downlink_mbps: float | None = None
    """``downlink``: estimated bandwidth in Mbit/s."""
    rtt_ms: float | None = None
    """``rtt``: estimated round-trip time in ms."""
    connection_type: str | None = None
    """``type``: wifi / cellular / ... (Chrome on Android only)."""

    @property
    def slow(self) -> bool:
        """``effectiveType`` is 2g or slow-2g."""
        return self.effective_type in SLOW_EFFECTIVE_TYPES


@dataclass(frozen=True)
class DeviceProfile:
    """The device as far as the policy cares."""

    form_factor: FormFactor
    """desktop, phone or tablet."""
    is_mobile: bool
    """``userAgentData.mobile`` when present, else phone or tablet by the UA rules."""
    os: str
    """android / ios / ipados / windows / macos / chromeos / linux / unknown."""
    browser: str
    """chrome / edge / firefox / safari / samsung / unknown."""
    touch: bool
    """``maxTouchPoints > 0``."""
    detected_by: str
    """Which rule decided: ua-data, ua-string, touch-mac, default."""
    network: NetworkInfo = field(default_factory=NetworkInfo)
    """``navigator.connection`` at classification time."""

    @property
    def handheld(self) -> bool:
        """A phone or tablet (likely battery-powered, small screen)."""
        return self.is_mobile or self.form_factor != "desktop"


def network_info(connection: Mapping[str, Any] | None) -> NetworkInfo:
    """Parse ``navigator.connection`` fields; wrong types become None / False."""
    if not isinstance(connection, Mapping):
        return NetworkInfo()
    effective = connection.get("effectiveType")
    kind = connection.get("type")
    return NetworkInfo(
        effective_type=effective if isinstance(effective, str) else None,
        save_data=connection.get("saveData") is True,
        downlink_mbps=_number(connection.get("downlink")),
        rtt_ms=_number(connection.get("rtt")),
        connection_type=kind if isinstance(kind, str) else None,
    )


def classify_device(
    user_agent: str,
    ua_data_mobile: bool | None,
    max_touch_points: int | None,
    platform: str | None,
    connection: Mapping[str, Any] | None,
) -> DeviceProfile:
    """Classify the device; see the module docstring for the rules."""
    ua = user_agent if isinstance(user_agent, str) else ""
    lower = ua.lower()
    touch_points = max_touch_points if isinstance(max_touch_points, int) else 0
    is_mac = "macintosh" in lower or platform == "MacIntel"

    form: FormFactor = "desktop"
    detected = "default"
    os = _os(lower)
    if "iphone" in lower or "ipod" in lower:
        form, detected = "phone", "ua-string"
    elif "ipad" in lower:
        form, detected, os = "tablet", "ua-string", "ipados"
    elif "android" in lower:
        form = "phone" if "mobile" in lower else "tablet"
        detected = "ua-string"
    elif "mobi" in lower:
        form, detected = "phone", "ua-string"
    elif is_mac and touch_points > 1:
        form, detected, os = "tablet", "touch-mac", "ipados"

    if isinstance(ua_data_mobile, bool):
        is_mobile = ua_data_mobile
        detected = "ua-data"
        if ua_data_mobile and form == "desktop":
            form = "phone"
    else:
        is_mobile = form != "desktop"

    return DeviceProfile(
        form_factor=form,
        is_mobile=is_mobile,
        os=os,
        browser=_browser(lower),
        touch=touch_points > 0,
        detected_by=detected,
        network=network_info(connection),
    )


def _os(ua: str) -> str:
    if "android" in ua:
        return "android"
    if "iphone" in ua or "ipod" in ua:
        return "ios"
    if "ipad" in ua:
        return "ipados"
    if "windows" in ua:
        return "windows"
    if "cros" in ua:
        return "chromeos"
    if "macintosh" in ua or "mac os x" in ua:
        return "macos"
    if "linux" in ua or "x11" in ua:
        return "linux"
    return "unknown"


def _browser(ua: str) -> str:
    # Order matters: Edge and Samsung Internet also say "Chrome", iOS browsers say "Safari".
    if "edg/" in ua or "edga/" in ua or "edgios/" in ua:
        return "edge"
    if "firefox/" in ua or "fxios/" in ua:
        return "firefox"
    if "samsungbrowser/" in ua:
        return "samsung"
    if "chrome/" in ua or "crios/" in ua or "chromium/" in ua:
        return "chrome"
    if "safari/" in ua:
        return "safari"
    return "unknown"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
