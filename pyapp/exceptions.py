"""Every error pyapp raises, in one place.

Errors are split by blame, as h11 does it:

* :class:`LocalProtocolError` -- the caller misused the API (sent on a closed
  channel, passed an oversize message, used an unknown channel id ...).
* :class:`RemoteProtocolError` -- the peer (or the signaling server) sent
  something bad. These carry a ``reason`` string that is safe to show and to
  send back to the peer in a reset frame.

Two cross-cutting types:

* :class:`InvalidArgumentError` -- a bad argument value (a negative size, an
  unknown priority ...). It is a :class:`LocalProtocolError` *and* a
  :class:`ValueError`, so ``except ValueError`` keeps working.
* :class:`OperationTimeout` -- something did not finish in time (a dial, an
  authentication, a wait for a state). It is a :class:`TimeoutError` too, so
  ``except TimeoutError`` (and ``asyncio.TimeoutError``) catches it; it is not
  a :class:`LocalProtocolError`: nobody misused anything.

Every message says what happened and what the caller can do about it.

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

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation; exceptions.py imports nothing at run time
    from pyapp.core.security.identity import TrustResult

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
    "InvalidArgumentError",
    "OperationTimeout",
    "DialTimeout",
    "ProbeError",
    "IdentityChangedError",
    "InvalidKeyError",
    "IdentityFormatError",
    "SignalingMessageError",
    "SignalingRefusedError",
    "RelayError",
    "SendQueueFull",
    "SignalingServerError",
    "RoomFull",
    "UnknownPeer",
    "BrokerUnavailable",
    "SignalingUnreachableError",
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
    """Peer authentication failed; ``reason`` is a code (see pyapp.core.security.reasons.AuthReason), ``str(exc)`` says what happened and what to do."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason


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


class InvalidArgumentError(LocalProtocolError, ValueError):
    """An argument has a value the API does not accept; the message names it and the valid range.

    Raised before anything is sent or changed. Also a :class:`ValueError`.
    """


class OperationTimeout(PyAppError, TimeoutError):
    """An operation did not complete within its deadline (``timeout`` seconds).

    Also a :class:`TimeoutError`. ``operation`` names what timed out.
    """

    def __init__(self, message: str, *, operation: str = "", timeout: float | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.timeout = timeout


class DialTimeout(OperationTimeout):
    """A dial to a peer did not connect within ``timeout`` seconds; ``peer_id`` names the peer."""

    def __init__(self, peer_id: str, timeout: float) -> None:
        super().__init__(
            f"dial to {peer_id!r} did not connect within {timeout} s; check that the peer is "
            "online and reachable (TURN may be needed), or raise dial_timeout",
            operation="dial", timeout=timeout)
        self.peer_id = peer_id


class ProbeError(RemoteProtocolError):
    """The peer sent a malformed probe, or an echo for a ping never sent."""


class IdentityChangedError(AuthenticationError):
    """A known contact (or PeerId) presented a different key: possibly an impostor.

    ``previous`` is the PeerId on record, ``presented`` the one the peer proved.
    """

    def __init__(self, reason: str, trust: TrustResult, message: str | None = None) -> None:
        super().__init__(reason, message)
        self.trust = trust
        self.presented = trust.peer_id
        self.previous = trust.previous


class InvalidKeyError(RemoteProtocolError):
    """Peer-supplied key bytes are not a valid key (wrong length, not on the curve, ...).

    Implementations raise it from :meth:`Crypto.ecdh_derive` (also for an
    all-zero X25519 result) and :meth:`Crypto.import_signing_key`.
    """


class IdentityFormatError(LocalProtocolError):
    """A stored identity or trust store does not parse or is inconsistent."""


class SignalingMessageError(SignalingError):
    """A signaling message does not parse or is not valid; ``code`` says which rule it broke.

    Codes: ``bad-json``, ``bad-utf8``, ``non-finite-number``, ``too-deep``,
    ``bad-message`` (valid JSON, but not a valid message).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class SignalingRefusedError(SignalingError):
    """The signaling server refused a request or closed the connection, and said why.

    ``code`` is machine-readable (``rate-limited``, ``too-many-connections``,
    ``room-full``, ``flooding``, ``too-large``, ``slow-consumer`` ...; docs/signaling.md
    lists them), ``text`` is the server's explanation, ``ref`` the type of the
    request it answers (or None), ``close_code`` the WebSocket close code when the
    server closed the connection (else None).
    """

    def __init__(self, code: str, text: str, ref: str | None = None,
                 close_code: int | None = None) -> None:
        where = f" (closed the connection, code {close_code})" if close_code is not None else ""
        super().__init__(f"the signaling server refused{where}: {code}: {text}")
        self.code = code
        self.text = text
        self.ref = ref
        self.close_code = close_code


class RelayError(PyAppError):
    """A TURN/STUN server refused or did not answer (the page's ``icecandidateerror``).

    ``url`` names the relay (``turn:host:port?transport=udp``), ``error_code``
    is the STUN error code (401 = the relay refused the credentials; 701 = no
    answer), ``error_text`` the browser's reason phrase.
    """

    def __init__(self, url: str, error_code: int, error_text: str = "") -> None:
        if error_code == 401:
            hint = ("the relay refused the credentials: the signaling server's TURN secret "
                    "(--turn-secret or PYAPP_TURN_SECRET) must be coturn's --static-auth-secret, "
                    "and both clocks must agree (the credentials carry their expiry)")
        elif error_code == 701:
            hint = ("the relay did not answer: check the URL and that its port is open "
                    "(UDP, or TCP with ?transport=tcp) from this network")
        else:
            hint = "the relay refused the request; its log says why"
        text = f" {error_text.strip().rstrip('.')}" if error_text.strip() else ""
        super().__init__(f"TURN relay {url}: error {error_code}{text}: {hint}")
        self.url = url
        self.error_code = error_code
        self.error_text = error_text


class SendQueueFull(LocalProtocolError):
    """``send`` on a reliable logical channel whose send queue is full.

    Nothing was queued. Wait for the multiplexer's SendWindowOpened event for
    that channel (the browser's ``MultiplexedChannel.send`` does this for you),
    or check ``can_send`` first. Raised by :class:`pyapp.core.mux.Multiplexer`.
    """

    def __init__(self, channel_id: int, size: int, queued: int, limit: int) -> None:
        super().__init__(
            f"channel {channel_id}: send queue full ({queued} bytes queued, "
            f"limit {limit}, message {size} bytes): wait for SendWindowOpened, then send again"
        )
        self.channel_id = channel_id
        self.size = size
        self.queued = queued
        self.limit = limit


# --------------------------------------------------------------------------- signaling server side
# Raised by the signaling server's brokers (web/broker.py, web/redis_broker.py); the server
# turns each into a refusal the client receives (room-full, unknown-peer, unavailable).


class SignalingServerError(PyAppError):
    """A signaling broker could not do what a client asked; the server refuses the request.

    The message is safe to send to that client: it says what happened and what to do.
    """


class RoomFull(SignalingServerError, LimitExceeded):
    """The room has reached its peer limit: join another room, or wait for a peer to leave."""


class UnknownPeer(SignalingServerError):
    """The relay target is not in the sender's room (it left, or never joined): check the id."""


class BrokerUnavailable(SignalingServerError):
    """The shared state behind the broker (Redis) cannot be reached; try again later."""


class SignalingUnreachableError(SignalingError, ConnectionError):
    """The signaling WebSocket closed before it opened: the server is down, or the URL is wrong.

    ``url`` is the address tried, ``close_code`` the browser's close code (1006: no
    connection was made), ``close_reason`` its reason text. Also a :class:`ConnectionError`.
    """

    def __init__(self, url: str, close_code: int, close_reason: str = "") -> None:
        why = f": {close_reason.strip()}" if close_reason.strip() else ""
        super().__init__(
            f"could not reach the signaling server at {url} (close code {close_code}{why}): "
            "is it running, and is the address right? Try again once it is up")
        self.url = url
        self.close_code = close_code
        self.close_reason = close_reason
