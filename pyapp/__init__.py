"""pyapp: Python in the browser (Pyodide) driving native WebRTC.

The package has two halves:

* :mod:`pyapp.core` -- sans-I/O protocol logic (framing, multiplexing, crypto
  envelope, pool, limiter, stats, quality, power policy). Runs in CPython and
  in Pyodide.
* :mod:`pyapp.browser` -- thin wrappers over browser APIs (RTCPeerConnection,
  RTCDataChannel, WebCrypto, Battery, getStats). Only importable in Pyodide.

Example (in the page's Pyodide)::

    from pyapp.browser import PeerConnection
    pc = PeerConnection()
    channel = pc.create_data_channel("chat")
"""

__version__ = "0.1.0"
