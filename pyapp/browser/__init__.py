"""Thin Python wrappers over the browser's WebRTC APIs (only importable in Pyodide).

This is the only package that imports ``js`` or ``pyodide.ffi``. Each module
wraps one browser interface; protocol logic lives in :mod:`pyapp.core`.

Example (in the page)::

    from pyapp.browser import PeerConnection
    a, b = PeerConnection(), PeerConnection()
    ...
"""

from pyapp.browser.datachannel import DataChannel, WebRtcDataChannel
from pyapp.browser.peer import PeerConnection, WebRtcConnection
from pyapp.browser.signaling import SignalingClient

__all__ = [
    "DataChannel",
    "PeerConnection",
    "SignalingClient",
    "WebRtcConnection",
    "WebRtcDataChannel",
]
