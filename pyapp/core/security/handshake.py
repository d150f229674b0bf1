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

    HELLO  0x01 | version 0x02 | role (0 offerer, 1 answerer) | alg (1 Ed25519,
           2 ECDSA P-256) | ecdh alg (1 X25519, 2 P-256) | nonce (32)
           | count (1..3) | count x (hash (1 sha-256, 2 sha-384, 3 sha-512)
           | digest (32/48/64)), sorted by hash: the receiver's DTLS certificate
           as the sender read it from its remote SDP | identity public key
           (32 or 65) | ephemeral public key (32 or 65)
    AUTH   0x02 | version 0x02 | role | signature (64)
    ALERT  0x03 | version 0x02 | role | reason code (1 byte, ``WIRE_CODES``)

ALERT: a side that detects a failure (anything but a timeout or a closed
transport) queues one ALERT naming its reason, so the peer learns *why* instead
of seeing the connection drop; the peer fails with ``peer_rejected`` (its
message names the reason). It carries no signature: a man in the middle can
forge or drop it, which only turns into a failure it could cause anyway. An
ALERT is never answered. After our own success, an adapter that keeps
listening on the control channel may still get one (the peer's pin check runs
after it verified our AUTH): :func:`parse_alert`.

Fingerprints: each side reads every fingerprint of the peer's certificate from
its remote SDP (:func:`~pyapp.core.security.fingerprint.remote_fingerprints`;
why all of them: that module) and tells the peer in HELLO. The receiver checks
each against *its own* local SDP lines: a relay that terminates DTLS on both
sides presents its own certificates, so the claim has a line that is not ours
and the handshake fails at once with ``fingerprint_mismatch`` -- on both sides.
Both transcripts then bind the same sets (our certificate as the peer saw it,
confirmed; the peer's as we saw it), whatever subset of lines each browser kept. A relay that also
rewrites the claims gets past the early check but not the signatures
(``bad_signature``): our transcript holds what *we* saw.

Failures are :class:`~pyapp.exceptions.AuthenticationError` whose ``reason``
is an :class:`~pyapp.core.security.reasons.AuthReason` (the message says what
happened and what to do), delivered as a :class:`HandshakeFailed` event (and
in ``Handshake.error``); the machine then stays in ``FAILED``. Calls must not
overlap: await each before feeding the next message.

Example::

    import asyncio
    from pyapp.core.security.fingerprint import Fingerprint, HashFunction
    from pyapp.core.security.handshake import Handshake, HandshakeComplete
    from pyapp.core.security.interface import SignatureAlgorithm as Alg
    from pyapp.core.security.keys import Role
    from tests.support.oracle_crypto import OracleCrypto
    SHA256 = HashFunction.SHA256

    async def demo() -> bool:
        c = OracleCrypto()
        fa, fb = Fingerprint(SHA256, b"A" * 32), Fingerprint(SHA256, b"B" * 32)
        a = Handshake(c, Role.OFFERER, await c.generate_signing_key(Alg.ED25519), [fa], fb, now=0.0)
        b = Handshake(c, Role.ANSWERER, await c.generate_signing_key(Alg.ED25519), [fb], fa, now=0.0)
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
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyapp.core.security.fingerprint import Fingerprint, HashFunction, encode_fingerprints
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
from pyapp.core.security.reasons import (
    WIRE_CODES,
    AuthReason,
    auth_error,
    describe,
    reason_from_code,
)
from pyapp.core.security.transcript import (
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SideParams,
    Transcript,
    auth_signature_input,
)
from pyapp.exceptions import AuthenticationError, InvalidArgumentError, LocalProtocolError

__all__ = [
    "ALERT",
    "AUTH",
    "HELLO",
    "AlertMessage",
    "AuthMessage",
    "AuthReason",
    "Handshake",
    "HandshakeComplete",
    "HandshakeEvent",
    "HandshakeFailed",
    "HandshakeState",
    "HelloMessage",
    "parse_alert",
    "parse_message",
    "transcript_from_hellos",
]

HELLO = 0x01
AUTH = 0x02
ALERT = 0x03
AUTH_SIZE = 3 + SIGNATURE_SIZE
ALERT_SIZE = 4
HELLO_FIXED_SIZE = 6 + NONCE_SIZE  # then the fingerprints, the identity key, the ephemeral key
MAX_FINGERPRINTS = len(HashFunction)

V = AuthReason


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
    receiver_fingerprints: tuple[Fingerprint, ...]
    """The receiver's certificate, as the sender read it from its remote SDP (sorted by hash)."""
    public_key: bytes
    """Sender's raw identity public key."""
    ephemeral_public_key: bytes
    """Sender's raw ephemeral public key."""

    def side(self, fingerprints: tuple[Fingerprint, ...]) -> SideParams:
        """This HELLO's transcript contribution, with ``fingerprints`` as the sender's certificate.

        Pass the fingerprints *you* read from your remote SDP.
        """
        return SideParams(
            self.role,
            self.alg,
            self.public_key,
            self.nonce,
            self.ephemeral_alg,
            self.ephemeral_public_key,
            fingerprints,
        )

    def encode(self) -> bytes:
        """Wire bytes."""
        return (
            bytes([HELLO, PROTOCOL_VERSION, self.role, self.alg, self.ephemeral_alg])
            + self.nonce
            + encode_fingerprints(self.receiver_fingerprints)
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


@dataclass(frozen=True)
class AlertMessage:
    """A side failed and says why (never answered)."""

    role: Role
    """Sender's role."""
    code: int
    """The reason byte (:data:`~pyapp.core.security.reasons.WIRE_CODES`)."""

    @property
    def reason(self) -> AuthReason | None:
        """The sender's reason, or ``None`` for a code we do not know."""
        return reason_from_code(self.code)

    def encode(self) -> bytes:
        """Wire bytes."""
        return bytes([ALERT, PROTOCOL_VERSION, self.role, self.code])

    def error(self) -> AuthenticationError:
        """What the receiver fails with: ``peer_rejected``, naming the peer's reason."""
        reason = self.reason
        said = (f"{reason.value}: {describe(reason)}" if reason is not None
                else f"reason code {self.code}")
        return auth_error(V.PEER_REJECTED, f"the peer says {said}")


def parse_alert(data: bytes) -> AuthenticationError | None:
    """``peer_rejected`` if ``data`` is a well-formed ALERT, else ``None`` (for adapters)."""
    try:
        msg = parse_message(data)
    except AuthenticationError:
        return None
    return msg.error() if isinstance(msg, AlertMessage) else None


def _enum(cls: type[enum.IntEnum], value: int, what: str) -> enum.IntEnum:
    try:
        return cls(value)
    except ValueError:
        if cls is HashFunction:
            raise auth_error(V.UNSUPPORTED_FINGERPRINT_ALGORITHM, f"hash code {value}") from None
        raise auth_error(V.UNSUPPORTED_ALGORITHM, f"unknown {what} code {value}") from None


def parse_message(data: bytes) -> HelloMessage | AuthMessage | AlertMessage:
    """Parse one handshake message; any defect raises ``AuthenticationError``."""
    if len(data) < 3:
        raise auth_error(V.PROTOCOL_VIOLATION, f"a {len(data)}-byte handshake message")
    if data[0] not in (HELLO, AUTH, ALERT):
        raise auth_error(V.PROTOCOL_VIOLATION, f"unknown handshake message type 0x{data[0]:02x}")
    if data[1] != PROTOCOL_VERSION:
        raise auth_error(V.UNSUPPORTED_VERSION,
                         f"peer speaks version {data[1]}, we speak {PROTOCOL_VERSION}")
    if data[2] not in (0, 1):
        raise auth_error(V.PROTOCOL_VIOLATION, f"unknown role {data[2]}")
    role = Role(data[2])
    if data[0] == ALERT:
        if len(data) != ALERT_SIZE:
            raise auth_error(V.PROTOCOL_VIOLATION, f"ALERT of {len(data)} bytes, not {ALERT_SIZE}")
        return AlertMessage(role, data[3])
    if data[0] == AUTH:
        if len(data) != AUTH_SIZE:
            raise auth_error(V.PROTOCOL_VIOLATION, f"AUTH of {len(data)} bytes, not {AUTH_SIZE}")
        return AuthMessage(role, bytes(data[3:]))
    if len(data) < HELLO_FIXED_SIZE:
        raise auth_error(V.PROTOCOL_VIOLATION, f"HELLO of {len(data)} bytes is too short")
    alg = SignatureAlgorithm(_enum(SignatureAlgorithm, data[3], "identity algorithm"))
    eph_alg = KeyAgreementAlgorithm(_enum(KeyAgreementAlgorithm, data[4], "key agreement"))
    off = 5
    nonce = bytes(data[off : off + NONCE_SIZE])
    off += NONCE_SIZE
    count = data[off]
    off += 1
    if not 1 <= count <= MAX_FINGERPRINTS:
        raise auth_error(V.PROTOCOL_VIOLATION, f"HELLO with {count} fingerprints")
    fps: list[Fingerprint] = []
    for _ in range(count):
        if off >= len(data):
            raise auth_error(V.PROTOCOL_VIOLATION, "HELLO ends inside its fingerprints")
        func = HashFunction(_enum(HashFunction, data[off], "hash"))
        if fps and func <= fps[-1].hash:
            raise auth_error(V.PROTOCOL_VIOLATION, "HELLO fingerprints not one per hash, sorted")
        if off + 1 + func.digest_size > len(data):
            raise auth_error(V.PROTOCOL_VIOLATION, "HELLO ends inside its fingerprints")
        fps.append(Fingerprint(func, bytes(data[off + 1 : off + 1 + func.digest_size])))
        off += 1 + func.digest_size
    pk_len, eph_len = signature_public_key_size(alg), ecdh_public_key_size(eph_alg)
    want = off + pk_len + eph_len
    if len(data) != want:
        raise auth_error(V.PROTOCOL_VIOLATION, f"HELLO of {len(data)} bytes, not {want}")
    public_key = bytes(data[off : off + pk_len])
    ephemeral = bytes(data[off + pk_len :])
    return HelloMessage(role, alg, eph_alg, nonce, tuple(fps), public_key, ephemeral)


def transcript_from_hellos(hello_a: bytes, hello_b: bytes) -> Transcript:
    """Rebuild a transcript from two HELLOs (tests, vectors).

    Each HELLO carries the sender's view of the *other* side's certificate,
    which is what that side binds for itself once it has confirmed it.
    """
    a, b = parse_message(hello_a), parse_message(hello_b)
    if not isinstance(a, HelloMessage) or not isinstance(b, HelloMessage) or a.role is b.role:
        raise auth_error(V.PROTOCOL_VIOLATION, "need one HELLO from each role")
    return Transcript.of(a.side(b.receiver_fingerprints), b.side(a.receiver_fingerprints))


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
    """``error.reason`` is an :class:`~pyapp.core.security.reasons.AuthReason`."""
    trust: TrustResult | None = None
    """For ``key_changed`` / ``not_allowed`` from a store: its verdict (with the previous PeerId)."""


class Handshake:
    """One side of the handshake. Feed messages in, take messages and events out.

    ``local_fingerprints``: every fingerprint of our certificate in our own
    (local) SDP. ``remote_fingerprints``: the peer's, all of them, from our
    remote SDP (:func:`~pyapp.core.security.fingerprint.remote_fingerprints`).
    A bare 32-byte digest is taken as sha-256.
    """

    def __init__(
        self,
        crypto: Crypto,
        role: Role,
        identity: SigningKey,
        local_fingerprints: Iterable[Fingerprint | bytes] | Fingerprint | bytes,
        remote_fingerprints: Iterable[Fingerprint | bytes] | Fingerprint | bytes,
        *,
        now: float,
        timeout: float = 10.0,
        ephemeral_alg: KeyAgreementAlgorithm = KeyAgreementAlgorithm.X25519,
        expected_peer_id: PeerId | None = None,
        known_peers: KnownPeers | None = None,
        contact: str | None = None,
    ) -> None:
        if isinstance(local_fingerprints, (bytes, Fingerprint)):
            local_fingerprints = [local_fingerprints]
        self.local_fingerprints = tuple(_fingerprint(fp) for fp in local_fingerprints)
        if not self.local_fingerprints:
            raise InvalidArgumentError(
                "local_fingerprints is empty: pass every fingerprint of our certificate "
                "from the local SDP (sdp_fingerprints(pc.localDescription.sdp))")
        if isinstance(remote_fingerprints, (bytes, Fingerprint)):
            remote_fingerprints = [remote_fingerprints]
        remote = sorted({_fingerprint(fp) for fp in remote_fingerprints},
                        key=lambda fp: (fp.hash, fp.digest))
        if not remote or len({fp.hash for fp in remote}) != len(remote):
            raise InvalidArgumentError(
                f"remote_fingerprints must hold one or more fingerprints, at most one per hash "
                f"function, got {', '.join(map(str, remote)) or 'none'}: pass "
                "remote_fingerprints(pc.remoteDescription.sdp)")
        self.remote_fingerprints = tuple(remote)
        self._crypto = crypto
        self.role = role
        self._identity = identity
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
        self._ephemeral: EcdhKeyPair | None = None
        self._peer: HelloMessage | None = None
        self._nonce = b""
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
            self._fail(auth_error(V.TIMEOUT, "no complete handshake from the peer in time"))

    def connection_lost(self, detail: str = "the control channel closed") -> None:
        """The transport under the handshake went away: fail with ``peer_closed`` (if not done)."""
        self._fail(auth_error(V.PEER_CLOSED, detail), alert=False)

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
            self._nonce = nonce
            hello = HelloMessage(
                self.role,
                self._identity.alg,
                eph.alg,
                nonce,
                self.remote_fingerprints,
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
                if isinstance(msg, AlertMessage):
                    self._fail(msg.error(), alert=False)
                elif isinstance(msg, HelloMessage):
                    await self._on_hello(msg)
                else:
                    await self._on_auth(msg, now)
            except AuthenticationError as exc:
                self._fail(exc)
        finally:
            self._busy = False

    # -- internals -------------------------------------------------------------

    def _enter(self) -> None:
        if self._busy:
            raise LocalProtocolError("overlapping handshake calls; await each one")
        self._busy = True

    def _fail(self, error: AuthenticationError, trust: TrustResult | None = None, *,
              alert: bool = True) -> None:
        if self.state in (HandshakeState.DONE, HandshakeState.FAILED):
            return
        started = self.state is not HandshakeState.IDLE
        self.state = HandshakeState.FAILED
        self.error = error
        self._out.clear()
        code = WIRE_CODES.get(error.reason)  # type: ignore[call-overload]
        if alert and started and code is not None:
            self._out.append(AlertMessage(self.role, code).encode())  # tell the peer why
        self._events.append(HandshakeFailed(self.error, trust))

    def _still(self, state: HandshakeState) -> None:
        # After every await: a timer may have failed us meanwhile.
        if self.state is not state:
            raise self.error or auth_error(V.TIMEOUT)

    async def _on_hello(self, msg: HelloMessage) -> None:
        eph = self._ephemeral
        if self.state is not HandshakeState.HELLO_SENT or eph is None:
            raise auth_error(V.PROTOCOL_VIOLATION, "a second HELLO")
        if msg.role is self.role or msg.nonce == self._nonce:
            raise auth_error(V.PROTOCOL_VIOLATION,
                             "our own HELLO came back (reflected), or both sides took one role")
        if msg.ephemeral_alg is not self._ephemeral_alg:
            raise auth_error(V.UNSUPPORTED_ALGORITHM,
                             f"peer's key agreement is {msg.ephemeral_alg.name}, "
                             f"ours {self._ephemeral_alg.name}")
        foreign = [fp for fp in msg.receiver_fingerprints if fp not in self.local_fingerprints]
        if foreign:
            raise auth_error(V.FINGERPRINT_MISMATCH,
                             "the peer sees our certificate as " + ", ".join(map(str, foreign))
                             + "; our SDP has " + ", ".join(map(str, self.local_fingerprints)))
        # What we bind for ourselves: our certificate as the peer saw it (now confirmed);
        # for the peer: its certificate as *we* saw it, never its claim.
        local = SideParams(self.role, self._identity.alg, self._identity.public_key, self._nonce,
                           eph.alg, eph.public_key, msg.receiver_fingerprints)
        remote = msg.side(self.remote_fingerprints)
        transcript = Transcript.of(local, remote).encode()
        th = await self._crypto.sha256(transcript)
        self._still(HandshakeState.HELLO_SENT)
        try:
            shared = await self._crypto.ecdh_derive(eph, msg.ephemeral_public_key)
        except InvalidKeyError as exc:
            raise auth_error(V.PROTOCOL_VIOLATION, f"peer's ephemeral key: {exc}") from None
        self._still(HandshakeState.HELLO_SENT)
        sig = await self._crypto.sign(self._identity, auth_signature_input(self.role, th))
        self._still(HandshakeState.HELLO_SENT)
        self._peer, self._transcript_hash, self._shared = msg, th, shared
        self._out.append(AuthMessage(self.role, sig).encode())
        self.state = HandshakeState.AUTH_SENT

    async def _on_auth(self, msg: AuthMessage, now: float) -> None:
        peer = self._peer
        if self.state is not HandshakeState.AUTH_SENT or peer is None:
            raise auth_error(V.PROTOCOL_VIOLATION, "AUTH before HELLO, or a second AUTH")
        if msg.role is self.role:
            raise auth_error(V.PROTOCOL_VIOLATION, "our own AUTH came back (reflected)")
        signed = auth_signature_input(peer.role, self._transcript_hash)
        ok = await self._crypto.verify(peer.alg, peer.public_key, msg.signature, signed)
        self._still(HandshakeState.AUTH_SENT)
        peer_id = PeerId.from_public_key(peer.alg, peer.public_key)
        if not ok:
            raise auth_error(V.BAD_SIGNATURE, f"AUTH from PeerId {peer_id}")
        if self._expected is not None and peer_id != self._expected:
            raise auth_error(V.KEY_CHANGED, f"pinned PeerId {self._expected}, the peer proved {peer_id}")
        trust = None
        if self._known is not None:
            trust = self._known.check(peer.alg, peer.public_key, contact=self._contact)
            if trust.status is TrustStatus.NOT_ALLOWED:
                self._fail(auth_error(V.NOT_ALLOWED, f"PeerId {peer_id}"), trust)
                return
            if trust.status is TrustStatus.IDENTITY_CHANGED:
                self._fail(auth_error(V.KEY_CHANGED, f"{trust.previous} on record, the peer "
                                                     f"proved {peer_id}"), trust)
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


def _fingerprint(fp: Fingerprint | bytes) -> Fingerprint:
    if isinstance(fp, Fingerprint):
        return fp
    if len(fp) != HashFunction.SHA256.digest_size:
        raise InvalidArgumentError(
            f"a bare fingerprint must be a 32-byte sha-256 digest, got {len(fp)} bytes: "
            "pass a Fingerprint for other hash functions")
    return Fingerprint(HashFunction.SHA256, bytes(fp))
