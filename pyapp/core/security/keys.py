"""The HKDF-SHA-256 key schedule (RFC 5869): every key pyapp uses comes from here.

Three levels, all HKDF-SHA-256 through :meth:`Crypto.hkdf_sha256`:

1. **Direction secrets** (32 bytes each, one per direction):

   * after a handshake: ``HKDF(ikm=ECDH shared secret, salt=transcript hash,
     info="pyapp/v1 session " + direction label)``;
   * from a pre-shared key: ``HKDF(ikm=PSK, salt="pyapp/v1 psk",
     info="pyapp/v1 psk " + direction label)`` -- the raw PSK never keys AES.

   The direction label is ``"offerer->answerer"`` or ``"answerer->offerer"``,
   so two peers that share one PSK still seal under different keys.
2. **Epoch keys** (one AES-256-GCM key per direction, channel and key epoch):
   ``HKDF(ikm=direction secret, salt=key_id (4 bytes BE) || nonce prefix (4
   bytes), info="pyapp/v1 envelope key " + channel_id (4 bytes BE))``.
   A rekey picks the next key id and a fresh random prefix, so a new key is
   used and the counter can restart at zero without any nonce reuse.

Example::

    import asyncio
    from pyapp.core.security.keys import Role, derive_psk_secrets
    from tests.support.oracle_crypto import OracleCrypto

    keys = asyncio.run(derive_psk_secrets(OracleCrypto(), b"k" * 32))
    assert keys.send_secret(Role.OFFERER) == keys.receive_secret(Role.ANSWERER)
    assert keys.send_secret(Role.OFFERER) != keys.send_secret(Role.ANSWERER)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pyapp.core.security.interface import Crypto
from pyapp.exceptions import LocalProtocolError

__all__ = [
    "MIN_PSK_SIZE",
    "Direction",
    "Role",
    "SessionKeys",
    "derive_envelope_key",
    "derive_psk_secrets",
    "derive_session_keys",
]

MIN_PSK_SIZE = 16
SECRET_SIZE = 32

SESSION_INFO = b"pyapp/v1 session "
PSK_SALT = b"pyapp/v1 psk"
PSK_INFO = b"pyapp/v1 psk "
ENVELOPE_INFO = b"pyapp/v1 envelope key "


class Role(enum.IntEnum):
    """Which side of the WebRTC offer/answer exchange we are; the value is the wire byte."""

    OFFERER = 0
    ANSWERER = 1

    @property
    def peer(self) -> Role:
        """The other role."""
        return Role.ANSWERER if self is Role.OFFERER else Role.OFFERER


class Direction(enum.IntEnum):
    """A direction of travel; the value is the byte in the envelope's associated data."""

    OFFERER_TO_ANSWERER = 0
    ANSWERER_TO_OFFERER = 1

    @classmethod
    def sent_by(cls, role: Role) -> Direction:
        """The direction of messages that ``role`` sends."""
        return cls.OFFERER_TO_ANSWERER if role is Role.OFFERER else cls.ANSWERER_TO_OFFERER

    @property
    def label(self) -> bytes:
        """The HKDF info suffix for this direction."""
        return (
            b"offerer->answerer" if self is Direction.OFFERER_TO_ANSWERER else b"answerer->offerer"
        )


@dataclass(frozen=True)
class SessionKeys:
    """One 32-byte secret per direction; epoch keys are derived from these."""

    offerer_to_answerer: bytes = field(repr=False)
    """Secret for messages the offerer sends."""
    answerer_to_offerer: bytes = field(repr=False)
    """Secret for messages the answerer sends."""
    first_key_id: int | None = 0
    """Key id of the first epoch: 0 after a handshake; ``None`` = random (PSK mode)."""

    def secret(self, direction: Direction) -> bytes:
        """The secret for ``direction``."""
        if direction is Direction.OFFERER_TO_ANSWERER:
            return self.offerer_to_answerer
        return self.answerer_to_offerer

    def send_secret(self, role: Role) -> bytes:
        """The secret ``role`` seals with."""
        return self.secret(Direction.sent_by(role))

    def receive_secret(self, role: Role) -> bytes:
        """The secret ``role`` opens with."""
        return self.secret(Direction.sent_by(role.peer))


async def derive_session_keys(
    crypto: Crypto, shared_secret: bytes, transcript_hash: bytes
) -> SessionKeys:
    """Direction secrets after a handshake (the transcript hash is the HKDF salt)."""
    o2a, a2o = [
        await crypto.hkdf_sha256(
            shared_secret, transcript_hash, SESSION_INFO + d.label, SECRET_SIZE
        )
        for d in Direction
    ]
    return SessionKeys(o2a, a2o, first_key_id=0)


async def derive_psk_secrets(crypto: Crypto, psk: bytes) -> SessionKeys:
    """Direction secrets from a pre-shared key (at least 16 bytes, ideally 32 random bytes)."""
    if len(psk) < MIN_PSK_SIZE:
        raise LocalProtocolError(f"pre-shared key must be at least {MIN_PSK_SIZE} bytes")
    o2a, a2o = [
        await crypto.hkdf_sha256(psk, PSK_SALT, PSK_INFO + d.label, SECRET_SIZE) for d in Direction
    ]
    return SessionKeys(o2a, a2o, first_key_id=None)


async def derive_envelope_key(
    crypto: Crypto, direction_secret: bytes, key_id: int, prefix: bytes, channel_id: int
) -> bytes:
    """The 32-byte AES-256-GCM key for one (direction, channel, key epoch)."""
    if len(prefix) != 4 or not 0 <= key_id < 2**32 or not 0 <= channel_id < 2**32:
        raise LocalProtocolError("key id and channel id are u32; the prefix is 4 bytes")
    salt = key_id.to_bytes(4, "big") + prefix
    return await crypto.hkdf_sha256(
        direction_secret, salt, ENVELOPE_INFO + channel_id.to_bytes(4, "big"), SECRET_SIZE
    )
