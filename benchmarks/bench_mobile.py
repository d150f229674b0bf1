"""Mobile tuning and power saving figures (issue 6), through Chromium's fake camera.

* ``video_{mobile,saving,desktop}_kbps`` / ``_fps`` / ``_width``: what outbound-rtp
  shows for one loopback video call with the mobile caps (128 kbit/s, 320x240 @
  15), the power-saving caps (64 kbit/s, 320x240 @ 10) and the desktop caps
  (2.5 Mbit/s, the camera's own 640x480 @ 20): payload bit/s over a 4 s window
  after 2 s of settling, all three in one page, one after the other.
* ``battery_event_to_caps_ms``: a fake ``levelchange`` to 15 % → the mode flips
  inside the event handler, and this long until ``setParameters`` and
  ``applyConstraints`` have both resolved (median of 10 low/high switches).
* ``battery_event_decide_us``: the Python cost of one ``levelchange`` event as the
  page handles it (the page's own manager re-renders the device card, plus one
  bare manager deciding), mean over 200 events.
"""

from __future__ import annotations

import json
from typing import Any

from tests.browser.test_mobile import FAKE_BATTERY
from tests.conftest import PAGE_TESTS_ROOT

# The page-side helpers the figures use, from the tests' own page module.
SETUP = f"""
import asyncio, json, sys, js
if {PAGE_TESTS_ROOT!r} not in sys.path:
    sys.path.insert(0, {PAGE_TESTS_ROOT!r})
from tests.pyodide.mobile_cases import camera_pair, track_settings, wait_for, wait_stable
"""

MEASURE = """
async def _measure(caps):
    from pyapp.browser.media import VideoCaps
    await a.media.apply(caps)
    def outbound(stats):
        return [s for s in stats if s.get("type") == "outbound-rtp" and s.get("kind") == "video"][0]
    await asyncio.sleep(2.0)
    first = outbound(await a.get_stats_raw())
    await asyncio.sleep(4.0)
    second = outbound(await a.get_stats_raw())
    seconds = (second["timestamp"] - first["timestamp"]) / 1000
    return json.dumps({
        "kbps": (second["bytesSent"] - first["bytesSent"]) * 8 / seconds / 1000,
        "fps": (second["framesEncoded"] - first["framesEncoded"]) / seconds,
        "width": second.get("frameWidth", 0),
        "limit": second.get("qualityLimitationReason", "?")})
"""

SWITCH = """
import statistics
from pyapp.browser.power import PowerManager
power = await PowerManager.open()
await a.set_battery_aware_options(power)
lat = []
for i in range(10):
    level = 0.15 if i % 2 == 0 else 0.9
    t0 = js.performance.now()
    js.setFakeBattery(level, False)
    await power.settled()
    want = min(20, round(power.settings.video_max_framerate))  # the fake camera runs at 20
    await wait_for(lambda: track_settings(media.video_track)[2] == want)
    lat.append(js.performance.now() - t0)
bare = await PowerManager.open()
t0 = js.performance.now()
for i in range(200):
    js.setFakeBattery(0.15 if i % 2 == 0 else 0.9, False)
per_event_us = (js.performance.now() - t0) * 1000 / 200
bare.close(); power.close()
json.dumps({"lat": statistics.median(lat), "decide": per_event_us, "decisions": bare.decisions})
"""


def run(ctx: Any) -> dict[str, float]:
    context = ctx.chromium.new_context(permissions=["camera", "microphone"])
    context.add_init_script("globalThis.fakeBatteryInit = [0.9, false];" + FAKE_BATTERY)
    context.set_default_timeout(600_000)
    from tests.conftest import PyPage

    page = PyPage(context.new_page(), ctx.server.url).open()
    out: dict[str, float] = {}
    try:
        page._sync_test_modules()
        page.py(SETUP)
        page.py(MEASURE)
        page.py("a, b, media = await camera_pair()\nawait wait_stable(a, b)")
        # Desktop last: a fresh call's bandwidth estimate starts near 300 kbit/s and
        # ramps up, which would hold the uncapped desktop video back.
        for name, caps in (("mobile", "VideoCaps(128_000, 15.0, 320, 240)"),
                           ("saving", "VideoCaps(64_000, 10.0, 320, 240)"),
                           ("desktop", "VideoCaps(2_500_000, 30.0, None, None)")):
            r = json.loads(page.py(f"from pyapp.browser.media import VideoCaps\nawait _measure({caps})"))
            out[f"video_{name}_kbps"] = r["kbps"]
            out[f"video_{name}_fps"] = r["fps"]
            out[f"video_{name}_width"] = r["width"]
            ctx.note(f"{name}: {r['width']} wide, {r['fps']:.1f} fps, {r['kbps']:.0f} kbit/s "
                     f"(quality limited by: {r['limit']})")
        switch = page.pyjson(SWITCH)
        out["battery_event_to_caps_ms"] = switch["lat"]
        out["battery_event_decide_us"] = switch["decide"]
        ctx.note(f"battery event → caps applied: {switch['lat']:.0f} ms (median); "
                 f"decision per event {switch['decide']:.0f} µs")
        page.py("media.stop(); a.close(); b.close()")
    finally:
        context.close()
    return out
