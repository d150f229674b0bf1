"""TURN REST credentials and ICE-server lists, sans-I/O.

The signaling server hands each peer short-lived TURN credentials in the style
coturn checks with ``--use-auth-secret --static-auth-secret`` (the TURN REST
API, draft-uberti-behave-turn-rest-00 §2.2):

* username ``<expiry unix time>:<peer id>``;
* password ``base64(HMAC-SHA1(secret, username))``.

coturn recomputes the password from the username and its copy of the secret and
refuses the allocation with 401 once the expiry has passed. It checks them only
when a TURN session starts: an allocation made with valid credentials lives on
after they expire, but a new allocation (a new connection, an ICE restart)
needs fresh ones. The page therefore keeps the newest list the server sent.

Both sides share this module: the server builds the lists, the page validates
what the server sent before handing it to ``RTCPeerConnection`` (a list the
browser would reject with a TypeError is refused here with a clear message).
No clock is read: time comes in as ``now``.

Example::

    >>> from pyapp.core.turn import rest_credentials, expiry_of
    >>> creds = rest_credentials("s3cret", "peer-1", expires=1700000000)
    >>> creds.username, creds.credential
    ('1700000000:peer-1', 'rCFVLvIwlVfR84C5QMSLI2HmoLo=')
    >>> expiry_of(creds.username)
    1700000000
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from pyapp.exceptions import SignalingMessageError

__all__ = [
    "TURN_URL_RE",
    "TurnCredentials",
    "rest_credentials",
    "expiry_of",
    "check_turn_url",
    "ice_server_entry",
    "parse_ice_servers",
    "refresh_time",
    "MAX_ICE_SERVERS",
]

# RFC 7064 (stun/stuns) and RFC 7065 (turn/turns) URIs as RTCPeerConnection takes them.
TURN_URL_RE = re.compile(
    r"(?P<scheme>turns?|stuns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?")

MAX_ICE_SERVERS = 8
"""At most this many ICE-server entries are accepted from a server."""
_MAX_FIELD = 512


@dataclass(frozen=True)
class TurnCredentials:
    """One peer's time-limited TURN credentials."""

    username: str
    """``<expiry unix time>:<peer id>``."""
    credential: str
    """``base64(HMAC-SHA1(secret, username))``."""
    expires: int
    """Unix time after which the relay refuses new allocations with them."""


def rest_credentials(secret: str, peer_id: str, expires: int) -> TurnCredentials:
    """Credentials for ``peer_id`` valid until ``expires`` (unix seconds)."""
    if not secret:
        raise ValueError("the TURN secret is empty: give the same secret to coturn and the server")
    if ":" in peer_id:
        # coturn takes the text before the first colon as the expiry.
        raise ValueError(f"peer id {peer_id!r} must not contain ':'")
    username = f"{int(expires)}:{peer_id}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"), int(expires))


def expiry_of(username: str) -> int | None:
    """The expiry a REST username carries, or None if it is not one."""
    head, sep, _ = username.partition(":")
    if not sep or not head.isdigit():
        return None
    return int(head)


def check_turn_url(url: str) -> str:
    """Return ``url`` if it is a valid ``turn:``/``turns:``/``stun:`` URL, else raise ValueError."""
    match = TURN_URL_RE.fullmatch(url)
    if match is None:
        raise ValueError(f"{url!r} is not a TURN/STUN URL: use turn:HOST:PORT[?transport=udp|tcp]")
    if match["scheme"].startswith("stun") and match["transport"]:
        raise ValueError(f"{url!r}: stun: URLs take no ?transport= (RFC 7064)")
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{url!r}: port out of range")
    return url


def ice_server_entry(urls: tuple[str, ...] | list[str], creds: TurnCredentials) -> dict[str, Any]:
    """The RTCIceServer dictionary for ``urls`` with ``creds``."""
    return {"urls": list(urls), "username": creds.username, "credential": creds.credential}


def _bad(reason: str) -> SignalingMessageError:
    return SignalingMessageError("bad-message", reason)


def _check_string(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_FIELD:
        raise _bad(f"ICE server {what} must be a string of at most {_MAX_FIELD} characters")
    return value


def parse_ice_servers(value: Any) -> tuple[dict[str, Any], ...]:
    """Validate an ``ice_servers`` list from the server; raise SignalingMessageError if bad.

    Each entry becomes ``{"urls": [...], "username": ..., "credential": ...}``
    (username/credential only when given). ``turn:``/``turns:`` entries need
    both, as RTCPeerConnection does (it throws InvalidAccessError otherwise).
    """
    if not isinstance(value, list):
        raise _bad("'ice_servers' must be a list")
    if len(value) > MAX_ICE_SERVERS:
        raise _bad(f"'ice_servers' has {len(value)} entries; at most {MAX_ICE_SERVERS}")
    servers = []
    for entry in value:
        if not isinstance(entry, dict):
            raise _bad("each ICE server must be an object")
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or len(urls) > MAX_ICE_SERVERS:
            raise _bad(f"an ICE server needs 1-{MAX_ICE_SERVERS} 'urls'")
        for url in urls:
            try:
                check_turn_url(_check_string(url, "url"))
            except ValueError as exc:
                raise _bad(f"bad ICE server URL: {exc}") from None
        server: dict[str, Any] = {"urls": list(urls)}
        for key in ("username", "credential"):
            if key in entry:
                server[key] = _check_string(entry[key], key)
        if any(u.startswith("turn") for u in urls) and len(server) != 3:
            raise _bad(f"TURN server {urls[0]!r} comes without username and credential")
        servers.append(server)
    return tuple(servers)


def refresh_time(issued: float, expires: float) -> float:
    """When to hand out fresh credentials: halfway through their lifetime.

    Halfway leaves room for a late push or a slow reconnect while the old
    ones still work (coturn accepts them until ``expires``).
    """
    return issued + max(0.0, expires - issued) / 2
