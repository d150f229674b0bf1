"""Video caps on a real PeerConnection, and the camera.

:class:`MediaTuner` makes bitrate / frame-rate / resolution caps take effect
on one :class:`~pyapp.browser.peer.PeerConnection`:

* every video ``RTCRtpSender`` gets ``encodings[i].maxBitrate`` and
  ``maxFramerate`` through ``getParameters()`` / ``setParameters()``;
* every video ``MediaStreamTrack`` it sends gets ``applyConstraints({width,
  height, frameRate})``.

Before negotiation a sender's ``encodings`` can be empty (Chromium fills them
in with the first local description) and ``setParameters`` may not add any,
so the tuner re-applies its caps whenever the connection may have changed
its senders: on ``negotiationneeded`` (a track was added) and whenever the
signaling state returns to ``stable`` (a negotiation finished). Tracks added
later therefore get the current caps without anyone asking.
:meth:`MediaTuner.restore` puts back the desktop caps and each track's own
resolution and frame rate (as read before the first constraint).

:func:`start_camera` wraps ``getUserMedia``; it raises
:class:`~pyapp.exceptions.UnsupportedFeatureError` where the browser has no
camera API (insecure contexts).

Example (in the page)::

    from pyapp.browser.media import MOBILE_CAPS, MediaTuner, start_camera
    media = await start_camera()
    pc.add_track(media.video_track, media.stream)
    tuner = MediaTuner(pc)
    await tuner.apply(MOBILE_CAPS)       # 128 kbit/s, 320x240 @ 15 fps
    ...
    await tuner.restore()                # desktop again
    media.stop()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import js
from pyodide.ffi import JsException

from pyapp.browser._ffi import await_js, is_null, js_object, spawn
from pyapp.core.power import PowerSettings
from pyapp.exceptions import BrowserError, PyAppError, UnsupportedFeatureError

if TYPE_CHECKING:
    from pyapp.browser.peer import PeerConnection

__all__ = [
    "DESKTOP_CAPS",
    "MOBILE_CAPS",
    "LocalMedia",
    "MediaTuner",
    "VideoCaps",
    "start_camera",
]


@dataclass(frozen=True)
class VideoCaps:
    """Caps for outgoing video; None leaves that knob as the browser / camera has it."""

    max_bitrate: int | None
    """``RTCRtpEncodingParameters.maxBitrate`` in bit/s."""
    max_framerate: float | None
    """``maxFramerate`` of every encoding, and the ceiling of the ``frameRate`` constraint."""
    width: int | None
    """``width`` constraint; None = the track's own width."""
    height: int | None
    """``height`` constraint; None = the track's own height."""

    @classmethod
    def from_settings(cls, settings: PowerSettings) -> VideoCaps:
        """The video part of a power decision."""
        return cls(settings.video_max_bitrate, settings.video_max_framerate,
                   settings.video_width, settings.video_height)


#: The mobile tuning: 128 kbit/s, 320x240 @ 15 fps.
MOBILE_CAPS = VideoCaps(max_bitrate=128_000, max_framerate=15.0, width=320, height=240)
#: Desktop: 2.5 Mbit/s (a 720p30 VP8 rate), at most 30 fps, the camera's own size.
DESKTOP_CAPS = VideoCaps(max_bitrate=2_500_000, max_framerate=30.0, width=None, height=None)


@dataclass
class _TrackOrigin:
    width: int | None
    height: int | None
    frame_rate: float | None


class MediaTuner:
    """Applies :class:`VideoCaps` to every video sender and track of one connection.

    ``caps`` is what is in force (None until the first :meth:`apply`);
    ``applied_senders`` counts successful ``setParameters`` calls and
    ``errors`` keeps failures (a sender that went away mid-call, ...), which
    are also reported to the page's error handler, never raised from an event.
    """

    def __init__(self, pc: PeerConnection) -> None:
        self.pc = pc
        self.caps: VideoCaps | None = None
        self.applied_senders = 0
        self.errors: list[PyAppError] = []
        self._origins: dict[str, _TrackOrigin] = {}
        self._lock = asyncio.Lock()
        pc.events.on("negotiationneeded", self._on_maybe_new_sender)
        pc.events.on("signalingstatechange", self._on_signaling)
        pc.events.on("connectionstatechange", self._on_state)

    # ------------------------------------------------------------------ public

    async def apply(self, caps: VideoCaps) -> None:
        """Make ``caps`` the current caps and apply them to every video sender and track."""
        self.caps = caps
        await self.reapply()

    async def restore(self) -> None:
        """Back to :data:`DESKTOP_CAPS` (the camera's own size, at most 30 fps)."""
        await self.apply(DESKTOP_CAPS)

    async def apply_caps(self, caps: VideoCaps) -> None:
        """Same as :meth:`apply`; the name :class:`~pyapp.browser.power.PowerManager` calls."""
        await self.apply(caps)

    async def reapply(self) -> None:
        """Apply the current caps again (to senders / tracks added since)."""
        if self.caps is None or self.pc.closed:
            return
        async with self._lock:
            caps = self.caps
            pairs = [(s, s.track) for s in self.pc.get_senders()
                     if not is_null(s.track) and str(s.track.kind) == "video"]
            # Two passes: tracks of one camera share a source, which cannot grow back
            # while a sibling still asks for the small size; the second pass catches those.
            for _ in range(2):
                for _sender, track in pairs:
                    await self._tune_track(track, caps)
            for sender, _track in pairs:
                await self._tune_sender(sender, caps)

    def sender_parameters(self) -> list[dict[str, Any]]:
        """``getParameters().encodings`` of every video sender (for checks and the UI)."""
        out = []
        for sender in self.pc.get_senders():
            track = sender.track
            if is_null(track) or str(track.kind) != "video":
                continue
            params = sender.getParameters()
            out.append({"track": str(track.id),
                        "encodings": [e.to_py() for e in params.encodings]})
        return out

    def close(self) -> None:
        """Stop following the connection; safe to call twice."""
        self.pc.events.off("negotiationneeded", self._on_maybe_new_sender)
        self.pc.events.off("signalingstatechange", self._on_signaling)
        self.pc.events.off("connectionstatechange", self._on_state)

    # ------------------------------------------------------------------ internals

    async def _tune_sender(self, sender: Any, caps: VideoCaps) -> None:
        for attempt in range(2):
            params = sender.getParameters()
            encodings = params.encodings
            if is_null(encodings) or encodings.length == 0 or is_null(sender.track):
                return  # not negotiated yet (the next stable state re-applies) or removed
            # A camera that cannot produce the wanted size (Firefox's fake camera ignores
            # width/height) is scaled down by the encoder instead.
            scale = _scale_down(sender.track, caps)
            changed = False
            for enc in encodings:
                changed |= _set_field(enc, "maxBitrate", caps.max_bitrate)
                changed |= _set_field(enc, "maxFramerate", caps.max_framerate)
                if scale is not None or not is_null(getattr(enc, "scaleResolutionDownBy", None)):
                    changed |= _set_field(enc, "scaleResolutionDownBy", scale or 1.0)
            if not changed:
                return
            try:
                await await_js(sender.setParameters(params))
                self.applied_senders += 1
                return
            except PyAppError as exc:
                # A negotiation that changed the encodings between our get and set
                # (InvalidModificationError / InvalidStateError): once more with fresh ones.
                if attempt == 1 and not is_null(sender.track) and not self.pc.closed:
                    self.errors.append(exc)

    async def _tune_track(self, track: Any, caps: VideoCaps) -> None:
        track_id = str(track.id)
        origin = self._origins.get(track_id)
        if origin is None:
            settings = track.getSettings()
            origin = self._origins[track_id] = _TrackOrigin(
                _int_or_none(getattr(settings, "width", None)),
                _int_or_none(getattr(settings, "height", None)),
                _float_or_none(getattr(settings, "frameRate", None)))
        width = caps.width if caps.width is not None else origin.width
        height = caps.height if caps.height is not None else origin.height
        rate = origin.frame_rate
        if caps.max_framerate is not None:
            rate = caps.max_framerate if rate is None else min(rate, caps.max_framerate)
        wanted: dict[str, Any] = {}
        if width is not None:
            wanted["width"] = width
        if height is not None:
            wanted["height"] = height
        if rate is not None:
            wanted["frameRate"] = rate
        if not wanted or str(track.readyState) == "ended":
            return
        current = track.getSettings()
        if all(_close(getattr(current, k, None), v) for k, v in wanted.items()):
            return
        try:
            await await_js(track.applyConstraints(js_object(wanted)))
        except PyAppError as exc:
            if str(track.readyState) != "ended":  # a camera stopped meanwhile is no error
                self.errors.append(exc)

    def _on_maybe_new_sender(self) -> None:
        if self.caps is not None:
            spawn(self.reapply(), "tuning a new video sender")

    def _on_signaling(self, state: str) -> None:
        if self.caps is not None and state == "stable":
            spawn(self.reapply(), "tuning video senders after negotiation")

    def _on_state(self, state: str) -> None:
        if state == "closed":
            self.close()


def _set_field(enc: Any, name: str, value: float | None) -> bool:
    """Set ``enc[name] = value`` (or delete it for None); True if it changed."""
    current: Any = getattr(enc, name, None)
    if value is None:
        if is_null(current):
            return False
        js.Reflect.deleteProperty(enc, name)
        return True
    if not is_null(current) and float(current) == float(value):
        return False
    setattr(enc, name, value)
    return True


def _scale_down(track: Any, caps: VideoCaps) -> float | None:
    """``scaleResolutionDownBy`` that brings the track's size to the caps (None: not needed)."""
    if is_null(track) or caps.width is None or caps.height is None:
        return None
    settings = track.getSettings()
    width = _int_or_none(getattr(settings, "width", None))
    height = _int_or_none(getattr(settings, "height", None))
    if not width or not height:
        return None
    factor = max(width / caps.width, height / caps.height)
    return round(factor, 3) if factor > 1.05 else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _close(current: Any, wanted: float) -> bool:
    return isinstance(current, int | float) and abs(float(current) - float(wanted)) < 0.5


# ---------------------------------------------------------------------- camera


@dataclass
class LocalMedia:
    """What :func:`start_camera` opened: the JS MediaStream and its tracks."""

    stream: Any
    """The JS ``MediaStream``."""

    @property
    def tracks(self) -> list[Any]:
        """Every JS ``MediaStreamTrack`` of the stream."""
        return list(self.stream.getTracks())

    @property
    def video_track(self) -> Any | None:
        tracks = list(self.stream.getVideoTracks())
        return tracks[0] if tracks else None

    @property
    def audio_track(self) -> Any | None:
        tracks = list(self.stream.getAudioTracks())
        return tracks[0] if tracks else None

    def stop(self) -> None:
        """Stop every track (the camera light goes off)."""
        for track in self.tracks:
            track.stop()


async def start_camera(*, video: bool | dict[str, Any] = True,
                       audio: bool | dict[str, Any] = True) -> LocalMedia:
    """``navigator.mediaDevices.getUserMedia({video, audio})``.

    Raises :class:`UnsupportedFeatureError` where there is no camera API (an
    insecure context, e.g. plain http on a LAN address) and
    :class:`~pyapp.exceptions.BrowserError` when the user or the browser
    refuses (``NotAllowedError``, ``NotFoundError``, ...).
    """
    devices: Any = getattr(js.navigator, "mediaDevices", None)
    if is_null(devices) or is_null(getattr(devices, "getUserMedia", None)):
        secure = bool(getattr(js.globalThis, "isSecureContext", False))
        raise UnsupportedFeatureError(
            "this browser has no camera API (navigator.mediaDevices.getUserMedia)"
            + ("" if secure else ": the page is not a secure context (use https or localhost)"))
    try:
        stream = await devices.getUserMedia(js_object({"video": video, "audio": audio}))
    except JsException as exc:
        name = str(getattr(exc, "name", "") or "Error")
        raise BrowserError(name, str(getattr(exc, "message", "") or exc)) from None
    return LocalMedia(stream)
