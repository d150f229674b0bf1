"""classify_device against realistic user-agent strings."""

from __future__ import annotations

from typing import Any

import pytest

from pyapp.core.device import DeviceProfile, NetworkInfo, classify_device, network_info

pytestmark = pytest.mark.unit

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD_OLD = (
    "Mozilla/5.0 (iPad; CPU OS 12_5_7 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1"
)
MAC_SAFARI = (  # also what an iPad on iPadOS 13+ sends in its default desktop mode
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
FIREFOX_DESKTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0"
HEADLESS_CHROMIUM = (  # recorded in tests/fixtures/getstats/chromium-data.meta.json
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/156.0.0.0 Safari/537.36"
)
EDGE = CHROME_DESKTOP + " Edg/126.0.0.0"


@pytest.mark.parametrize(
    ("ua", "ua_mobile", "touch", "platform", "form", "mobile", "os", "browser", "rule"),
    [
        (CHROME_DESKTOP, False, 0, "Win32", "desktop", False, "windows", "chrome", "ua-data"),
        (CHROME_ANDROID, True, 5, "Linux armv8l", "phone", True, "android", "chrome", "ua-data"),
        (CHROME_ANDROID, None, 5, "Linux armv8l", "phone", True, "android", "chrome", "ua-string"),
        (CHROME_ANDROID_TABLET, False, 10, "Linux armv8l", "tablet", False, "android", "chrome",
         "ua-data"),
        (IPHONE_SAFARI, None, 5, "iPhone", "phone", True, "ios", "safari", "ua-string"),
        (IPAD_OLD, None, 5, "iPad", "tablet", True, "ipados", "safari", "ua-string"),
        (MAC_SAFARI, None, 5, "MacIntel", "tablet", True, "ipados", "safari", "touch-mac"),
        (MAC_SAFARI, None, 0, "MacIntel", "desktop", False, "macos", "safari", "default"),
        (MAC_SAFARI, None, 1, "MacIntel", "desktop", False, "macos", "safari", "default"),
        (FIREFOX_DESKTOP, None, 0, "Linux x86_64", "desktop", False, "linux", "firefox",
         "default"),
        (FIREFOX_ANDROID, None, 5, "Linux armv8l", "phone", True, "android", "firefox",
         "ua-string"),
        (HEADLESS_CHROMIUM, False, 0, "Linux x86_64", "desktop", False, "linux", "chrome",
         "ua-data"),
        (EDGE, False, 0, "Win32", "desktop", False, "windows", "edge", "ua-data"),
        # Chrome "request desktop site" on a phone: desktop UA, but userAgentData says mobile.
        (CHROME_DESKTOP, True, 5, "Linux armv8l", "phone", True, "windows", "chrome", "ua-data"),
        ("", None, None, None, "desktop", False, "unknown", "unknown", "default"),
    ],
)
def test_classify_table(
    ua: str, ua_mobile: bool | None, touch: int | None, platform: str | None, form: str,
    mobile: bool, os: str, browser: str, rule: str,
) -> None:
    profile = classify_device(ua, ua_mobile, touch, platform, None)
    assert (profile.form_factor, profile.is_mobile, profile.os, profile.browser,
            profile.detected_by) == (form, mobile, os, browser, rule)
    assert profile.touch == bool(touch)
    assert profile.handheld == (form != "desktop" or mobile)


def test_android_tablet_is_handheld_even_when_ua_data_says_not_mobile() -> None:
    profile = classify_device(CHROME_ANDROID_TABLET, False, 10, None, None)
    assert not profile.is_mobile and profile.handheld


def test_connection_fields() -> None:
    profile = classify_device(
        CHROME_ANDROID, True, 5, None,
        {"effectiveType": "2g", "saveData": True, "downlink": 0.25, "rtt": 1800,
         "type": "cellular"},
    )
    assert profile.network == NetworkInfo("2g", True, 0.25, 1800.0, "cellular")
    assert profile.network.slow


@pytest.mark.parametrize(
    "connection",
    [None, {}, {"effectiveType": 4, "saveData": "yes", "downlink": "fast", "rtt": -1},
     {"downlink": float("nan"), "rtt": True}],
)
def test_missing_or_malformed_connection(connection: dict[str, Any] | None) -> None:
    info = network_info(connection)
    assert info == NetworkInfo()
    assert not info.slow


def test_profile_is_frozen() -> None:
    profile: DeviceProfile = classify_device(CHROME_DESKTOP, False, 0, "Win32", None)
    with pytest.raises(AttributeError):
        profile.is_mobile = True  # type: ignore[misc]
