"""Read ``navigator`` into a :class:`~pyapp.core.device.DeviceProfile`.

The classification rules live in :func:`pyapp.core.device.classify_device`;
this module only gathers its inputs and tolerates every missing API:
``navigator.userAgentData`` (Chromium only), ``navigator.connection`` (no
Safari, no Firefox), ``maxTouchPoints`` and ``platform``. Nothing here raises
because a browser lacks an API -- the missing value is passed on as None.

Example (in the page)::

    from pyapp.browser.device import read_device_profile
    profile = read_device_profile()
    if profile.handheld:
        print("phone or tablet:", profile.os, profile.network.effective_type)
"""

from __future__ import annotations

from typing import Any

import js
from pyodide.ffi import JsException

from pyapp.browser._ffi import is_null
from pyapp.core.device import DeviceProfile, classify_device, network_info

__all__ = ["connection_object", "describe_profile", "read_connection", "read_device_profile"]

_CONNECTION_FIELDS = ("effectiveType", "saveData", "downlink", "rtt", "type")


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` with undefined, null, a missing attribute or a throwing getter as None."""
    if is_null(obj):
        return None
    try:
        value = getattr(obj, name, None)
    except JsException:
        return None  # a getter that throws (e.g. a half-implemented API) counts as missing
    return None if is_null(value) else value


def connection_object() -> Any | None:
    """The JS ``navigator.connection`` (NetworkInformation), or None where it is missing."""
    return _get(_get(js, "navigator"), "connection")


def read_connection() -> dict[str, Any] | None:
    """``navigator.connection``'s fields as a dict (None when the API is missing).

    Only JS primitives are kept (str / bool / number); anything else is dropped,
    and :func:`pyapp.core.device.network_info` validates the rest.
    """
    conn = connection_object()
    if conn is None:
        return None
    out: dict[str, Any] = {}
    for name in _CONNECTION_FIELDS:
        value = _get(conn, name)
        if isinstance(value, str | bool | int | float):
            out[name] = value
    return out


def read_device_profile() -> DeviceProfile:
    """Classify this browser from ``navigator`` (never raises for a missing API)."""
    nav = _get(js, "navigator")
    ua = _get(nav, "userAgent")
    ua_data = _get(nav, "userAgentData")
    mobile = _get(ua_data, "mobile")
    touch = _get(nav, "maxTouchPoints")
    platform = _get(nav, "platform")
    return classify_device(
        ua if isinstance(ua, str) else "",
        mobile if isinstance(mobile, bool) else None,
        int(touch) if isinstance(touch, int | float) and not isinstance(touch, bool) else None,
        platform if isinstance(platform, str) else None,
        read_connection(),
    )


def describe_profile(profile: DeviceProfile) -> str:
    """One line for the UI, e.g. ``phone · android · chrome · touch · 4g ~10 Mbit/s``."""
    parts = [profile.form_factor, profile.os, profile.browser]
    if profile.touch:
        parts.append("touch")
    parts.append(f"mobile={'yes' if profile.is_mobile else 'no'} (by {profile.detected_by})")
    net = profile.network
    if net == network_info(None):
        parts.append("network: unknown (no Network Information API)")
    else:
        bits = [net.effective_type or "?"]
        if net.downlink_mbps is not None:
            bits.append(f"~{net.downlink_mbps:g} Mbit/s")
        if net.save_data:
            bits.append("Save-Data")
        parts.append("network: " + " ".join(bits))
    return " · ".join(parts)
