"""The page side of pyapp (only importable in Pyodide).

This is the only package that imports ``js`` or ``pyodide.ffi``. The front
door is :class:`Connection`: one connection to one peer, owning a thin
:class:`PeerConnection` wrapper and the features (multiplexer, media, power,
statistics, monitoring, authentication, encryption). Pools, dialers and the
signaling client build Connections. Each other module wraps one browser
interface or implements one feature; protocol logic lives in :mod:`pyapp.core`,
and the types both runtimes share (exceptions, ``Reliability``, ``Priority``,
statistics) are re-exported from :mod:`pyapp`.

``WebRtcConnection`` (= :class:`Connection`) and ``WebRtcDataChannel``
(= :class:`DataChannel`) are the original API's names, kept as documented aliases.

Example (in the page)::

    from pyapp.browser import connected_pair
    a, b = await connected_pair()
    orders = a.create_multiplexed_channel(label="orders")
    ...
    a.close(); b.close()
"""

from pyapp.browser.auth import AuthResult, SecurityState, authenticate
from pyapp.browser.connection import Connection, WebRtcConnection
from pyapp.browser.datachannel import DataChannel, WebRtcDataChannel
from pyapp.browser.loopback import connected_pair, loopback_pair
from pyapp.browser.media import MediaTuner
from pyapp.browser.monitor import QualityMonitor, answer_probes
from pyapp.browser.mux import MultiplexedChannel, MuxSession
from pyapp.browser.peer import PeerConnection
from pyapp.browser.pool import (
    ConnectionLimiter,
    ConnectionPool,
    Lease,
    LoopbackDialer,
    PooledConnection,
    SignalingDialer,
)
from pyapp.browser.power import PowerManager
from pyapp.browser.reconnect import ReconnectSupervisor
from pyapp.browser.secure import EncryptedChannel, receive_encrypted, send_encrypted
from pyapp.browser.signaling import SignalingClient
from pyapp.browser.stats import get_statistics

__all__ = [
    "AuthResult",
    "Connection",
    "ConnectionLimiter",
    "ConnectionPool",
    "DataChannel",
    "EncryptedChannel",
    "Lease",
    "LoopbackDialer",
    "MediaTuner",
    "MultiplexedChannel",
    "MuxSession",
    "PeerConnection",
    "PooledConnection",
    "PowerManager",
    "QualityMonitor",
    "ReconnectSupervisor",
    "SecurityState",
    "SignalingClient",
    "SignalingDialer",
    "WebRtcConnection",
    "WebRtcDataChannel",
    "answer_probes",
    "authenticate",
    "connected_pair",
    "get_statistics",
    "loopback_pair",
    "receive_encrypted",
    "send_encrypted",
]
