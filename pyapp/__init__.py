"""pyapp: Python in the browser (Pyodide) driving native WebRTC.

The package has two halves:

* :mod:`pyapp.core` -- sans-I/O protocol logic (framing, multiplexing, crypto
  envelope, pool, limiter, stats, quality, power policy). Runs in CPython and
  in Pyodide.
* :mod:`pyapp.browser` -- the page side: the connection facade
  (:class:`pyapp.browser.Connection`) and thin wrappers over browser APIs
  (RTCPeerConnection, RTCDataChannel, WebCrypto, Battery, getStats). Only
  importable in Pyodide.

This top level holds what works in both runtimes: every exception, the
channel options (:class:`Reliability`, :class:`Priority`) and the value types
that features report (statistics, quality, device, power). Their original API names
``DataChannelReliability`` and ``DataChannelPriority`` are documented aliases.

Example (in CPython or in the page)::

    import pyapp

    ticks = pyapp.Reliability.UNRELIABLE
    try:
        ...
    except pyapp.RemoteProtocolError as exc:
        print("peer misbehaved:", exc.reason)
"""

from pyapp.core.device import DeviceProfile, NetworkInfo
from pyapp.core.framing import Reliability
from pyapp.core.power import BatteryState, PowerMode, PowerSettings
from pyapp.core.quality import ConnectionQuality, QualityLabel
from pyapp.core.scheduler import Priority
from pyapp.core.stats import ChannelStatistics, ConnectionStatistics, StatisticsRates
from pyapp.exceptions import (
    AuthenticationError,
    BrowserError,
    ChannelResetError,
    ConnectionClosedError,
    DecryptionError,
    DeliveryError,
    DialTimeout,
    FrameError,
    IdentityChangedError,
    IdentityFormatError,
    InvalidArgumentError,
    InvalidKeyError,
    LimitExceeded,
    LocalProtocolError,
    MessageTooLargeError,
    OperationTimeout,
    PoolExhausted,
    ProbeError,
    PyAppError,
    RelayError,
    RemoteProtocolError,
    SendQueueFull,
    SignalingError,
    SignalingMessageError,
    SignalingRefusedError,
    UnsupportedFeatureError,
)

__version__ = "0.1.0"

DataChannelReliability = Reliability
"""The original API's name for :class:`Reliability` (``DataChannelReliability.UNRELIABLE`` ...)."""

DataChannelPriority = Priority
"""The original API's name for :class:`Priority` (``DataChannelPriority.HIGH`` ...)."""

__all__ = [
    # values and options (both runtimes)
    "BatteryState",
    "ChannelStatistics",
    "ConnectionQuality",
    "ConnectionStatistics",
    "DataChannelPriority",
    "DataChannelReliability",
    "DeviceProfile",
    "NetworkInfo",
    "PowerMode",
    "PowerSettings",
    "Priority",
    "QualityLabel",
    "Reliability",
    "StatisticsRates",
    # every exception (pyapp.exceptions)
    "AuthenticationError",
    "BrowserError",
    "ChannelResetError",
    "ConnectionClosedError",
    "DecryptionError",
    "DeliveryError",
    "DialTimeout",
    "FrameError",
    "IdentityChangedError",
    "IdentityFormatError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "LimitExceeded",
    "LocalProtocolError",
    "MessageTooLargeError",
    "OperationTimeout",
    "PoolExhausted",
    "ProbeError",
    "PyAppError",
    "RelayError",
    "RemoteProtocolError",
    "SendQueueFull",
    "SignalingError",
    "SignalingMessageError",
    "SignalingRefusedError",
    "UnsupportedFeatureError",
]
