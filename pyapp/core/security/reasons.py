"""Why an authentication failed: one machine-readable code, one human sentence.

Every :class:`~pyapp.exceptions.AuthenticationError` carries ``reason``, an
:class:`AuthReason` (a ``str``, so ``exc.reason == "fingerprint_mismatch"``
works), and ``str(exc)``: what happened and what to do. Code branches on the
reason, never on the text; a UI shows the text (or :func:`describe`).

Example::

    from pyapp.core.security.reasons import AuthReason, auth_error

    exc = auth_error(AuthReason.FINGERPRINT_MISMATCH, "peer saw sha-256 AB:CD:..")
    assert exc.reason == "fingerprint_mismatch"
    assert "relay" in str(exc) and "sha-256 AB:CD" in str(exc)
"""

from __future__ import annotations

import enum

from pyapp.exceptions import AuthenticationError

__all__ = ["WIRE_CODES", "AuthReason", "auth_error", "describe", "reason_from_code"]


class AuthReason(enum.StrEnum):
    """The cause of an authentication failure."""

    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    """A DTLS certificate is not the one the other side saw: a relay or a rewritten SDP."""
    UNSUPPORTED_FINGERPRINT_ALGORITHM = "unsupported_fingerprint_algorithm"
    """The remote SDP names its certificate only with hashes other than sha-256/384/512."""
    BAD_SIGNATURE = "bad_signature"
    """The peer's AUTH signature does not verify over our transcript."""
    KEY_CHANGED = "key_changed"
    """A pinned peer (``expected_peer_id`` or a known-peers entry) proved another key."""
    NOT_ALLOWED = "not_allowed"
    """The peer is not in the known-peers allow-list."""
    TIMEOUT = "timeout"
    """No complete handshake before the deadline."""
    PEER_CLOSED = "peer_closed"
    """The connection or control channel closed before the handshake finished."""
    PROTOCOL_VIOLATION = "protocol_violation"
    """A malformed, reflected or out-of-order handshake message, or an unusable SDP."""
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    """The peer's identity or key-agreement algorithm is not one we share."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The peer speaks another version of the handshake."""
    PEER_REJECTED = "peer_rejected"
    """The peer refused us (its ALERT says why: the message names its reason)."""


WIRE_CODES: dict[AuthReason, int] = {
    AuthReason.FINGERPRINT_MISMATCH: 1,
    AuthReason.UNSUPPORTED_FINGERPRINT_ALGORITHM: 2,
    AuthReason.BAD_SIGNATURE: 3,
    AuthReason.KEY_CHANGED: 4,
    AuthReason.NOT_ALLOWED: 5,
    AuthReason.PROTOCOL_VIOLATION: 6,
    AuthReason.UNSUPPORTED_ALGORITHM: 7,
    AuthReason.UNSUPPORTED_VERSION: 8,
}
"""The reason byte of a handshake ALERT (reasons a side detects and tells its peer)."""


def reason_from_code(code: int) -> AuthReason | None:
    """The reason an ALERT's byte names, or ``None`` for a code we do not know."""
    for reason, value in WIRE_CODES.items():
        if value == code:
            return reason
    return None


_TEXT = {
    AuthReason.FINGERPRINT_MISMATCH: (
        "the peer's DTLS certificate is not the one the other side saw: something between you "
        "(the signaling server or a relay) replaced it; do not trust this connection, and "
        "reconnect over a signaling path you trust"),
    AuthReason.UNSUPPORTED_FINGERPRINT_ALGORITHM: (
        "the peer's SDP names its DTLS certificate only with a hash other than sha-256, sha-384 "
        "or sha-512; the peer's WebRTC stack must offer one of those"),
    AuthReason.BAD_SIGNATURE: (
        "the peer's signature does not verify over this session: it does not hold the key it "
        "claims, or someone altered the handshake; do not trust this connection"),
    AuthReason.KEY_CHANGED: (
        "this peer proved a different identity key than the one pinned for it: it may be an "
        "impostor; compare safety codes out of band before accepting the new key"),
    AuthReason.NOT_ALLOWED: (
        "the peer's identity is not in the allow-list; add it to the known peers to talk to it"),
    AuthReason.TIMEOUT: (
        "the handshake did not finish in time: the peer did not answer (it may not run "
        "pyapp's authentication, or the path is too slow); retry, or raise the timeout"),
    AuthReason.PEER_CLOSED: (
        "the connection closed before authentication finished; reconnect and retry"),
    AuthReason.PROTOCOL_VIOLATION: (
        "the peer broke the handshake protocol (malformed, reflected or out-of-order message, "
        "or an unusable SDP); it is not a compatible pyapp peer"),
    AuthReason.UNSUPPORTED_ALGORITHM: (
        "the peer uses an identity or key-agreement algorithm this side does not have; both "
        "sides need Ed25519/ECDSA P-256 and X25519/P-256 in common"),
    AuthReason.UNSUPPORTED_VERSION: (
        "the peer speaks another version of pyapp's handshake; update both sides"),
    AuthReason.PEER_REJECTED: (
        "the peer refused to authenticate this connection; its reason follows -- if it "
        "pinned another key for you, it must accept your new key before you can talk"),
}


def describe(reason: str) -> str:
    """One sentence for the user: what happened and what to do."""
    try:
        return _TEXT[AuthReason(reason)]
    except ValueError:
        return f"authentication failed ({reason})"


def auth_error(reason: AuthReason, detail: str | None = None) -> AuthenticationError:
    """The error for ``reason``, with an optional detail (what exactly was seen)."""
    return AuthenticationError(reason, describe(reason) + (f" ({detail})" if detail else ""))
