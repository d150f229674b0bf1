"""Page side of tests/browser/test_mobile.py (and the Firefox part of
tests/e2e/test_mobile_e2e.py), called with ``pypage.call``.

The page has the fake Battery API of ``test_mobile.FAKE_BATTERY``
(``js.setFakeBattery(level, charging)``, ``js.setPageHidden(hidden)``) and a
fake camera. Every result is read back from the browser's own objects.

The battery live-switch test needs several calls on one page state (a
PowerManager and its stand-in targets, read between battery events): that
state lives in the module global ``_SWITCH`` from
:func:`battery_switch_start` until :func:`battery_switch_finish`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import js

from pyapp.browser import Connection
from pyapp.browser._ffi import live_proxies
from pyapp.browser.battery import Battery
from pyapp.browser.device import describe_profile, read_connection, read_device_profile
from pyapp.browser.loopback import connected_pair, loopback_pair
from pyapp.browser.media import LocalMedia, start_camera
from pyapp.browser.power import PowerManager

# ---- shared helpers: a loopback pair with the fake camera's video track on `a`


async def camera_pair() -> tuple[Connection, Connection, LocalMedia]:
    a, b = await connected_pair()
    media = await start_camera(audio=False)
    a.add_track(media.video_track, media.stream)
    return a, b, media


def video_sender(pc: Connection) -> Any:
    for sender in pc.get_senders():
        if sender.track and sender.track.kind == "video":
            return sender
    raise AssertionError(f"{pc!r} has no video sender")


def video_track(media: LocalMedia) -> Any:
    track = media.video_track
    if track is None:
        raise AssertionError("the camera gave no video track")
    return track


def sender_caps(pc: Connection) -> list[list[Any]]:
    enc = video_sender(pc).getParameters().encodings
    return [[getattr(e, "maxBitrate", None), getattr(e, "maxFramerate", None)] for e in enc]


def track_settings(track: Any) -> list[Any]:
    s = track.getSettings()
    return [s.width, s.height, round(s.frameRate)]


async def wait_for(pred: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def wait_stable(*pcs: Connection) -> None:
    await wait_for(lambda: all(p.signaling_state == "stable" for p in pcs)
                   and all(video_sender(p).getParameters().encodings.length > 0 for p in pcs[:1]))


# ---- device profile


def device_profile() -> dict[str, Any]:
    p = read_device_profile()
    return {"form": p.form_factor, "mobile": p.is_mobile, "by": p.detected_by,
            "touch": p.touch, "os": p.os, "browser": p.browser,
            "net": p.network.effective_type, "conn": read_connection(),
            "text": describe_profile(p)}


HIDE_OPTIONAL_APIS = """(() => {
    const keep = {};
    for (const k of ["userAgentData", "connection", "maxTouchPoints"]) {
        keep[k] = Object.getOwnPropertyDescriptor(Navigator.prototype, k);
        Object.defineProperty(Navigator.prototype, k, {get: () => undefined, configurable: true});
    }
    return keep;
})()"""

RESTORE_APIS = "(keep) => { for (const k in keep) Object.defineProperty(Navigator.prototype, k, keep[k]); }"


def profile_without_optional_apis() -> dict[str, Any]:
    """userAgentData, connection and maxTouchPoints hidden while the profile is read."""
    saved = js.eval(HIDE_OPTIONAL_APIS)
    try:
        p = read_device_profile()
        text = describe_profile(p)
    finally:
        js.eval(RESTORE_APIS)(saved)
    return {"by": p.detected_by, "mobile": p.is_mobile, "net": p.network.effective_type,
            "text": text, "restored": js.navigator.userAgentData.mobile}


# ---- mobile tuning of a real sender and track


async def mobile_options_tune_and_restore() -> dict[str, Any]:
    a, b, media = await camera_pair()
    track = media.video_track
    await wait_stable(a, b)
    before = {"caps": sender_caps(a), "track": track_settings(track)}
    await a.set_mobile_options(True)
    mobile = {"caps": sender_caps(a), "track": track_settings(track)}
    # The camera is restarted: the old track goes, a new one is added later and
    # gets the current (mobile) settings by itself.
    a.remove_track(video_sender(a))
    media.stop()
    media2 = await start_camera(audio=False)
    track2 = media2.video_track
    fresh = track_settings(track2)
    a.add_track(track2, media2.stream)
    await wait_for(lambda: a.signaling_state == "stable" and sender_caps(a) == [[128000, 15]])
    await wait_for(lambda: track_settings(track2) == [320, 240, 15])
    late = {"fresh": fresh, "track": track_settings(track2), "caps": sender_caps(a)}
    await a.set_mobile_options(False)
    desktop = {"caps": sender_caps(a), "track": track_settings(track2)}
    errors = [str(e) for e in a.media.errors]
    media.stop()
    media2.stop()
    a.close()
    b.close()
    return {"before": before, "mobile": mobile, "late": late, "desktop": desktop, "errors": errors}


async def caps_before_negotiation() -> dict[str, Any]:
    proxies_before = live_proxies()
    a, b = loopback_pair()
    media = await start_camera(audio=False)
    a.add_track(media.video_track, media.stream)
    empty_before = video_sender(a).getParameters().encodings.length
    await a.set_mobile_options(True)         # before any negotiation
    await a.wait_connected(10)
    await wait_for(lambda: sender_caps(a) == [[128000, 15]])
    out: dict[str, Any] = {"empty_before": empty_before, "caps": sender_caps(a),
                           "track": track_settings(media.video_track)}
    media.stop()
    a.close()
    b.close()
    out["leaked"] = live_proxies() - proxies_before   # the tuner's listeners went with a
    return out


async def mobile_outbound_rtp() -> dict[str, Any]:
    """Mobile caps on, then outbound-rtp read over ~3 s after the encoder settled."""
    a, b, media = await camera_pair()
    await wait_stable(a, b)
    await a.set_mobile_options(True)

    def outbound(stats: list[dict[str, Any]]) -> dict[str, Any]:
        for s in stats:
            if s.get("type") == "outbound-rtp" and s.get("kind") == "video":
                return s
        raise AssertionError(f"no outbound-rtp video entry in {stats!r}")

    await asyncio.sleep(2.5)                    # let the encoder settle on the new caps
    first = outbound(await a.get_stats_raw())
    fps_samples: list[Any] = []
    second = first
    for _ in range(6):
        await asyncio.sleep(0.5)
        second = outbound(await a.get_stats_raw())
        fps_samples.append(second.get("framesPerSecond"))
    bits = (second["bytesSent"] - first["bytesSent"]) * 8
    seconds = (second["timestamp"] - first["timestamp"]) / 1000
    out = {"width": second.get("frameWidth"), "height": second.get("frameHeight"),
           "fps": sorted(fps_samples), "bps": bits / seconds,
           "frames": second["framesEncoded"] - first["framesEncoded"], "seconds": seconds,
           "target": second.get("targetBitrate"), "cap": sender_caps(a)}
    media.stop()
    a.close()
    b.close()
    return out


# ---- battery policy, live


class _Poller:
    def __init__(self) -> None:
        self.interval: float | None = None
        self.calls = 0

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds
        self.calls += 1


class _Pool:
    def __init__(self) -> None:
        self.limits: list[Any] | None = None

    def reconfigure(self, *, max_size: int, idle_timeout: float) -> None:
        self.limits = [max_size, idle_timeout]


class _Mux:
    def __init__(self) -> None:
        self.paused: list[bool] | None = None

    def set_paused_priorities(self, *, bulk: bool, unreliable_low_priority: bool) -> None:
        self.paused = [bulk, unreliable_low_priority]


class _Switch:
    """One battery-switch run: a camera pair, its PowerManager and stand-in targets."""

    def __init__(self, pa: Connection, pb: Connection, media: LocalMedia, power: PowerManager) -> None:
        self.pa, self.pb, self.media, self.power = pa, pb, media, power
        self.poller, self.pool, self.mux = _Poller(), _Pool(), _Mux()
        self.paused_cb: list[list[bool]] = []
        for target in (self.poller, self.pool, self.mux):
            power.register(target)
        power.on_pause(lambda bulk, low: self.paused_cb.append([bulk, low]))

    def effects(self) -> dict[str, Any]:
        power = self.power
        return {"mode": str(power.mode), "battery": power.battery.describe(),
                "caps": sender_caps(self.pa), "track": track_settings(self.media.video_track),
                "interval": self.poller.interval, "pool": self.pool.limits, "mux": self.mux.paused,
                "cb": self.paused_cb[-1], "reason": power.settings.reason,
                "changes": power.battery.changes}


_SWITCH: _Switch | None = None


def _switch() -> _Switch:
    if _SWITCH is None:
        raise RuntimeError("battery_switch_start() was not called on this page")
    return _SWITCH


async def battery_switch_start() -> dict[str, Any]:
    """Discharging at 50 %: a camera pair under a PowerManager; the effects at the start."""
    global _SWITCH
    js.setFakeBattery(0.5, False)
    pa, pb, media = await camera_pair()
    await wait_stable(pa, pb)
    power = await PowerManager.open()
    _SWITCH = _Switch(pa, pb, media, power)
    await pa.set_battery_aware_options(power)
    return _SWITCH.effects()


async def battery_switch_step(level: float | None = None, charging: bool | None = None) -> dict[str, Any]:
    """Change the fake battery (None: unchanged); the mode decided in the event, then the effects."""
    run = _switch()
    power = run.power
    js.setFakeBattery(level, charging)    # fires the event(s) synchronously
    mode_now = str(power.mode)            # decided inside the event handler
    await power.settled()
    await wait_for(lambda: track_settings(run.media.video_track)[2]
                   == round(power.settings.video_max_framerate)
                   if power.settings.video_width else True)
    return dict(run.effects(), mode_now=mode_now)


def battery_switch_finish() -> dict[str, Any]:
    """Hide and show the page, then tear the run down; what the poller saw and the transitions."""
    global _SWITCH
    run = _switch()
    power = run.power
    js.setPageHidden(True)
    out: dict[str, Any] = {"interval": run.poller.interval, "visible": power.visible,
                           "mode": str(power.mode)}
    js.setPageHidden(False)
    out["back"] = run.poller.interval
    out["transitions"] = [[t.mode.value, t.trigger] for t in power.transitions]
    out["errors"] = power.target_errors
    run.media.stop()
    run.pa.close()
    run.pb.close()
    power.close()
    _SWITCH = None
    return out


async def battery_api_missing() -> dict[str, Any]:
    """No getBattery, then a getBattery that rejects: both are "unknown"; nothing leaks."""
    saved = js.Navigator.prototype.getBattery
    js.eval("delete Navigator.prototype.getBattery")
    try:
        before = live_proxies()
        missing = js.eval("typeof navigator.getBattery")
        power = await PowerManager.open()
        out: dict[str, Any] = {"missing": missing, "state": power.settings.battery_state,
                               "mode": str(power.mode), "battery": power.battery.describe(),
                               "available": power.battery.available, "reason": power.settings.reason}
        power.close()
        out["leaked"] = live_proxies() - before
    finally:
        js.Navigator.prototype.getBattery = saved
    # A getBattery that rejects (as in an insecure context) is "unknown" too.
    js.eval("Navigator.prototype.getBattery = () => "
            "Promise.reject(new DOMException('no', 'NotAllowedError'))")
    try:
        rejected = await Battery.open()
        out["rejected"] = rejected.describe()
    finally:
        js.Navigator.prototype.getBattery = saved
    return out


async def bad_battery_readings() -> dict[str, Any]:
    js.setFakeBattery(0.5, False)
    battery = await Battery.open()
    seen: list[Any] = []
    battery.events.on("change", seen.append)
    js.fakeBattery.level = float("nan")
    js.fakeBattery.dispatchEvent(js.Event.new("levelchange"))
    js.fakeBattery.level = 7
    js.fakeBattery.dispatchEvent(js.Event.new("levelchange"))
    js.setFakeBattery(0.4, False)
    out = {"bad": battery.bad_readings, "seen": [s.level for s in seen], "state": battery.describe()}
    battery.close()
    js.setFakeBattery(1, True)
    return out


def set_battery(level: float | None = None, charging: bool | None = None) -> None:
    """Change the fake battery (None: that property unchanged); its events fire at once."""
    js.setFakeBattery(level, charging)


# ---- Firefox (tests/e2e/test_mobile_e2e.py)


async def firefox_sender_caps() -> dict[str, Any]:
    """Mobile options on a camera sender: the caps and scale Firefox applied."""
    a, b = await connected_pair()
    media = await start_camera(audio=False)
    sender = a.add_track(media.video_track, media.stream)
    await a.set_mobile_options(True)
    for _ in range(100):
        enc = sender.getParameters().encodings
        if a.signaling_state == "stable" and enc.length and getattr(enc[0], "maxBitrate", None):
            break
        await asyncio.sleep(0.05)
    s = video_track(media).getSettings()
    enc = sender.getParameters().encodings
    out = {"caps": [getattr(e, "maxBitrate", None) for e in enc],
           "scale": [getattr(e, "scaleResolutionDownBy", None) for e in enc],
           "size": [s.width, s.height]}
    media.stop()
    a.close()
    b.close()
    return out

