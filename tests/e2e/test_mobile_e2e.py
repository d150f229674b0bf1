"""Mobile and power end to end: the real server and UI on emulated devices (desktop, Pixel 7, iPhone 13).

A video call between a desktop and a Pixel 7 through the page's own buttons: the
phone's video is tuned from its device profile alone, then follows its (fake)
battery live; a Safari-like iPhone 13 and a real Firefox have no Battery API.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.browser.test_mobile import open_page
from tests.conftest import PyPage, wait_until

pytestmark = pytest.mark.e2e

APP_PAGE = "tests.pyodide.app_page_cases"
MOBILE_PAGE = "tests.pyodide.mobile_cases"
"""The page side of these tests (real modules, ruff and mypy checked)."""


def device_args(playwright_instance: Any, name: str) -> dict[str, Any]:
    args = dict(playwright_instance.devices[name])
    args.pop("default_browser_type", None)
    return args


def video_state(page: PyPage) -> dict[str, Any]:
    """The only peer's video sender caps, track settings and outbound-rtp, and the power mode."""
    state: dict[str, Any] = page.call(f"{APP_PAGE}:video_state")
    return state


def card(page: PyPage) -> dict[str, str | None]:
    loc = page.page.locator
    return {"profile": loc("#device-profile").inner_text(),
            "battery": loc("#battery-state").inner_text(),
            "battery_state": loc("#battery-state").get_attribute("data-state"),
            "mode": loc("#power-mode").inner_text(),
            "mode_value": loc("#power-mode").get_attribute("data-mode")}


def close_pages(*pages: PyPage) -> None:
    for p in pages:
        foreign = p.foreign_requests()
        errors = [c for c in p.console if c.startswith("pageerror") or "pyapp: error" in c]
        p.page.context.close()
        assert not foreign, f"requests to other origins: {foreign}"
        assert not errors, errors


def test_phone_video_call_is_tuned_and_follows_the_battery(chromium, server, playwright_instance):
    room = "mobile-" + uuid.uuid4().hex[:10]
    desktop = open_page(chromium, server, f"/?room={room}", battery=(1.0, True))
    phone = open_page(chromium, server, f"/?room={room}", battery=(0.5, False),
                      **device_args(playwright_instance, "Pixel 7"))
    try:
        for p in (desktop, phone):
            wait_until(lambda p=p: p.page.locator("#peers li .state").all_inner_texts() == ["connected"],
                       timeout=30)
        # The device cards, before any call.
        d, m = card(desktop), card(phone)
        assert d["profile"] == "Desktop · Linux · Chrome"
        assert d["battery"] == "100% · charging" and d["mode_value"] == "normal"
        assert m["profile"] == "Phone · Android · Chrome · touch screen"
        assert m["battery"] == "50% · discharging" and m["battery_state"] == "discharging"
        assert m["mode_value"] == "normal" and "handheld device: mobile video caps" in m["mode"]

        # Both start the camera from the page; nobody sets any option.
        phone.page.locator("#video-start").tap()
        desktop.page.locator("#video-start").click()
        for p in (desktop, phone):
            wait_until(lambda p=p: p.page.locator("#video-stop").is_visible(), timeout=10)
            wait_until(lambda p=p: p.page.evaluate(
                "() => document.getElementById('remote-video').videoWidth"), timeout=20)
        wait_until(lambda: video_state(phone).get("caps") == [[128000, 15]], timeout=15)
        # The desktop shows the phone's 320x240 video (the phone's receive size is the
        # desktop encoder's choice while its bandwidth estimate ramps up, so not checked).
        assert desktop.page.evaluate("() => document.getElementById('remote-video').videoWidth") == 320

        # Media path: after ~5 s the phone's outbound-rtp is 320 wide, ≤ 15 fps, at the cap.
        first = video_state(phone)
        fps = []
        for _ in range(6):
            phone.page.wait_for_timeout(500)
            second = video_state(phone)
            fps.append(second["rtp"][0]["framesPerSecond"])
        fps.sort()
        rtp0, rtp1 = first["rtp"][0], second["rtp"][0]
        bps = (rtp1["bytesSent"] - rtp0["bytesSent"]) * 8 / ((rtp1["timestamp"] - rtp0["timestamp"]) / 1000)
        assert second["track"] == [320, 240, 15]
        assert rtp1["frameWidth"] == 320 and rtp1["frameHeight"] == 240
        # framesPerSecond is a one-second window: typically ≤ 15, never above 16.
        assert 0 < fps[len(fps) // 2] <= 15 and fps[-1] <= 16, fps
        frames = rtp1["framesEncoded"] - rtp0["framesEncoded"]
        assert frames / ((rtp1["timestamp"] - rtp0["timestamp"]) / 1000) <= 15.5
        assert rtp1["targetBitrate"] <= 128_000
        assert 20_000 < bps <= 128_000 * 1.12, (bps, rtp1)
        desk = video_state(desktop)
        assert desk["caps"] == [[2_500_000, 30]] and desk["track"] == [640, 480, 20]

        # Live switch: the level falls to 15 % while discharging → power saving, one event.
        phone.call(f"{MOBILE_PAGE}:set_battery", level=0.15, charging=False)
        assert phone.page.locator("#power-mode").get_attribute("data-mode") == "power_saving"
        assert "battery at 15% and discharging" in card(phone)["mode"]
        assert card(phone)["battery"] == "15% · discharging"
        wait_until(lambda: video_state(phone).get("caps") == [[64000, 10]], timeout=10)
        wait_until(lambda: video_state(phone)["track"] == [320, 240, 10], timeout=10)
        assert phone.call(f"{APP_PAGE}:stats_interval") == 5.0

        # Plugged in → normal mode, mobile caps again.
        phone.call(f"{MOBILE_PAGE}:set_battery", charging=True)
        assert card(phone)["mode_value"] == "normal"
        assert card(phone)["battery"] == "15% · charging"
        wait_until(lambda: video_state(phone).get("caps") == [[128000, 15]], timeout=10)
        wait_until(lambda: video_state(phone)["track"] == [320, 240, 15], timeout=10)
        assert phone.call(f"{APP_PAGE}:stats_interval") == 1.0

        # Stop: the tracks leave the connection (renegotiated), the camera is released.
        phone.page.locator("#video-stop").tap()
        wait_until(lambda: video_state(phone)["senders"] == 0, timeout=10)
        assert phone.page.locator("#video-start").is_visible()
        assert phone.page.evaluate("() => document.getElementById('local-video').srcObject") is None
    finally:
        close_pages(desktop, phone)


def test_iphone_without_battery_api_says_unknown(chromium, server, playwright_instance):
    """Real Safari has no Battery API: no error, state unknown, mode normal, the UI says so."""
    iphone = open_page(chromium, server, battery=None, **device_args(playwright_instance, "iPhone 13"))
    try:
        assert iphone.page.evaluate("() => typeof navigator.getBattery") == "undefined"
        c = card(iphone)
        assert c["profile"].startswith("Phone · iOS")
        assert c["battery"] == "unknown (no Battery API)"
        assert c["battery_state"] == "unknown"
        assert c["mode_value"] == "normal"
        assert "Battery API unavailable" in c["mode"]
    finally:
        close_pages(iphone)


def test_firefox_has_no_battery_api_and_works(firefox, server):
    ff = open_page(firefox, server, battery=None)
    try:
        c = card(ff)
        assert c["profile"] == "Desktop · Linux · Firefox"
        assert ff.page.locator("#network-estimate").inner_text() == "not reported by this browser"
        assert c["battery"] == "unknown (no Battery API)" and c["mode_value"] == "normal"
        # The camera works there too (fake stream pref) and the tuner caps a sender.
        result = ff.call(f"{MOBILE_PAGE}:firefox_sender_caps", timeout=30)
        assert result["caps"] == [128000]
        # Firefox's fake camera keeps 640x480 whatever the constraints; the encoder halves it.
        if result["size"] == [640, 480]:
            assert result["scale"] == [2.0]
        else:
            assert result["size"] == [320, 240] and result["scale"] in ([None], [1.0])
    finally:
        close_pages(ff)
