"""The signaling wire protocol: JSON messages over one WebSocket, sans-I/O.

Shared by the server (``web/server.py``) and the page's client
(``pyapp.browser.signaling``), so both sides agree on what is valid. Parsing
never raises anything but :class:`~pyapp.exceptions.SignalingError`.

Client → server::

    {"type": "join",   "room": "lobby", "peer_id": "optional-previous-id"}
    {"type": "signal", "to": "<peer id>", "data": {...}}      # relayed verbatim
    {"type": "leave"}
    {"type": "ping",   "id": 7}

Server → client::

    {"type": "welcome",     "room": "lobby", "peer_id": "<yours>", "peers": ["<id>", ...]}
    {"type": "peer-joined", "peer_id": "<id>"}
    {"type": "peer-left",   "peer_id": "<id>"}
    {"type": "signal",      "from": "<id>", "data": {...}}
    {"type": "pong",        "id": 7}
    {"type": "ice-servers", "ice_servers": [...], "expires": 1700000000}   # with TURN
    {"type": "error",       "code": "unknown-peer", "message": "...", "ref": "signal"}

JSON is strict both ways: ``NaN``/``Infinity`` (which browsers' ``JSON.parse``
rejects) and nesting deeper than :data:`MAX_DEPTH` are refused with their own
error codes. :data:`ERROR_CODES` lists every code the server sends, with the
close code that follows it when the server also closes the connection.

Example::

    >>> from pyapp.core.signaling import parse_client_message, Join
    >>> parse_client_message('{"type": "join", "room": "lobby"}')
    Join(room='lobby', peer_id=None)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pyapp.core.turn import parse_ice_servers
from pyapp.exceptions import InvalidArgumentError, SignalingMessageError, SignalingRefusedError

__all__ = [
    "ROOM_RE",
    "PEER_ID_RE",
    "ClientMessage",
    "Join",
    "Signal",
    "Leave",
    "Ping",
    "ServerMessage",
    "Welcome",
    "PeerJoined",
    "PeerLeft",
    "RelayedSignal",
    "Pong",
    "IceServers",
    "ErrorMessage",
    "parse_client_message",
    "parse_server_message",
    "encode",
    "TokenBucket",
    "MAX_DEPTH",
    "ERROR_CODES",
    "CLOSE_CODES",
    "close_reason",
    "parse_close_reason",
    "refusal",
    "refusal_from_close",
]

ROOM_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
PEER_ID_RE = re.compile(r"[A-Za-z0-9_\-]{4,64}")

MAX_DEPTH = 32
"""Deepest nesting of arrays/objects accepted in one message (the envelope counts as 1)."""

ERROR_CODES: dict[str, tuple[int | None, str]] = {
    # code: (WebSocket close code that follows, or None; when the server sends it)
    "bad-json": (None, "the message is not valid JSON"),
    "bad-utf8": (1007, "a text frame is not valid UTF-8"),
    "non-finite-number": (None, "the message holds NaN or Infinity"),
    "too-deep": (None, f"arrays/objects nest deeper than {MAX_DEPTH}"),
    "bad-message": (None, "valid JSON, but not a valid message (or a binary frame)"),
    "too-large": (1009, "a message is larger than the server's limit"),
    "protocol-error": (1002, "a WebSocket frame breaks RFC 6455"),
    "not-joined": (None, "a signal before joining a room"),
    "already-joined": (None, "a join while in a room"),
    "unknown-peer": (None, "a signal to a peer not in the room"),
    "room-full": (None, "the room holds its maximum of peers"),
    "rate-limited": (None, "over the messages/s of the connection or of its address; dropped"),
    "flooding": (1008, "rate-limited many times in a row"),
    "join-rate-limited": (None, "over the joins/min of the address"),
    "room-rate-limited": (None, "over the rooms created/min of the address"),
    "too-many-connections": (1008, "over the simultaneous connections of the address"),
    "slow-consumer": (1008, "the client does not read what it is sent"),
    "unavailable": (None, "the server's shared state (Redis) is unreachable; retry"),
    "evicted": (None, "another instance took this peer id; join again"),
    "shutting-down": (1001, "the server is stopping"),
}
"""Every ``error`` code the server sends, with the close code (if any) that follows it."""

CLOSE_CODES: dict[int, str] = {
    1001: "going away: the server is stopping",
    1002: "protocol error: a frame breaks RFC 6455",
    1007: "invalid data: a text frame is not valid UTF-8",
    1008: "policy violation: a limit was exceeded (the reason names it)",
    1009: "message too big",
}
"""Close codes the server uses; the close reason always starts with the error code."""


class ClientMessage:
    """Base of what a client sends to the server."""


@dataclass(frozen=True)
class Join(ClientMessage):
    """Client → server: enter a room (``{"type": "join", "room": ..., "peer_id": ...}``)."""

    room: str
    """Room name, 1-64 of ``A-Z a-z 0-9 _ . -``."""
    peer_id: str | None = None
    """The id this client had before a reconnect; the server reuses it if free."""


@dataclass(frozen=True)
class Signal(ClientMessage):
    """Client → server: relay ``data`` to the peer ``to`` in the same room."""

    to: str
    """Peer id of the recipient, in the same room."""
    data: dict[str, Any]
    """Opaque payload (SDP description or ICE candidate), relayed verbatim."""


@dataclass(frozen=True)
class Leave(ClientMessage):
    """Leave the current room."""


@dataclass(frozen=True)
class Ping(ClientMessage):
    """Client → server: keep-alive; answered with :class:`Pong`."""

    id: int | None = None
    """Echoed back in the pong."""


class ServerMessage:
    """Base of what the server sends to a client."""


@dataclass(frozen=True)
class Welcome(ServerMessage):
    """Server → client: the room was joined; who else is in it."""

    room: str
    """The room joined."""
    peer_id: str
    """This client's id in the room."""
    peers: tuple[str, ...]
    """The other peers already in the room."""
    ice_servers: tuple[dict[str, Any], ...] = ()
    """RTCIceServer dictionaries (TURN with short-lived credentials) for this peer's connections."""
    ice_expires: int | None = None
    """Unix time the credentials in ``ice_servers`` stop working (fresh ones come before)."""


@dataclass(frozen=True)
class PeerJoined(ServerMessage):
    """Server → client: another peer entered the room."""

    peer_id: str
    """The peer that joined."""


@dataclass(frozen=True)
class PeerLeft(ServerMessage):
    """Server → client: a peer left the room."""

    peer_id: str
    """The peer that left (or whose connection dropped)."""


@dataclass(frozen=True)
class RelayedSignal(ServerMessage):
    """Server → client: a signal another peer sent to this one (``{"type": "signal", "from": ...}``)."""

    sender: str
    """Peer id of the sender (``from`` on the wire)."""
    data: dict[str, Any]
    """The payload as the sender gave it."""


@dataclass(frozen=True)
class IceServers(ServerMessage):
    """Server → client: fresh TURN credentials, pushed before the previous ones expire."""

    ice_servers: tuple[dict[str, Any], ...]
    """RTCIceServer dictionaries replacing the previous list."""
    expires: int | None = None
    """Unix time these credentials stop working."""


@dataclass(frozen=True)
class Pong(ServerMessage):
    """Server → client: the answer to a :class:`Ping`."""

    id: int | None = None
    """The ping's id."""


@dataclass(frozen=True)
class ErrorMessage(ServerMessage):
    """Server → client: a request was refused; ``ref`` names the request type."""

    code: str
    """Machine-readable error code (``bad-json``, ``unknown-peer``, ``rate-limited`` ...)."""
    message: str
    """Human-readable explanation."""
    ref: str | None = None
    """The type of the client message that caused it, when known."""


def _reject_constant(name: str) -> Any:
    raise SignalingMessageError(
        "non-finite-number", f"message holds {name}, which is not JSON (send a string or null)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""Made once: ``json.loads``/``json.dumps`` with options build a new one per call (the server
parses and encodes every message a client sends)."""


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion on peer input)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def _load_object(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SignalingMessageError("bad-utf8", "message is not valid UTF-8") from None
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise SignalingMessageError(
            "too-deep", f"message nests arrays/objects deeper than {MAX_DEPTH}") from None
    except ValueError:
        raise SignalingMessageError("bad-json", "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise SignalingMessageError("bad-message", "message must be a JSON object")
    if _too_deep(obj, MAX_DEPTH):
        raise SignalingMessageError(
            "too-deep", f"message nests arrays/objects deeper than {MAX_DEPTH}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise SignalingMessageError("bad-message", "message has no string 'type'")
    return obj


def _bad(reason: str) -> SignalingMessageError:
    return SignalingMessageError("bad-message", reason)


def _optional_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"'{key}' must be an integer")
    return value


def _str_field(obj: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad(f"'{obj['type']}' needs a string '{key}'")
    if pattern is not None and not pattern.fullmatch(value):
        raise _bad(f"'{key}' {value[:80]!r} is not valid (allowed: {pattern.pattern})")
    return value


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse and validate one message from a client; raise SignalingError if bad."""
    obj = _load_object(text)
    kind = obj["type"]
    if kind == "join":
        peer_id = obj.get("peer_id")
        if peer_id is not None:
            peer_id = _str_field(obj, "peer_id", PEER_ID_RE)
        return Join(room=_str_field(obj, "room", ROOM_RE), peer_id=peer_id)
    if kind == "signal":
        data = obj.get("data")
        if not isinstance(data, dict):
            raise _bad("'signal' needs an object 'data'")
        return Signal(to=_str_field(obj, "to", PEER_ID_RE), data=data)
    if kind == "leave":
        return Leave()
    if kind == "ping":
        return Ping(id=_optional_int(obj, "id"))
    raise _bad(f"unknown message type {kind[:40]!r}")


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Parse one message from the server; raise SignalingError if bad."""
    obj = _load_object(text)
    kind = obj["type"]
    if kind == "welcome":
        peers = obj.get("peers")
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise _bad("'welcome' needs a list of peer ids")
        return Welcome(room=_str_field(obj, "room"), peer_id=_str_field(obj, "peer_id"),
                       peers=tuple(peers), ice_servers=parse_ice_servers(obj.get("ice_servers", [])),
                       ice_expires=_optional_int(obj, "ice_expires"))
    if kind == "peer-joined":
        return PeerJoined(peer_id=_str_field(obj, "peer_id"))
    if kind == "peer-left":
        return PeerLeft(peer_id=_str_field(obj, "peer_id"))
    if kind == "signal":
        data = obj.get("data")
        if not isinstance(data, dict):
            raise _bad("'signal' needs an object 'data'")
        return RelayedSignal(sender=_str_field(obj, "from"), data=data)
    if kind == "ice-servers":
        return IceServers(ice_servers=parse_ice_servers(obj.get("ice_servers")),
                          expires=_optional_int(obj, "expires"))
    if kind == "pong":
        return Pong(id=_optional_int(obj, "id"))
    if kind == "error":
        ref = obj.get("ref")
        return ErrorMessage(code=_str_field(obj, "code"), message=_str_field(obj, "message"),
                           ref=ref if isinstance(ref, str) else None)
    raise _bad(f"unknown server message type {kind[:40]!r}")


def encode(message: ClientMessage | ServerMessage) -> str:
    """Encode a message for the wire (the inverse of the two parsers)."""
    if isinstance(message, Join):
        obj: dict[str, Any] = {"type": "join", "room": message.room}
        if message.peer_id is not None:
            obj["peer_id"] = message.peer_id
    elif isinstance(message, Signal):
        obj = {"type": "signal", "to": message.to, "data": message.data}
    elif isinstance(message, Leave):
        obj = {"type": "leave"}
    elif isinstance(message, Ping):
        obj = {"type": "ping", "id": message.id}
    elif isinstance(message, Welcome):
        obj = {"type": "welcome", "room": message.room, "peer_id": message.peer_id,
               "peers": list(message.peers)}
        if message.ice_servers:
            obj["ice_servers"] = list(message.ice_servers)
            obj["ice_expires"] = message.ice_expires
    elif isinstance(message, PeerJoined):
        obj = {"type": "peer-joined", "peer_id": message.peer_id}
    elif isinstance(message, PeerLeft):
        obj = {"type": "peer-left", "peer_id": message.peer_id}
    elif isinstance(message, RelayedSignal):
        obj = {"type": "signal", "from": message.sender, "data": message.data}
    elif isinstance(message, IceServers):
        obj = {"type": "ice-servers", "ice_servers": list(message.ice_servers),
               "expires": message.expires}
    elif isinstance(message, Pong):
        obj = {"type": "pong", "id": message.id}
    elif isinstance(message, ErrorMessage):
        obj = {"type": "error", "code": message.code, "message": message.message}
        if message.ref is not None:
            obj["ref"] = message.ref
    else:
        raise TypeError(f"not a signaling message: {message!r}")
    try:
        return _ENCODER.encode(obj)
    except ValueError:
        raise InvalidArgumentError(
            "signal data holds NaN or Infinity, which JSON cannot carry: send a string or null"
        ) from None


def close_reason(code: str, text: str) -> str:
    """The close reason for error ``code``: ``"code: text"``, cut to the 123 bytes RFC 6455 allows."""
    reason = f"{code}: {text}".encode()[:123]
    return reason.decode("utf-8", "ignore")


def parse_close_reason(reason: str) -> tuple[str, str] | None:
    """``(code, text)`` from a close reason made by :func:`close_reason`; None if it names no code."""
    code, sep, text = reason.partition(": ")
    if not sep or code not in ERROR_CODES:
        return None
    return code, text


def refusal(message: ErrorMessage) -> SignalingRefusedError:
    """The typed error a client raises (or emits) for the server's ``error`` message."""
    return SignalingRefusedError(message.code, message.message, ref=message.ref)


def refusal_from_close(close_code: int, reason: str) -> SignalingRefusedError | None:
    """The typed error for a close the server explained; None for a plain close.

    The server's closes carry ``"<error code>: <text>"`` as their reason
    (:func:`close_reason`); a close without one (a normal close, a network drop:
    1006) is not a refusal.
    """
    parsed = parse_close_reason(reason)
    if parsed is None:
        return None
    return SignalingRefusedError(parsed[0], parsed[1], close_code=close_code)


class TokenBucket:
    """A rate limit with a burst allowance; time comes in as ``now``.

    It refills ``rate`` tokens per second up to ``burst`` and starts full. The
    server keeps one per connection (messages/s) and one per address and
    purpose in its in-memory limit store (``web.limits``).

    Example::

        >>> bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
        >>> [bucket.take(0.0) for _ in range(3)]
        [True, True, False]
        >>> bucket.take(0.5)
        True
        >>> bucket.wait(0.5, cost=2.0)   # seconds until two tokens are there
        1.0
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidArgumentError(
                f"a token bucket needs rate > 0 and burst >= 1, got rate={rate!r}, burst={burst!r}")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; return whether the message may pass."""
        elapsed = now - self._last
        self._last = now
        tokens = self._tokens
        if elapsed > 0:
            tokens = min(self.burst, tokens + elapsed * self.rate)
        if tokens >= cost:
            self._tokens = tokens - cost
            return True
        self._tokens = tokens
        return False

    def wait(self, now: float, cost: float = 1.0) -> float:
        """:meth:`take`, answered in seconds: 0.0 if taken, else how long until it could be."""
        if self.take(now, cost):
            return 0.0
        return (cost - self._tokens) / self.rate

    def full(self, now: float) -> bool:
        """Whether it has refilled to its burst by ``now`` (then it is the same as a new one)."""
        return self._tokens + max(0.0, now - self._last) * self.rate >= self.burst
