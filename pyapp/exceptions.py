"""Every error pyapp raises, in one place.

Errors are split by blame, as h11 does it:

* :class:`LocalProtocolError` -- the caller misused the API (sent on a closed
  channel, passed an oversize message, used an unknown channel id ...).
* :class:`RemoteProtocolError` -- the peer (or the signaling server) sent
  something bad. These carry a ``reason`` string that is safe to show and to
  send back to the peer in a reset frame.

Example::

    from pyapp.exceptions import PyAppError, RemoteProtocolError

    try:
        ...
    except RemoteProtocolError as exc:
        print("peer misbehaved:", exc.reason)
    except PyAppError as exc:
        print("pyapp error:", exc)
"""

from __future__ import annotations

__all__ = [
    "PyAppError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ConnectionClosedError",
    "MessageTooLargeError",
    "BrowserError",
    "UnsupportedFeatureError",
    "SignalingError",
    "ChannelResetError",
    "FrameError",
    "AuthenticationError",
    "DecryptionError",
    "PoolExhausted",
    "LimitExceeded",
    "DeliveryError",
]


class PyAppError(Exception):
    """Base class of every error raised by pyapp."""


class LocalProtocolError(PyAppError):
    """The local caller misused the API; nothing was sent or changed."""


class RemoteProtocolError(PyAppError):
    """The remote peer (or server) sent something that breaks the protocol.

    ``reason`` is a short, printable explanation meant for logs, for the UI and
    for the reset frame sent back to the peer.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionClosedError(LocalProtocolError):
    """The connection or channel is closed; the operation cannot proceed."""


class MessageTooLargeError(LocalProtocolError):
    """A message is larger than the negotiated maximum message size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BrowserError(PyAppError):
    """A browser API call failed; ``name`` is the JS error's name (e.g. ``InvalidStateError``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class UnsupportedFeatureError(PyAppError):
    """The browser lacks an API this operation needs."""


class SignalingError(RemoteProtocolError):
    """The signaling server rejected a message or sent a malformed one."""


class FrameError(RemoteProtocolError):
    """A multiplexing frame from the peer is malformed.

    ``channel_id`` names the logical channel the frame was for, when known.
    """

    def __init__(self, reason: str, channel_id: int | None = None) -> None:
        super().__init__(reason)
        self.channel_id = channel_id


class ChannelResetError(PyAppError):
    """A logical channel was reset (by the peer, or locally after a protocol error)."""

    def __init__(self, channel_id: int, reason: str) -> None:
        super().__init__(f"channel {channel_id} reset: {reason}")
        self.channel_id = channel_id
        self.reason = reason


class AuthenticationError(PyAppError):
    """Peer authentication failed; ``reason`` says why (bad signature, timeout, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecryptionError(RemoteProtocolError):
    """An encrypted message failed authentication, was replayed, or used an unknown key."""


class PoolExhausted(PyAppError):
    """The connection pool is full and no connection became idle before the deadline."""


class LimitExceeded(PyAppError):
    """The connection limiter's wait queue is full, or its deadline passed."""


class DeliveryError(PyAppError):
    """Messages could not be delivered; ``undelivered`` counts the ones lost to the caller."""

    def __init__(self, reason: str, undelivered: int = 0) -> None:
        super().__init__(f"{reason} ({undelivered} message(s) not delivered)")
        self.reason = reason
        self.undelivered = undelivered
