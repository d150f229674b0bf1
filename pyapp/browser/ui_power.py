"""The page's "Device & power" and "Video call" cards (ids in ``web/index.html``).

:func:`bind_power_ui` opens the page-wide
:class:`~pyapp.browser.power.PowerManager` and keeps the device card current:

* ``#device-profile`` -- the :class:`~pyapp.core.device.DeviceProfile` in words
  (``Phone · Android · Chrome · touch screen``; see :func:`device_line`);
* ``#network-estimate`` -- what ``navigator.connection`` estimates, said as the
  coarse, capped estimate it is (:func:`network_line`), or that the browser
  does not tell;
* ``#battery-state`` -- ``checking…`` until ``getBattery()`` answers, then
  ``15% · discharging`` or ``unknown (no Battery API)``;
* ``#power-mode`` -- ``normal``/``power saving`` and why (``data-mode`` holds
  the :class:`~pyapp.core.power.PowerMode` value).

The device line shows at once; the battery and power mode follow when the
page's :class:`~pyapp.browser.power.PowerManager` is open (a ``getBattery()``
that never answers delays only those two lines, never the page).

The video card's buttons start and stop a call: the camera and microphone
tracks go to every *verified* peer's connection in ``APP.peers`` (perfect
negotiation renegotiates; peers that connect later get them too), the local
camera shows in ``#local-video`` and the first peer's video in
``#remote-video``. Every peer connection's video follows the power policy, so
on a phone the mobile caps (128 kbit/s, 320x240 @ 15 fps) apply without any
setting, and power saving lowers them further.

Example (what ``app.start()`` does)::

    from pyapp.browser.ui_power import bind_power_ui
    ui = await bind_power_ui(APP)
    await ui.start_call()        # same as pressing "Start camera"
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import js
from pyodide.ffi import JsException, jsnull

from pyapp.browser._ffi import ProxyOwner, _report, is_null, spawn
from pyapp.browser.device import read_device_profile
from pyapp.browser.media import LocalMedia, start_camera
from pyapp.browser.power import PowerManager
from pyapp.core.device import DeviceProfile, NetworkInfo
from pyapp.exceptions import PyAppError

if TYPE_CHECKING:
    from pyapp.browser.app import App
    from pyapp.browser.connection import Connection

__all__ = ["SYNC_INTERVAL", "PowerUI", "bind_power_ui", "current_ui", "device_line", "network_line"]

#: Seconds between checks for new peers / remote video (cheap: no getStats).
SYNC_INTERVAL = 0.5

_UI: PowerUI | None = None


def _el(element_id: str) -> Any:
    el = js.document.getElementById(element_id)
    return None if is_null(el) else el


_OS = {"android": "Android", "ios": "iOS", "ipados": "iPadOS", "windows": "Windows",
       "macos": "macOS", "chromeos": "ChromeOS", "linux": "Linux"}
_BROWSER = {"chrome": "Chrome", "edge": "Edge", "firefox": "Firefox", "safari": "Safari",
            "samsung": "Samsung Internet"}
# effectiveType is a speed class from the browser's recent measurements ("4g" is the
# top class, also on a wired desktop), not the kind of network.
_SPEED = {"4g": "fast", "3g": "moderate", "2g": "slow", "slow-2g": "very slow"}


def device_line(profile: DeviceProfile) -> str:
    """``Phone · Android · Chrome · touch screen`` (unknown parts are left out)."""
    parts = [profile.form_factor.capitalize()]
    parts += [name for name in (_OS.get(profile.os), _BROWSER.get(profile.browser)) if name]
    if profile.touch:
        parts.append("touch screen")
    return " · ".join(parts)


def network_line(net: NetworkInfo) -> str:
    """``navigator.connection`` in words: a coarse estimate, capped, and said to be one.

    Browsers round ``downlink`` and cap it (Chromium at 10 Mbit/s) and report a
    speed class, so the line gives a class and a lower bound, never a measurement.
    """
    if net == NetworkInfo():
        return "not reported by this browser"
    bits = []
    if net.connection_type and net.connection_type not in ("unknown", "other", "none"):
        bits.append(net.connection_type)
    speed = _SPEED.get(net.effective_type or "")
    if speed is not None:
        estimate = f"{speed} link"
        if net.downlink_mbps is not None:
            capped = net.downlink_mbps >= 10
            estimate += f", at least {net.downlink_mbps:g} Mbit/s" if not capped else ", 10+ Mbit/s"
        bits.append(estimate + " (browser's rough estimate)")
    if net.save_data:
        bits.append("data saver on")
    return " · ".join(bits) or "not reported by this browser"


def current_ui() -> PowerUI | None:
    """The bound UI (None before :func:`bind_power_ui` ran)."""
    return _UI


class PowerUI:
    """Binds the device and video cards; ``media`` is the running call's camera, if any."""

    def __init__(self, app: App, power: PowerManager) -> None:
        self.app = app
        self.power = power
        self.media: LocalMedia | None = None
        self.renders = 0
        self._senders: dict[str, tuple[Connection, list[Any]]] = {}
        self._tuned: set[int] = set()
        self._watched: set[int] = set()
        self._remote_track_id: str | None = None
        self._owner = ProxyOwner("power ui")
        self._busy = False
        power.events.on("settings", lambda _s: self.render())
        start, stop = _el("video-start"), _el("video-stop")
        if start is not None and stop is not None:
            self._owner.listen(start, "click", lambda _e: spawn(self.start_call(), "starting the camera"))
            self._owner.listen(stop, "click", lambda _e: self.stop_call())
        self._task = spawn(self._sync_loop(), "video call peer sync")
        self.render()

    # ------------------------------------------------------------------ device card

    def render(self) -> None:
        """Show the profile, the battery and the power mode with its reason."""
        self.renders += 1
        profile_el, battery_el, mode_el = _el("device-profile"), _el("battery-state"), _el("power-mode")
        if profile_el is not None:
            profile_el.textContent = device_line(self.power.profile)
        net_el = _el("network-estimate")
        if net_el is not None:
            net_el.textContent = network_line(self.power.network)
        if battery_el is not None:
            battery_el.textContent = self.power.battery.describe()
            battery_el.dataset.state = self.power.settings.battery_state
        if mode_el is not None:
            mode_el.textContent = self.power.describe()
            mode_el.dataset.mode = self.power.mode.value

    # ------------------------------------------------------------------ video call

    @property
    def in_call(self) -> bool:
        return self.media is not None

    async def start_call(self) -> None:
        """Open camera + mic and send them to every connected peer (errors go to the banner)."""
        if self.media is not None or self._busy:
            return
        self._busy = True
        try:
            self.media = await start_camera()
        except PyAppError as exc:
            self.app.show_error(f"camera: {exc}")
            return
        finally:
            self._busy = False
        local = _el("local-video")
        if local is not None:
            local.srcObject = self.media.stream
        self._show_buttons()
        self.sync()

    def stop_call(self) -> None:
        """Stop the camera and take its tracks off every connection (which renegotiates)."""
        media, self.media = self.media, None
        for pc, senders in self._senders.values():
            if pc.closed:
                continue
            for sender in senders:
                try:
                    pc.remove_track(sender)
                except (JsException, PyAppError) as exc:
                    _report("removing a video call track", exc)
        self._senders.clear()
        if media is not None:
            media.stop()
        local = _el("local-video")
        if local is not None:
            local.srcObject = jsnull
        self._show_buttons()

    def _show_buttons(self) -> None:
        start, stop = _el("video-start"), _el("video-stop")
        if start is not None and stop is not None:
            start.hidden = self.media is not None
            stop.hidden = self.media is None

    def sync(self) -> None:
        """Follow ``APP.peers``: tune every connection, send the call, show remote video.

        Camera and microphone go only to verified peers: DTLS-SRTP alone does not
        stop a relay that terminated both connections from watching the call.
        """
        live_ids = set()
        for peer_id, peer in list(self.app.peers.items()):
            pc = peer.pc
            if pc.closed or not peer.verified:
                continue
            live_ids.add(peer_id)
            if id(pc) not in self._tuned:
                self._tuned.add(id(pc))
                self.power.add_video(pc.media)   # mobile / battery caps from the policy
                pc.events.on("connectionstatechange", self._forget_closed(pc))
            if id(pc) not in self._watched:
                self._watched.add(id(pc))
                pc.events.on("track", lambda _ev: self._show_remote())
            media = self.media
            if (media is not None and pc.connection_state == "connected"
                    and self._senders.get(peer_id, (None,))[0] is not pc):
                senders = [pc.add_track(track, media.stream) for track in media.tracks]
                self._senders[peer_id] = (pc, senders)
        for peer_id in list(self._senders):
            if peer_id not in live_ids:
                del self._senders[peer_id]
        self._show_remote()

    def _forget_closed(self, pc: Connection) -> Any:
        def on_state(state: str) -> None:
            if state == "closed":
                self.power.unregister(pc.media)
                self._tuned.discard(id(pc))
                self._watched.discard(id(pc))
                self._show_remote()
        return on_state

    def _remote_video_track(self) -> Any | None:
        for peer in list(self.app.peers.values()):
            if peer.pc.closed:
                continue
            for transceiver in peer.pc.get_transceivers():
                direction = transceiver.currentDirection
                track = transceiver.receiver.track
                if (not is_null(direction) and str(direction) in ("recvonly", "sendrecv")
                        and str(track.kind) == "video" and str(track.readyState) == "live"):
                    return track
        return None

    def _show_remote(self) -> None:
        element = _el("remote-video")
        if element is None:
            return
        track = self._remote_video_track()
        track_id = None if track is None else str(track.id)
        if track_id == self._remote_track_id:
            return
        self._remote_track_id = track_id
        element.srcObject = jsnull if track is None else js.MediaStream.new([track])

    async def _sync_loop(self) -> None:
        while not self._owner.closed:
            try:
                self.sync()
            except Exception as exc:  # report, keep following the peers
                _report("video call peer sync", exc)
            await asyncio.sleep(SYNC_INTERVAL)

    def close(self) -> None:
        """Stop the call and unbind (tests; the page keeps its UI for its lifetime)."""
        self.stop_call()
        self._task.cancel()
        self._owner.close()


async def bind_power_ui(app: App) -> PowerUI | None:
    """Bind the device and video cards of the page (None on a page without them)."""
    global _UI
    if _UI is not None:
        return _UI
    if _el("device-card") is None:
        return None
    profile_el, net_el = _el("device-profile"), _el("network-estimate")
    if profile_el is not None or net_el is not None:  # at once: no device API is awaited
        profile = read_device_profile()
        if profile_el is not None:
            profile_el.textContent = device_line(profile)
        if net_el is not None:
            net_el.textContent = network_line(profile.network)
    power = await PowerManager.shared()
    if _UI is not None:  # bound meanwhile by another task
        return _UI
    _UI = PowerUI(app, power)
    return _UI
