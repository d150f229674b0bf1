"""Launching the local browsers with the flags that work offline here (see shared/BROWSER-FACTS.md)."""

from __future__ import annotations

import os
from typing import Any

from build import find_chromium, find_firefox

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebRTC between pages/processes on this machine: real host candidates, loopback allowed.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    # The fake camera (640x480) for the mobile-tuning tests.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Keep timers running in background tabs of the e2e tests.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]

FIREFOX_PREFS: dict[str, Any] = {
    "media.navigator.permission.disabled": True,
    "media.navigator.streams.fake": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "network.captive-portal-service.enabled": False,
    "app.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
}


def chromium_path() -> str | None:
    """The Chromium ``build.py test`` found or installed ($CHROMIUM, Debian's, Playwright's)."""
    return find_chromium()


def firefox_path() -> str | None:
    """Firefox ESR ($FIREFOX or Debian's), or None."""
    return find_firefox()


def launch_chromium(playwright: Any) -> Any:
    path = chromium_path()
    if path is None:
        raise RuntimeError("no Chromium: run `python3 build.py test`, or set $CHROMIUM")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


def launch_firefox(playwright: Any) -> Any:
    path = firefox_path()
    if path is None:
        return None
    os.environ.setdefault("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")
    return playwright.firefox.launch(channel="moz-firefox", executable_path=path, headless=True,
                                     firefox_user_prefs=FIREFOX_PREFS)
