"""Mutual authentication on the control channel, as a sans-I/O state machine.

Right after the peer connection opens, before any application data, each
side sends a HELLO and, once it has the peer's HELLO, an AUTH whose
signature covers the transcript (see :mod:`pyapp.core.security.transcript`).
One round trip; no side waits for the other to start.

State table (the only place transitions happen; ``_fail`` is the error edge)::

    IDLE       --start()------------------------> HELLO_SENT   (queue HELLO)
    HELLO_SENT --HELLO ok-----------------------> AUTH_SENT    (queue AUTH)
    AUTH_SENT  --AUTH verified + policy ok------> DONE         (HandshakeComplete)
    HELLO_SENT/AUTH_SENT --bad input / deadline--> FAILED      (HandshakeFailed)

Wire messages (integers big-endian)::

    HELLO  0x01 | version 0x01 | role (0 offerer, 1 answerer) | alg (1 Ed25519,
           2 ECDSA P-256) | ecdh alg (1 X25519, 2 P-256) | nonce (32)
           | sender's DTLS fingerprint (32) | sender's view of the receiver's
           DTLS fingerprint (32) | identity public key (32 or 65)
           | ephemeral public key (32 or 65)
    AUTH   0x02 | version 0x01 | role | signature (64)

The fingerprints inside HELLO only give a precise early error ("fingerprint
mismatch"); security comes from the transcript, which each side builds from
*its own* SDP view, never from the peer's claims.

Failures are :class:`~pyapp.exceptions.AuthenticationError` with ``reason``
one of :data:`REASONS`, delivered as a :class:`HandshakeFailed` event (and in
``Handshake.error``); the machine then stays in ``FAILED``. Calls must not
overlap: await each before feeding the next message.

Example::

    import asyncio
    from pyapp.core.security.handshake import Handshake, HandshakeComplete
    from pyapp.core.security.interface import SignatureAlgorithm as Alg
    from pyapp.core.security.keys import Role
    from tests.support.oracle_crypto import OracleCrypto

    async def demo() -> bool:
        c = OracleCrypto()
        fa, fb = b"A" * 32, b"B" * 32
        a = Handshake(c, Role.OFFERER, await c.generate_signing_key(Alg.ED25519), fa, fb, now=0.0)
        b = Handshake(c, Role.ANSWERER, await c.generate_signing_key(Alg.ED25519), fb, fa, now=0.0)
        await a.start(); await b.start()
        for _ in range(2):  # HELLO round, then AUTH round
            for src, dst in ((a, b), (b, a)):
                for msg in src.data_to_send():
                    await dst.receive_message(msg, now=0.1)
        ea, eb = a.next_event(), b.next_event()
        assert isinstance(ea, HandshakeComplete) and isinstance(eb, HandshakeComplete)
        return ea.keys == eb.keys and ea.transcript_hash == eb.transcript_hash

    assert asyncio.run(demo())
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from pyapp.core.security.identity import KnownPeers, PeerId, TrustResult, TrustStatus
from pyapp.core.security.interface import (
    SIGNATURE_SIZE,
    Crypto,
    EcdhKeyPair,
    InvalidKeyError,
    KeyAgreementAlgorithm,
    SignatureAlgorithm,
    SigningKey,
    ecdh_public_key_size,
    signature_public_key_size,
)
from pyapp.core.security.keys import Role, SessionKeys, derive_session_keys
from pyapp.core.security.transcript import (
    FINGERPRINT_SIZE,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SideParams,
    Transcript,
    auth_signature_input,
)
from pyapp.exceptions import AuthenticationError, LocalProtocolError

__all__ = [
    "AUTH",
    "HELLO",
    "REASONS",
    "AuthMessage",
    "Handshake",
    "HandshakeComplete",
    "HandshakeEvent",
    "HandshakeFailed",
    "HandshakeState",
    "HelloMessage",
    "parse_message",
    "transcript_from_hellos",
]

HELLO = 0x01
AUTH = 0x02
AUTH_SIZE = 3 + SIGNATURE_SIZE
HELLO_FIXED_SIZE = 5 + NONCE_SIZE + 2 * FINGERPRINT_SIZE

BAD_SIGNATURE = "bad signature"
FINGERPRINT_MISMATCH = "fingerprint mismatch"
UNEXPECTED_PEER_ID = "unexpected peer id"
TIMEOUT = "timeout"
MALFORMED = "malformed message"
NOT_ALLOWED = "not allowed"
IDENTITY_CHANGED = "identity changed"
REFLECTED = "reflected message"
UNSUPPORTED_ALGORITHM = "unsupported algorithm"
UNSUPPORTED_VERSION = "unsupported version"
REASONS = (
    BAD_SIGNATURE,
    FINGERPRINT_MISMATCH,
    UNEXPECTED_PEER_ID,
    TIMEOUT,
    MALFORMED,
    NOT_ALLOWED,
    IDENTITY_CHANGED,
    REFLECTED,
    UNSUPPORTED_ALGORITHM,
    UNSUPPORTED_VERSION,
)


@dataclass(frozen=True)
class HelloMessage:
    """First message from each side."""

    role: Role
    """Sender's role."""
    alg: SignatureAlgorithm
    """Sender's identity algorithm."""
    ephemeral_alg: KeyAgreementAlgorithm
    """Key-agreement group of ``ephemeral_public_key``."""
    nonce: bytes
    """Fresh 32 random bytes."""
    sender_fingerprint: bytes
    """The sender's own DTLS certificate fingerprint."""
    receiver_fingerprint: bytes
    """The fingerprint the sender saw for the receiver in the SDP."""
    public_key: bytes
    """Sender's raw identity public key."""
    ephemeral_public_key: bytes
    """Sender's raw ephemeral public key."""

    def side(self, fingerprint: bytes) -> SideParams:
        """This HELLO's transcript contribution, with ``fingerprint`` as the sender's DTLS fingerprint.

        Pass the fingerprint *you* saw in the SDP, not ``sender_fingerprint``.
        """
        return SideParams(
            self.role,
            self.alg,
            self.public_key,
            self.nonce,
            self.ephemeral_alg,
            self.ephemeral_public_key,
            fingerprint,
        )

    def encode(self) -> bytes:
        """Wire bytes."""
        return (
            bytes([HELLO, PROTOCOL_VERSION, self.role, self.alg, self.ephemeral_alg])
            + self.nonce
            + self.sender_fingerprint
            + self.receiver_fingerprint
            + self.public_key
            + self.ephemeral_public_key
        )


@dataclass(frozen=True)
class AuthMessage:
    """Second message: the sender's signature over the transcript."""

    role: Role
    """Sender's role."""
    signature: bytes
    """64-byte signature over ``auth_signature_input(role, transcript_hash)``."""

    def encode(self) -> bytes:
        """Wire bytes."""
        return bytes([AUTH, PROTOCOL_VERSION, self.role]) + self.signature


def _enum(cls: type[enum.IntEnum], value: int) -> enum.IntEnum:
    try:
        return cls(value)
    except ValueError:
        raise AuthenticationError(MALFORMED) from None


def parse_message(data: bytes) -> HelloMessage | AuthMessage:
    """Parse one handshake message; any defect raises ``AuthenticationError``."""
    if len(data) < 3:
        raise AuthenticationError(MALFORMED)
    if data[1] != PROTOCOL_VERSION:
        raise AuthenticationError(UNSUPPORTED_VERSION)
    role = Role(_enum(Role, data[2]))
    if data[0] == AUTH:
        if len(data) != AUTH_SIZE:
            raise AuthenticationError(MALFORMED)
        return AuthMessage(role, bytes(data[3:]))
    if data[0] != HELLO or len(data) < HELLO_FIXED_SIZE:
        raise AuthenticationError(MALFORMED)
    alg = SignatureAlgorithm(_enum(SignatureAlgorithm, data[3]))
    eph_alg = KeyAgreementAlgorithm(_enum(KeyAgreementAlgorithm, data[4]))
    pk_len, eph_len = signature_public_key_size(alg), ecdh_public_key_size(eph_alg)
    if len(data) != HELLO_FIXED_SIZE + pk_len + eph_len:
        raise AuthenticationError(MALFORMED)
    off = 5
    nonce = bytes(data[off : off + NONCE_SIZE])
    off += NONCE_SIZE
    sender_fp = bytes(data[off : off + FINGERPRINT_SIZE])
    off += FINGERPRINT_SIZE
    receiver_fp = bytes(data[off : off + FINGERPRINT_SIZE])
    off += FINGERPRINT_SIZE
    public_key = bytes(data[off : off + pk_len])
    ephemeral = bytes(data[off + pk_len :])
    return HelloMessage(role, alg, eph_alg, nonce, sender_fp, receiver_fp, public_key, ephemeral)


def transcript_from_hellos(
    hello_a: bytes, hello_b: bytes, fingerprint_a: bytes, fingerprint_b: bytes
) -> Transcript:
    """Rebuild a transcript from two HELLOs and their senders' fingerprints (tests, vectors)."""
    a, b = parse_message(hello_a), parse_message(hello_b)
    if not isinstance(a, HelloMessage) or not isinstance(b, HelloMessage) or a.role is b.role:
        raise AuthenticationError(MALFORMED)
    return Transcript.of(a.side(fingerprint_a), b.side(fingerprint_b))


class HandshakeState(enum.Enum):
    """Where the state machine is (see the table in the module docstring)."""

    IDLE = "idle"
    HELLO_SENT = "hello sent"
    AUTH_SENT = "auth sent"
    DONE = "done"
    FAILED = "failed"


class HandshakeEvent:
    """Base class of handshake events."""


@dataclass(frozen=True)
class HandshakeComplete(HandshakeEvent):
    """The peer proved possession of its identity key for this very DTLS session."""

    peer_id: PeerId
    """Hash of the peer's identity key."""
    peer_alg: SignatureAlgorithm
    """The peer's identity algorithm."""
    peer_public_key: bytes
    """The peer's raw identity public key."""
    transcript_hash: bytes
    """SHA-256 of the transcript; identical on both sides (a channel binding)."""
    keys: SessionKeys = field(repr=False)
    """Per-direction secrets for :class:`~pyapp.core.security.envelope.SecureChannel`."""
    trust: TrustResult | None = None
    """The :class:`KnownPeers` verdict, when a store was given."""


@dataclass(frozen=True)
class HandshakeFailed(HandshakeEvent):
    """Authentication failed; the connection must be closed."""

    error: AuthenticationError
    """``error.reason`` is one of :data:`REASONS`."""
    trust: TrustResult | None = None
    """For "identity changed" / "not allowed": the store's verdict (with the previous PeerId)."""


class Handshake:
    """One side of the handshake. Feed messages in, take messages and events out."""

    def __init__(
        self,
        crypto: Crypto,
        role: Role,
        identity: SigningKey,
        local_fingerprint: bytes,
        remote_fingerprint: bytes,
        *,
        now: float,
        timeout: float = 10.0,
        ephemeral_alg: KeyAgreementAlgorithm = KeyAgreementAlgorithm.X25519,
        expected_peer_id: PeerId | None = None,
        known_peers: KnownPeers | None = None,
        contact: str | None = None,
    ) -> None:
        if (
            len(local_fingerprint) != FINGERPRINT_SIZE
            or len(remote_fingerprint) != FINGERPRINT_SIZE
        ):
            raise LocalProtocolError("fingerprints are 32-byte SHA-256 digests")
        self._crypto = crypto
        self.role = role
        self._identity = identity
        self.local_fingerprint = local_fingerprint
        self.remote_fingerprint = remote_fingerprint
        self.deadline = now + timeout
        self._ephemeral_alg = ephemeral_alg
        self._expected = expected_peer_id
        self._known = known_peers
        self._contact = contact
        self.state = HandshakeState.IDLE
        self.error: AuthenticationError | None = None
        self._out: deque[bytes] = deque()
        self._events: deque[HandshakeEvent] = deque()
        self._busy = False
        self._local: SideParams | None = None
        self._ephemeral: EcdhKeyPair | None = None
        self._peer: HelloMessage | None = None
        self._transcript_hash = b""
        self._shared = b""

    # -- the adapter-facing API ------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Messages to send on the control channel, in order."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> HandshakeEvent | None:
        """The next event, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When to call :meth:`handle_timer` (``None`` once finished)."""
        return None if self.state in (HandshakeState.DONE, HandshakeState.FAILED) else self.deadline

    def handle_timer(self, now: float) -> None:
        """Fail with "timeout" if the deadline has passed and we are not done."""
        if self.get_timer() is not None and now >= self.deadline:
            self._fail(TIMEOUT)

    async def start(self) -> None:
        """Generate the nonce and ephemeral key and queue our HELLO."""
        if self.state is not HandshakeState.IDLE:
            raise LocalProtocolError("start() called twice")
        self._enter()
        try:
            nonce = await self._crypto.random_bytes(NONCE_SIZE)
            eph = await self._crypto.generate_ecdh_key(self._ephemeral_alg)
            if self.state is not HandshakeState.IDLE:  # timer fired while we awaited
                return
            self._ephemeral = eph
            self._local = SideParams(
                self.role,
                self._identity.alg,
                self._identity.public_key,
                nonce,
                eph.alg,
                eph.public_key,
                self.local_fingerprint,
            )
            hello = HelloMessage(
                self.role,
                self._identity.alg,
                eph.alg,
                nonce,
                self.local_fingerprint,
                self.remote_fingerprint,
                self._identity.public_key,
                eph.public_key,
            )
            self._out.append(hello.encode())
            self.state = HandshakeState.HELLO_SENT
        finally:
            self._busy = False

    async def receive_message(self, data: bytes, now: float) -> None:
        """Feed one message from the control channel."""
        if self.state is HandshakeState.IDLE:
            raise LocalProtocolError("call start() before feeding messages")
        if self.state is HandshakeState.DONE:
            raise LocalProtocolError("handshake already complete; route this message elsewhere")
        if self.state is HandshakeState.FAILED:
            return
        self.handle_timer(now)
        if self.state is HandshakeState.FAILED:
            return
        self._enter()
        try:
            try:
                msg = parse_message(data)
                if isinstance(msg, HelloMessage):
                    await self._on_hello(msg)
                else:
                    await self._on_auth(msg, now)
            except AuthenticationError as exc:
                self._fail(exc.reason)
        finally:
            self._busy = False

    # -- internals -------------------------------------------------------------

    def _enter(self) -> None:
        if self._busy:
            raise LocalProtocolError("overlapping handshake calls; await each one")
        self._busy = True

    def _fail(self, reason: str, trust: TrustResult | None = None) -> None:
        if self.state in (HandshakeState.DONE, HandshakeState.FAILED):
            return
        self.state = HandshakeState.FAILED
        self.error = AuthenticationError(reason)
        self._out.clear()
        self._events.append(HandshakeFailed(self.error, trust))

    def _still(self, state: HandshakeState) -> None:
        # After every await: a timer may have failed us meanwhile.
        if self.state is not state:
            raise AuthenticationError(self.error.reason if self.error else TIMEOUT)

    async def _on_hello(self, msg: HelloMessage) -> None:
        local = self._local
        if self.state is not HandshakeState.HELLO_SENT or local is None or self._ephemeral is None:
            raise AuthenticationError(MALFORMED)  # a second HELLO
        if msg.role is self.role or msg.nonce == local.nonce:
            raise AuthenticationError(REFLECTED)
        if msg.ephemeral_alg is not self._ephemeral_alg:
            raise AuthenticationError(UNSUPPORTED_ALGORITHM)
        if (msg.sender_fingerprint, msg.receiver_fingerprint) != (
            self.remote_fingerprint,
            self.local_fingerprint,
        ):
            raise AuthenticationError(FINGERPRINT_MISMATCH)
        remote = msg.side(self.remote_fingerprint)  # our SDP view, not the peer's claim
        transcript = Transcript.of(local, remote).encode()
        th = await self._crypto.sha256(transcript)
        self._still(HandshakeState.HELLO_SENT)
        try:
            shared = await self._crypto.ecdh_derive(self._ephemeral, msg.ephemeral_public_key)
        except InvalidKeyError:
            raise AuthenticationError(MALFORMED) from None
        self._still(HandshakeState.HELLO_SENT)
        sig = await self._crypto.sign(self._identity, auth_signature_input(self.role, th))
        self._still(HandshakeState.HELLO_SENT)
        self._peer, self._transcript_hash, self._shared = msg, th, shared
        self._out.append(AuthMessage(self.role, sig).encode())
        self.state = HandshakeState.AUTH_SENT

    async def _on_auth(self, msg: AuthMessage, now: float) -> None:
        peer = self._peer
        if self.state is not HandshakeState.AUTH_SENT or peer is None:
            raise AuthenticationError(MALFORMED)  # AUTH before HELLO, or a second AUTH
        if msg.role is self.role:
            raise AuthenticationError(REFLECTED)
        signed = auth_signature_input(peer.role, self._transcript_hash)
        ok = await self._crypto.verify(peer.alg, peer.public_key, msg.signature, signed)
        self._still(HandshakeState.AUTH_SENT)
        if not ok:
            raise AuthenticationError(BAD_SIGNATURE)
        peer_id = PeerId.from_public_key(peer.alg, peer.public_key)
        if self._expected is not None and peer_id != self._expected:
            raise AuthenticationError(UNEXPECTED_PEER_ID)
        trust = None
        if self._known is not None:
            trust = self._known.check(peer.alg, peer.public_key, contact=self._contact)
            if trust.status is TrustStatus.NOT_ALLOWED:
                self._fail(NOT_ALLOWED, trust)
                return
            if trust.status is TrustStatus.IDENTITY_CHANGED:
                self._fail(IDENTITY_CHANGED, trust)
                return
        keys = await derive_session_keys(self._crypto, self._shared, self._transcript_hash)
        self._still(HandshakeState.AUTH_SENT)
        if self._known is not None:
            trust = self._known.record(peer.alg, peer.public_key, contact=self._contact, now=now)
        self._shared = b""
        self.state = HandshakeState.DONE
        self._events.append(
            HandshakeComplete(
                peer_id, peer.alg, peer.public_key, self._transcript_hash, keys, trust
            )
        )
