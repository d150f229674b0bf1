"""The AES-256-GCM envelope: sealing and opening application messages.

Wire format (17-byte header, then ciphertext and the 16-byte GCM tag)::

    offset size  field
    0      1     version        0x01
    1      4     key_id         u32 big-endian: the sender's key epoch
    5      4     nonce_prefix   4 random bytes, fresh for every epoch
    9      8     counter        u64 big-endian, 0, 1, 2, ... within the epoch
    17     n+16  ciphertext || tag

    nonce = nonce_prefix || counter                       (12 bytes, never random)
    aad   = header (17 bytes) || channel_id (u32 BE) || direction (1 byte)
            || caller's extra aad

The epoch key is derived from the direction secret, the key id, the prefix
and the channel id (see :mod:`pyapp.core.security.keys`), so a rekey, a
restart (fresh prefix) or another channel never reuses a (key, nonce) pair.
The direction byte in the AAD (and the direction-separated keys) make a
message reflected back to its sender fail to authenticate.

:class:`Sealer` and :class:`Opener` hold one direction of one logical channel:
counters, rekeying after ``N`` messages or ``T`` seconds (``now`` is passed
in), a grace window in which the previous epoch still opens (in-flight
messages are not lost), and replay protection -- strictly increasing counters
on reliable channels, a 1024-counter sliding window on unreliable ones.
Failures raise :class:`~pyapp.exceptions.DecryptionError` with ``reason`` one
of ``"authentication failed"``, ``"replay"``, ``"unknown key id"``,
``"malformed envelope"``; they are counted in ``Opener.rejected``. A tampered
message never yields plaintext.

Calls on one Sealer (or one Opener) must not overlap: await each ``seal`` and
send its result before the next (a reliable receiver needs counters in order).

Example::

    import asyncio
    from pyapp.core.security.envelope import SecureChannel
    from pyapp.core.security.keys import Role
    from tests.support.oracle_crypto import OracleCrypto

    async def demo() -> bytes:
        crypto, psk = OracleCrypto(), b"a shared secret of 32 bytes....."
        alice = await SecureChannel.from_psk(crypto, psk, Role.OFFERER, channel_id=1, reliable=True)
        bob = await SecureChannel.from_psk(crypto, psk, Role.ANSWERER, channel_id=1, reliable=True)
        return await bob.open(await alice.seal(b"buy 10 @ 42", now=0.0), now=0.0)

    assert asyncio.run(demo()) == b"buy 10 @ 42"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyapp.core.security.interface import AEAD_TAG_SIZE, AeadKey, Crypto
from pyapp.core.security.keys import (
    Direction,
    Role,
    SessionKeys,
    derive_envelope_key,
    derive_psk_secrets,
)
from pyapp.core.security.replay import DEFAULT_WINDOW, ReplayGuard, ReplayWindow, StrictCounter
from pyapp.exceptions import DecryptionError, LocalProtocolError

__all__ = [
    "ENVELOPE_OVERHEAD",
    "ENVELOPE_VERSION",
    "HEADER_SIZE",
    "EnvelopeHeader",
    "Opener",
    "RekeyPolicy",
    "Sealer",
    "SecureChannel",
    "envelope_aad",
    "open_envelope",
    "parse_envelope",
    "seal_envelope",
]

ENVELOPE_VERSION = 1
HEADER_SIZE = 17
ENVELOPE_OVERHEAD = HEADER_SIZE + AEAD_TAG_SIZE

AUTHENTICATION_FAILED = "authentication failed"
REPLAY = "replay"
UNKNOWN_KEY_ID = "unknown key id"
MALFORMED = "malformed envelope"

_U32 = 2**32
_OpenItem = tuple[AeadKey, bytes, memoryview, bytes]  # (key, nonce, ciphertext || tag, aad)
_MAX_COUNTER = 2**64 - 1


@dataclass(frozen=True)
class EnvelopeHeader:
    """The cleartext, authenticated header of an envelope."""

    key_id: int
    """Sender's key epoch (u32)."""
    prefix: bytes
    """4-byte random nonce prefix of that epoch."""
    counter: int
    """Message counter within the epoch (u64)."""

    def encode(self) -> bytes:
        """The 17 header bytes."""
        return (
            bytes([ENVELOPE_VERSION])
            + self.key_id.to_bytes(4, "big")
            + self.prefix
            + self.counter.to_bytes(8, "big")
        )

    @property
    def nonce(self) -> bytes:
        """The 12-byte GCM nonce: prefix || counter."""
        return self.prefix + self.counter.to_bytes(8, "big")


def _parse_header(data: bytes | bytearray | memoryview) -> EnvelopeHeader:
    if len(data) < ENVELOPE_OVERHEAD or data[0] != ENVELOPE_VERSION:
        raise DecryptionError(MALFORMED)
    return EnvelopeHeader(
        key_id=int.from_bytes(data[1:5], "big"),
        prefix=bytes(data[5:9]),
        counter=int.from_bytes(data[9:17], "big"),
    )


def parse_envelope(data: bytes) -> tuple[EnvelopeHeader, bytes]:
    """Split an envelope into header and ``ciphertext || tag``; ``DecryptionError`` if malformed."""
    return _parse_header(data), bytes(data[HEADER_SIZE:])


def envelope_aad(
    header: EnvelopeHeader, channel_id: int, direction: Direction, extra: bytes = b""
) -> bytes:
    """The associated data: header, channel id, direction, then the caller's extra bytes."""
    return header.encode() + channel_id.to_bytes(4, "big") + bytes([direction]) + extra


async def seal_envelope(
    crypto: Crypto,
    key: AeadKey,
    header: EnvelopeHeader,
    channel_id: int,
    direction: Direction,
    plaintext: bytes,
    aad: bytes = b"",
) -> bytes:
    """Low-level seal with an explicit key and header (golden vectors use this)."""
    sealed = await crypto.aead_seal(
        key, header.nonce, plaintext, envelope_aad(header, channel_id, direction, aad)
    )
    return header.encode() + sealed


async def open_envelope(
    crypto: Crypto,
    key: AeadKey,
    data: bytes,
    channel_id: int,
    direction: Direction,
    aad: bytes = b"",
) -> bytes:
    """Low-level open with an explicit key: no key-id or replay checks."""
    header, sealed = parse_envelope(data)
    plaintext = await crypto.aead_open(
        key, header.nonce, sealed, envelope_aad(header, channel_id, direction, aad)
    )
    if plaintext is None:
        raise DecryptionError(AUTHENTICATION_FAILED)
    return plaintext


@dataclass(frozen=True)
class RekeyPolicy:
    """When a sender moves to a new key epoch, and how long a receiver keeps the old one."""

    after_messages: int = 1 << 24
    """Start a new epoch after this many messages (well under GCM's usage limits)."""
    after_seconds: float = 3600.0
    """Start a new epoch after this long."""
    grace_seconds: float = 30.0
    """The receiver still opens the previous epoch for this long after the switch."""

    def __post_init__(self) -> None:
        if not 1 <= self.after_messages <= 1 << 32:
            raise LocalProtocolError("after_messages must be in 1..2**32")
        if self.after_seconds <= 0 or self.grace_seconds < 0:
            raise LocalProtocolError("after_seconds must be > 0 and grace_seconds >= 0")


@dataclass
class _SendEpoch:
    key_id: int
    prefix: bytes
    key: AeadKey
    started_at: float
    next_counter: int = 0


@dataclass
class _RecvEpoch:
    key_id: int
    prefix: bytes
    key: AeadKey
    guard: ReplayGuard
    expires_at: float | None = None  # set when it becomes the previous epoch


class Sealer:
    """Seals one direction of one logical channel."""

    def __init__(
        self,
        crypto: Crypto,
        secret: bytes,
        direction: Direction,
        channel_id: int,
        *,
        first_key_id: int | None = 0,
        policy: RekeyPolicy | None = None,
    ) -> None:
        if not 0 <= channel_id < _U32:
            raise LocalProtocolError("channel id must be a u32")
        self._crypto = crypto
        self._secret = secret
        self.direction = direction
        self.channel_id = channel_id
        self.policy = policy or RekeyPolicy()
        self._first_key_id = first_key_id
        self._epoch: _SendEpoch | None = None
        self._rekey_requested = False
        self._busy = False
        self.sealed = 0
        """Messages sealed so far (all epochs)."""

    @property
    def key_id(self) -> int | None:
        """The current epoch's key id (``None`` before the first seal)."""
        return self._epoch.key_id if self._epoch else None

    def request_rekey(self) -> None:
        """Make the next :meth:`seal` start a new epoch."""
        self._rekey_requested = True

    def _due(self, epoch: _SendEpoch, now: float) -> bool:
        return (
            self._rekey_requested
            or epoch.next_counter >= self.policy.after_messages
            or now - epoch.started_at >= self.policy.after_seconds
        )

    async def _new_epoch(self, now: float) -> _SendEpoch:
        if self._epoch is not None:
            key_id = (self._epoch.key_id + 1) % _U32
        elif self._first_key_id is None:  # PSK mode: a random start survives restarts
            key_id = int.from_bytes(await self._crypto.random_bytes(4), "big")
        else:
            key_id = self._first_key_id
        prefix = await self._crypto.random_bytes(4)
        raw = await derive_envelope_key(self._crypto, self._secret, key_id, prefix, self.channel_id)
        return _SendEpoch(key_id, prefix, await self._crypto.import_aead_key(raw), now)

    async def seal(self, plaintext: bytes, now: float, aad: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` into an envelope; rekeys first when the policy says so."""
        if self._busy:
            raise LocalProtocolError("overlapping seal() calls; await each one")
        self._busy = True
        try:
            key, header = await self._next_header(now)
            out = await seal_envelope(
                self._crypto, key, header, self.channel_id, self.direction, plaintext, aad
            )
            self.sealed += 1
            return out
        finally:
            self._busy = False

    async def reserve(self, now: float) -> tuple[AeadKey, EnvelopeHeader]:
        """The key and header of the next envelope, by :meth:`seal`'s rules, counted at once.

        For batching: the counter is taken now (call order = wire order), so
        several reserved messages can be encrypted by one crypto call
        (:func:`envelope_aad` gives each one's AAD). Counted in ``sealed`` here.
        """
        key, header = await self._next_header(now)
        self.sealed += 1
        return key, header

    async def _next_header(self, now: float) -> tuple[AeadKey, EnvelopeHeader]:
        epoch = self._epoch
        if epoch is None or self._due(epoch, now):
            epoch = self._epoch = await self._new_epoch(now)
            self._rekey_requested = False
        if epoch.next_counter > _MAX_COUNTER:  # unreachable with the policy's limit
            raise LocalProtocolError("counter exhausted")
        header = EnvelopeHeader(epoch.key_id, epoch.prefix, epoch.next_counter)
        epoch.next_counter += 1  # burnt even if sealing fails: never reuse a nonce
        return epoch.key, header


class Opener:
    """Opens one direction of one logical channel, with replay protection and key epochs.

    Key ids accepted: the current epoch, the previous one until its grace
    window ends, and the *next* one (``current + 1``), which becomes current
    once a message under it authenticates. Before the first message any key
    id is accepted (the first to authenticate becomes current); within the
    grace time after that, ``current - 1`` may still be adopted as the
    previous epoch (its messages were overtaken). Everything else is
    ``"unknown key id"``. A new epoch's key is derived on demand, but it only
    replaces anything after a message under it authenticates.
    """

    def __init__(
        self,
        crypto: Crypto,
        secret: bytes,
        direction: Direction,
        channel_id: int,
        *,
        reliable: bool,
        policy: RekeyPolicy | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not 0 <= channel_id < _U32:
            raise LocalProtocolError("channel id must be a u32")
        self._crypto = crypto
        self._secret = secret
        self.direction = direction
        self.channel_id = channel_id
        self.reliable = reliable
        self.policy = policy or RekeyPolicy()
        self._window = window
        self._current: _RecvEpoch | None = None
        self._previous: _RecvEpoch | None = None
        self._candidate: _RecvEpoch | None = None
        self._previous_open_until = 0.0
        self._busy = False
        self.opened = 0
        """Messages successfully opened."""
        self.rejected: Counter[str] = Counter()
        """Rejected messages by reason."""

    def _fail(self, reason: str) -> DecryptionError:
        self.rejected[reason] += 1
        return DecryptionError(reason)

    def _guard(self) -> ReplayGuard:
        return StrictCounter() if self.reliable else ReplayWindow(self._window)

    def _expire(self, now: float) -> None:
        prev = self._previous
        if prev is not None and prev.expires_at is not None and now >= prev.expires_at:
            self._previous = None

    def _known(self, header: EnvelopeHeader) -> _RecvEpoch | None:
        for epoch in (self._current, self._previous, self._candidate):
            if epoch is not None and (epoch.key_id, epoch.prefix) == (header.key_id, header.prefix):
                return epoch
        return None

    def _may_start_epoch(self, header: EnvelopeHeader, now: float) -> bool:
        cur = self._current
        if cur is None or header.key_id == (cur.key_id + 1) % _U32:
            return True
        # The first epoch we saw may not be the first one sent: on an unreliable
        # channel new-key messages can overtake old ones, so the epoch just before
        # the current one may still be adopted as "previous" during the grace time.
        return (
            self._previous is None
            and header.key_id == (cur.key_id - 1) % _U32
            and now < self._previous_open_until
        )

    async def open(self, data: bytes, now: float, aad: bytes = b"") -> bytes:
        """Authenticate and decrypt an envelope, or raise ``DecryptionError``."""
        if self._busy:
            raise LocalProtocolError("overlapping open() calls; await each one")
        self._busy = True
        try:
            return await self._open(data, now, aad)
        finally:
            self._busy = False

    async def _open(self, data: bytes, now: float, aad: bytes) -> bytes:
        self._expire(now)
        try:
            header, sealed = parse_envelope(data)
        except DecryptionError:
            raise self._fail(MALFORMED) from None
        epoch = self._known(header)
        if epoch is None:
            if not self._may_start_epoch(header, now):
                raise self._fail(UNKNOWN_KEY_ID)
            # Cache one candidate so a burst under the new key derives it once; it
            # only becomes current after a message under it authenticates.
            raw = await derive_envelope_key(
                self._crypto, self._secret, header.key_id, header.prefix, self.channel_id
            )
            key = await self._crypto.import_aead_key(raw)
            epoch = self._candidate = _RecvEpoch(header.key_id, header.prefix, key, self._guard())
        if not epoch.guard.check(header.counter):
            raise self._fail(REPLAY)
        plaintext = await self._crypto.aead_open(
            epoch.key,
            header.nonce,
            sealed,
            envelope_aad(header, self.channel_id, self.direction, aad),
        )
        if plaintext is None:
            raise self._fail(AUTHENTICATION_FAILED)
        epoch.guard.commit(header.counter)
        if epoch is self._candidate:
            self._candidate = None
            cur = self._current
            if cur is not None and epoch.key_id == (cur.key_id - 1) % _U32:
                epoch.expires_at = self._previous_open_until  # a late, overtaken epoch
                self._previous = epoch
            else:
                self._previous_open_until = now + self.policy.grace_seconds
                if cur is not None:
                    cur.expires_at = self._previous_open_until
                self._previous, self._current = cur, epoch
        self.opened += 1
        return plaintext

    async def open_many(
        self, batch: Sequence[bytes | bytearray | memoryview | str], now: float, aad: bytes = b""
    ) -> list[bytes | DecryptionError]:
        """Open envelopes in arrival order: each result is the plaintext or its (counted) error.

        In the steady state (more than one message, all under the current or
        previous epoch) the AEAD work goes to the crypto in one call
        (``aead_open_many`` when it has one); replay and tag checks are then
        applied one message at a time, in order, as :meth:`open` does, and a
        forged message never moves the window. Otherwise (a new epoch's first
        message among them) every message goes through :meth:`open`. A text
        (``str``) message cannot be an envelope: ``"malformed envelope"``.
        Binary messages may be memoryviews (a received batch's slices); the
        batched crypto is handed views of their ciphertext, not copies.
        """
        self._expire(now)
        planned: list[tuple[EnvelopeHeader, _RecvEpoch, _OpenItem] | None] = []
        steady = len(batch) > 1
        for data in batch:
            if isinstance(data, str):
                planned.append(None)
                continue
            try:
                header = _parse_header(data)
            except DecryptionError:
                planned.append(None)
                continue
            epoch = self._known(header)
            if epoch is None or epoch is self._candidate:
                steady = False  # a new epoch is adopted by open(), one message at a time
                break
            # A view, not a copy: the batched crypto reads the ciphertext in place.
            sealed = memoryview(data)[HEADER_SIZE:]
            planned.append((header, epoch, (epoch.key, header.nonce, sealed,
                                            envelope_aad(header, self.channel_id, self.direction, aad))))
        results: list[bytes | DecryptionError] = []
        if not steady:
            for data in batch:
                try:
                    if isinstance(data, str):
                        raise self._fail(MALFORMED)
                    results.append(await self.open(bytes(data), now, aad))
                except DecryptionError as exc:
                    results.append(exc)
            return results
        items = [p[2] for p in planned if p is not None]
        open_many = getattr(self._crypto, "aead_open_many", None)
        if open_many is not None:
            plain = iter(list(await open_many(items)))
        else:
            plain = iter([await self._crypto.aead_open(k, n, bytes(c), a) for k, n, c, a in items])
        for p in planned:
            if p is None:
                results.append(self._fail(MALFORMED))
                continue
            header, epoch, _ = p
            pt = next(plain)
            # Replay first, then the tag; commit only after both.
            if not epoch.guard.check(header.counter):
                results.append(self._fail(REPLAY))
            elif pt is None:
                results.append(self._fail(AUTHENTICATION_FAILED))
            else:
                epoch.guard.commit(header.counter)
                self.opened += 1
                results.append(pt)
        return results


@dataclass
class SecureChannel:
    """Both directions of one logical channel: a :class:`Sealer` and an :class:`Opener`."""

    sealer: Sealer
    """Seals what we send."""
    opener: Opener
    """Opens what the peer sends."""
    role: Role = field(default=Role.OFFERER)
    """Our role in the connection."""

    @classmethod
    def from_keys(
        cls,
        crypto: Crypto,
        keys: SessionKeys,
        role: Role,
        channel_id: int,
        *,
        reliable: bool,
        policy: RekeyPolicy | None = None,
    ) -> SecureChannel:
        """Mode 1: direction secrets from a completed handshake (or :meth:`from_psk`)."""
        send_dir = Direction.sent_by(role)
        return cls(
            Sealer(
                crypto,
                keys.send_secret(role),
                send_dir,
                channel_id,
                first_key_id=keys.first_key_id,
                policy=policy,
            ),
            Opener(
                crypto,
                keys.receive_secret(role),
                Direction.sent_by(role.peer),
                channel_id,
                reliable=reliable,
                policy=policy,
            ),
            role,
        )

    @classmethod
    async def from_psk(
        cls,
        crypto: Crypto,
        psk: bytes,
        role: Role,
        channel_id: int,
        *,
        reliable: bool,
        policy: RekeyPolicy | None = None,
    ) -> SecureChannel:
        """Mode 2: a pre-shared key; HKDF gives per-direction secrets, epochs start at a random key id."""
        keys = await derive_psk_secrets(crypto, psk)
        return cls.from_keys(crypto, keys, role, channel_id, reliable=reliable, policy=policy)

    async def seal(self, plaintext: bytes, now: float, aad: bytes = b"") -> bytes:
        """Seal a message to the peer."""
        return await self.sealer.seal(plaintext, now, aad)

    async def open(self, data: bytes, now: float, aad: bytes = b"") -> bytes:
        """Open a message from the peer."""
        return await self.opener.open(data, now, aad)
