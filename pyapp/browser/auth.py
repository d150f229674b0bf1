"""Mutual peer authentication over a dedicated control data channel.

The adapter between a :class:`~pyapp.browser.peer.PeerConnection` and the
sans-I/O :class:`~pyapp.core.security.handshake.Handshake`: it reads the DTLS
fingerprints from the local SDP and the remote SDP (all sha-256/384/512 lines;
aiortc offers three and Chromium keeps only the last; a line with another hash is
refused, see :mod:`pyapp.core.security.fingerprint`), runs HELLO/AUTH on the control channel,
re-arms the handshake's one timer, and on any failure closes the connection
and raises :class:`~pyapp.exceptions.AuthenticationError` whose ``reason`` is
an :class:`~pyapp.core.security.reasons.AuthReason` (``fingerprint_mismatch``,
``bad_signature``, ``key_changed``, ``timeout``, ``peer_closed``,
``protocol_violation`` ...) and whose message says what happened and what to do.

**Per-connection state** lives in a :class:`SecurityState` that the
connection holds (``pc.security``): verification status (``unverified`` /
``verifying`` / ``verified`` / ``failed``), the session, the failure, the
control channels already used, and the encrypted-channel cache of
:mod:`pyapp.browser.secure`. Its ``events`` emit ``"status"`` on every change,
for a UI that shows each peer's verification state.

**Control channel.** The side playing *offerer* (the impolite side of perfect
negotiation -- both peers agree on it by construction) creates an in-band
RTCDataChannel labelled :data:`AUTH_LABEL` (``"pyapp-auth"``, sub-protocol
``"pyapp-auth/1"``); the other side adopts the first unused channel with that
label (it may have arrived before ``authenticate`` was called; the wrapper
queues its messages). In-band (DCEP) rather than negotiated so that its
stream id is picked by the browser and can never clash with a negotiated id
another layer (the multiplexer) reserves; the label is reserved instead --
application code must not use ``"pyapp-auth"``.

**Ordering.** Call ``authenticate`` right after the connection is up and
before reading any application channel: data channels queue what arrives, so
nothing is delivered to the application before the peer is verified (and if
authentication fails the connection -- and every channel -- is closed).

Example (in the page)::

    from pyapp.browser.identity import load_identity
    me = await load_identity()
    result = await pc.authenticate(me, expected_peer_id=PeerId.parse(pinned), timeout=10)
    print("verified", result.peer_id)
    chan = EncryptedChannel.from_session(pc.create_data_channel("orders"), result)
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import js

from pyapp._events import Emitter
from pyapp.browser.crypto import WebCrypto, default_crypto, detect_algorithms
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import Identity, TrustStore
from pyapp.browser.timer import now as _now
from pyapp.core.security.fingerprint import Fingerprint, remote_fingerprints, sdp_fingerprints
from pyapp.core.security.handshake import (
    Handshake,
    HandshakeComplete,
    HandshakeFailed,
    parse_alert,
)
from pyapp.core.security.identity import KnownPeers, PeerId, TrustResult
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm, SigningKey
from pyapp.core.security.keys import Role, SessionKeys
from pyapp.core.security.reasons import AuthReason, auth_error
from pyapp.exceptions import (
    AuthenticationError,
    ConnectionClosedError,
    IdentityChangedError,
    LocalProtocolError,
)

if TYPE_CHECKING:
    from pyapp.browser.peer import PeerConnection

__all__ = [
    "AUTH_LABEL",
    "AUTH_PROTOCOL",
    "FAILURES",
    "AuthReason",
    "AuthResult",
    "IdentityChangedError",
    "SecurityState",
    "authenticate",
    "connection_fingerprints",
    "role_of",
    "security_of",
    "session_of",
]

AUTH_LABEL = "pyapp-auth"
AUTH_PROTOCOL = "pyapp-auth/1"

FAILURES: Counter[str] = Counter()
"""Authentication failures in this page (all connections), by reason code."""


@dataclass(frozen=True)
class AuthResult:
    """A verified peer, and the session secrets for end-to-end encryption."""

    peer_id: PeerId
    """The peer's PeerId (its key proved possession for this very DTLS session)."""
    peer_alg: SignatureAlgorithm
    """The peer's identity algorithm."""
    peer_public_key: bytes
    """The peer's raw identity public key."""
    role: Role
    """Our role in the handshake (offerer = the impolite side)."""
    transcript_hash: bytes
    """SHA-256 of the signed transcript; equal on both sides (a channel binding)."""
    keys: SessionKeys = field(repr=False)
    """Per-direction secrets (use with :class:`~pyapp.browser.secure.EncryptedChannel`)."""
    trust: TrustResult | None
    """The known-peers verdict (``FIRST_SEEN`` / ``KNOWN``) when a store was given."""
    local_peer_id: PeerId
    """Our own PeerId."""
    control: DataChannel = field(repr=False)
    """The control channel the handshake ran on (left open, and watched for the peer's
    ALERT: a late refusal fails the session; it carries no application data)."""
    elapsed: float
    """Seconds from the call to completion."""


class SecurityState:
    """Authentication and encryption state of one connection (held as ``pc.security``).

    ``status`` is ``"unverified"`` (nothing tried), ``"verifying"``,
    ``"verified"`` (``session`` set) or ``"failed"`` (``error`` set, with its
    ``reason``). ``events.on("status", cb)`` calls ``cb(state)`` on every change.
    """

    def __init__(self) -> None:
        self.status = "unverified"
        self.session: AuthResult | None = None
        self.error: AuthenticationError | None = None
        self.events = Emitter()
        self.control_channels: weakref.WeakSet[DataChannel] = weakref.WeakSet()
        """Control channels already used by a handshake (never adopted twice)."""
        self.encrypted: dict[int, tuple[Any, bytes | None, Any]] = {}
        """:mod:`pyapp.browser.secure`'s cache: id(transport) -> (transport, key, EncryptedChannel)."""

    def _set(self, status: str, *, session: AuthResult | None = None,
              error: AuthenticationError | None = None) -> None:
        self.status, self.error = status, error
        if session is not None:
            self.session = session
        if status == "failed":
            self.session = None  # no more encryption under keys of a rejected peer
        self.events.emit("status", self)

    @property
    def reason(self) -> str | None:
        """The failure's reason code, when ``status == "failed"``."""
        return self.error.reason if self.error is not None else None

    def close(self) -> None:
        """Forget the session keys and encrypted channels (the connection closed)."""
        self.encrypted.clear()
        self.session = None
        self.events.clear()

    def __repr__(self) -> str:
        extra = f" {self.reason}" if self.error is not None else ""
        return f"<SecurityState {self.status}{extra}>"


def security_of(pc: Any) -> SecurityState:
    """The :class:`SecurityState` of ``pc`` (its ``security`` attribute, made on first use).

    ``pc`` may be a :class:`~pyapp.browser.connection.Connection` or the
    PeerConnection wrapper it owns: the wrapper knows no feature, so its state
    is its facade's (``pc.connection.security``).
    """
    if not hasattr(pc, "security") and hasattr(type(pc), "connection"):
        pc = pc.connection
    state = getattr(pc, "security", None)
    if not isinstance(state, SecurityState):
        state = SecurityState()
        pc.security = state
    return state


def role_of(pc: PeerConnection) -> Role:
    """The handshake role of our side of ``pc``: the impolite peer is the offerer."""
    return Role.ANSWERER if pc.polite else Role.OFFERER


def session_of(pc: PeerConnection) -> AuthResult | None:
    """The latest successful :func:`authenticate` result for ``pc``, if any."""
    return security_of(pc).session


async def _until(deadline: float, awaitable: Any) -> Any:
    remaining = deadline - _now()
    if remaining <= 0:
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise TimeoutError
    return await asyncio.wait_for(awaitable, remaining)


async def _control_channel(pc: PeerConnection, role: Role, deadline: float) -> DataChannel:
    used = security_of(pc).control_channels
    if role is Role.OFFERER:
        channel = pc.create_data_channel(AUTH_LABEL, protocol=AUTH_PROTOCOL)
        used.add(channel)
        return channel
    found: asyncio.Future[DataChannel] = asyncio.get_event_loop().create_future()

    def adopt(ch: DataChannel) -> None:
        if ch.label == AUTH_LABEL and ch not in used and not found.done():
            used.add(ch)
            found.set_result(ch)

    for ch in list(pc.channels):
        adopt(ch)
    if found.done():
        return found.result()
    pc.events.on("datachannel", adopt)
    try:
        return await _until(deadline, asyncio.shield(found))
    finally:
        pc.events.off("datachannel", adopt)


def connection_fingerprints(
        pc: PeerConnection) -> tuple[list[Fingerprint], tuple[Fingerprint, ...]]:
    """Our certificate's fingerprints (local SDP) and the peer's (every line of the remote SDP).

    A bad remote SDP raises ``AuthenticationError`` (``unsupported_fingerprint_algorithm``
    or ``protocol_violation``); a bad local one is our side's fault (``LocalProtocolError``).
    """
    local, remote = pc.local_description, pc.remote_description
    if local is None or remote is None:
        raise LocalProtocolError("authenticate() needs a negotiated connection (no SDP yet)")
    try:
        local_fps = sdp_fingerprints(local["sdp"])
    except AuthenticationError as exc:
        raise LocalProtocolError(f"our own SDP: {exc}") from None
    return local_fps, remote_fingerprints(remote["sdp"])


def _warn_identity_changed(trust: TrustResult) -> None:
    text = (f"SECURITY WARNING: the peer presented PeerId {trust.peer_id} but "
            f"{trust.previous} was on record for it. Someone may be impersonating "
            "your contact; the connection was closed.")
    js.console.warn(f"pyapp: {text}")
    handler: Any = getattr(js.globalThis, "pyappShowError", None)
    if handler is not None and callable(handler):
        handler(text)


async def authenticate(
    pc: PeerConnection,
    identity: Identity | SigningKey,
    *,
    expected_peer_id: PeerId | str | None = None,
    known_peers: TrustStore | KnownPeers | None = None,
    contact: str | None = None,
    timeout: float = 10.0,
    role: Role | None = None,
    crypto: WebCrypto | None = None,
    ephemeral_alg: KeyAgreementAlgorithm | None = None,
) -> AuthResult:
    """Mutually authenticate the peer on ``pc``; close ``pc`` and raise on any failure.

    * ``expected_peer_id`` pins the peer (a PeerId or its printed form).
    * ``known_peers``: trust-on-first-use store (a persistent :class:`TrustStore`
      is saved after a successful check); ``contact`` names the peer in it.
      A changed key raises :class:`IdentityChangedError` (and warns loudly);
      a peer outside the allow-list fails with ``"not allowed"``.
    * ``timeout`` bounds the whole exchange (including waiting for the
      connection and the control channel): ``"timeout"``.
    """
    state = security_of(pc)
    state._set("verifying")
    start = _now()
    deadline = start + timeout
    crypto = crypto or default_crypto()
    key = identity.key if isinstance(identity, Identity) else identity
    if isinstance(expected_peer_id, str):
        expected_peer_id = PeerId.parse(expected_peer_id)
    store = known_peers.peers if isinstance(known_peers, TrustStore) else known_peers
    if role is None:
        role = role_of(pc)
    if ephemeral_alg is None:
        _, ephemeral_alg = await detect_algorithms()
    channel: DataChannel | None = None
    try:
        try:
            if pc.connection_state != "connected":
                await _until(deadline, pc.wait_connected())
            local_fps, remote_fp = connection_fingerprints(pc)
            channel = await _control_channel(pc, role, deadline)
        except TimeoutError:
            raise auth_error(AuthReason.TIMEOUT, "the connection or the peer's control channel "
                             f"did not come up within {timeout:g} s") from None
        except ConnectionClosedError as exc:
            raise auth_error(AuthReason.PEER_CLOSED, str(exc)) from None
        hs = Handshake(
            crypto, role, key, local_fps, remote_fp, now=_now(), timeout=deadline - _now(),
            ephemeral_alg=ephemeral_alg, expected_peer_id=expected_peer_id,
            known_peers=store, contact=contact,
        )
        done = await _drive(hs, channel)
    except AuthenticationError as exc:
        FAILURES[exc.reason] += 1
        state._set("failed", error=exc)
        if channel is not None:
            await _drain(channel)  # our ALERT (the reason) should reach the peer first
        pc.close()
        raise
    except BaseException:  # cancelled, or our own misuse: not verified, not "failed"
        state._set("unverified")
        raise
    if isinstance(known_peers, TrustStore):
        await known_peers.save()
    result = AuthResult(
        done.peer_id, done.peer_alg, done.peer_public_key, role, done.transcript_hash,
        done.keys, done.trust, PeerId.from_public_key(key.alg, key.public_key), channel,
        _now() - start,
    )
    state._set("verified", session=result)
    _watch_for_alert(pc, state, result)
    return result


async def _drain(channel: DataChannel, limit: float = 0.3) -> None:
    """Give a just-sent ALERT a moment to leave before the connection closes."""
    deadline = _now() + limit
    while not channel.closed and channel.buffered_amount > 0 and _now() < deadline:
        await asyncio.sleep(0.01)
    if not channel.closed:
        await asyncio.sleep(0.05)


def _watch_for_alert(pc: PeerConnection, state: SecurityState, result: AuthResult) -> None:
    """The peer may still refuse us after we verified it (its pin check runs after our AUTH)."""
    channel = result.control

    def on_message(message: bytes | str) -> None:
        if isinstance(message, str) or state.session is not result:
            return
        err = parse_alert(bytes(message))
        if err is not None:
            FAILURES[err.reason] += 1
            state._set("failed", error=err)
            js.console.warn(f"pyapp: the peer rejected the authenticated connection: {err}")
            pc.close()

    channel.events.on("message", on_message)
    for message in channel.receive_nowait():  # anything that arrived before the listener
        on_message(message)


async def _drive(hs: Handshake, channel: DataChannel) -> HandshakeComplete:
    """Feed the handshake from the channel until it completes or fails (one timer)."""

    async def transmit() -> None:
        for message in hs.data_to_send():
            await _until(hs.deadline, channel.send(message))

    try:
        await hs.start()
        await transmit()
        while True:
            event = hs.next_event()
            if isinstance(event, HandshakeComplete):
                return event
            if isinstance(event, HandshakeFailed):
                if event.error.reason == AuthReason.KEY_CHANGED and event.trust is not None:
                    _warn_identity_changed(event.trust)
                    err = IdentityChangedError(event.error.reason, event.trust)
                    err.message = event.error.message
                    err.args = (event.error.message,)
                    raise err
                raise event.error
            timer = hs.get_timer()
            try:
                if timer is None:
                    raise TimeoutError
                message = await _until(timer, channel.receive())
            except TimeoutError:
                hs.handle_timer(_now())
                continue
            data = message.encode() if isinstance(message, str) else message
            await hs.receive_message(data, _now())
            await transmit()
    except TimeoutError:
        raise auth_error(AuthReason.TIMEOUT, "the handshake did not finish") from None
    except ConnectionClosedError as exc:
        raise auth_error(AuthReason.PEER_CLOSED, str(exc)) from None
