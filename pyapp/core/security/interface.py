"""The crypto interface the security core is written against.

Two implementations exist: WebCrypto over Pyodide's FFI in the page, and the
``cryptography``-based oracle in ``tests/support/oracle_crypto.py`` for CPython
tests. Both implement :class:`Crypto`; the core never imports either. Every
method is ``async`` because every WebCrypto call returns a Promise.

Keys are opaque handles: the browser keeps non-extractable ``CryptoKey``
objects and Python only ever sees the wrapper dataclasses below. Public keys
are plain bytes in fixed formats so they can be hashed, sent and compared.

Example (with the test oracle)::

    import asyncio
    from pyapp.core.security.interface import SignatureAlgorithm
    from tests.support.oracle_crypto import OracleCrypto

    async def demo() -> bool:
        crypto = OracleCrypto()
        key = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
        sig = await crypto.sign(key, b"hello")
        return await crypto.verify(key.alg, key.public_key, sig, b"hello")

    assert asyncio.run(demo())

Byte formats (the contract a WebCrypto implementation must meet):

* AES-256-GCM: 32-byte key, 12-byte nonce, 128-bit tag appended to the
  ciphertext (``ciphertext || tag``), exactly WebCrypto's ``encrypt`` output.
* Ed25519 public key: 32 raw bytes (``exportKey("raw")``); signature: 64 bytes.
* ECDSA P-256 public key: 65-byte uncompressed point ``04 || X || Y``
  (``exportKey("raw")``); signature: IEEE P1363 ``r || s``, 64 bytes, hash
  SHA-256 -- what WebCrypto's ``sign({name: "ECDSA", hash: "SHA-256"})``
  returns (not DER).
* X25519 public key: 32 raw bytes; ECDH P-256 public key: 65-byte
  uncompressed point. Shared secret: 32 bytes (for P-256, the X coordinate,
  which is what ``deriveBits(..., 256)`` returns).
* Private keys, only for exportable identities: PKCS#8 DER.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from pyapp.exceptions import InvalidKeyError

__all__ = [
    "AEAD_KEY_SIZE",
    "AEAD_NONCE_SIZE",
    "AEAD_TAG_SIZE",
    "SIGNATURE_SIZE",
    "AeadKey",
    "Crypto",
    "EcdhKeyPair",
    "InvalidKeyError",
    "KeyAgreementAlgorithm",
    "SignatureAlgorithm",
    "SigningKey",
    "ecdh_public_key_size",
    "signature_public_key_size",
]

AEAD_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16
SIGNATURE_SIZE = 64  # Ed25519 and P1363 ECDSA P-256 are both 64 bytes


class SignatureAlgorithm(enum.IntEnum):
    """Identity (signature) algorithm; the value is the wire byte."""

    ED25519 = 1
    ECDSA_P256 = 2


class KeyAgreementAlgorithm(enum.IntEnum):
    """Ephemeral key-agreement group; the value is the wire byte."""

    X25519 = 1
    ECDH_P256 = 2


def signature_public_key_size(alg: SignatureAlgorithm) -> int:
    """Raw public-key length for ``alg`` (32 for Ed25519, 65 for P-256)."""
    return 32 if alg is SignatureAlgorithm.ED25519 else 65


def ecdh_public_key_size(alg: KeyAgreementAlgorithm) -> int:
    """Raw public-key length for ``alg`` (32 for X25519, 65 for P-256)."""
    return 32 if alg is KeyAgreementAlgorithm.X25519 else 65


@dataclass(frozen=True, eq=False)
class SigningKey:
    """A signature key pair: the private half stays inside the implementation."""

    alg: SignatureAlgorithm
    """Which signature algorithm this key is for."""
    public_key: bytes
    """Raw public key (32 or 65 bytes, see the module docstring)."""
    handle: object = field(repr=False)
    """Implementation-specific private-key handle (a ``CryptoKey`` proxy in the page)."""
    extractable: bool = False
    """Whether :meth:`Crypto.export_private_key` may export the private key."""


@dataclass(frozen=True, eq=False)
class EcdhKeyPair:
    """An ephemeral key-agreement key pair, used for one handshake."""

    alg: KeyAgreementAlgorithm
    """Which group this key is in."""
    public_key: bytes
    """Raw public key (32 or 65 bytes)."""
    handle: object = field(repr=False)
    """Implementation-specific private-key handle."""


@dataclass(frozen=True, eq=False)
class AeadKey:
    """An imported AES-256-GCM key (non-extractable in the page)."""

    handle: object = field(repr=False)
    """Implementation-specific key handle."""


class Crypto(Protocol):
    """Everything the security core needs from a crypto library, and nothing more."""

    async def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from a CSPRNG (``crypto.getRandomValues``)."""
        ...

    async def sha256(self, data: bytes) -> bytes:
        """The 32-byte SHA-256 digest of ``data``."""
        ...

    async def hkdf_sha256(self, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
        """RFC 5869 HKDF-SHA-256 (extract then expand), ``length`` <= 8160 bytes.

        An empty ``salt`` means HashLen zero bytes, as in RFC 5869 section 2.2
        (WebCrypto treats an empty salt the same way).
        """
        ...

    async def import_aead_key(self, key: bytes) -> AeadKey:
        """Import 32 raw bytes as a non-extractable AES-256-GCM key."""
        ...

    async def aead_seal(self, key: AeadKey, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM encrypt; returns ``ciphertext || 16-byte tag``."""
        ...

    async def aead_open(
        self, key: AeadKey, nonce: bytes, sealed: bytes, aad: bytes
    ) -> bytes | None:
        """AES-256-GCM decrypt ``ciphertext || tag``; ``None`` if authentication fails.

        Never returns (or leaks) any plaintext when the tag does not verify.
        """
        ...

    async def generate_signing_key(
        self, alg: SignatureAlgorithm, *, extractable: bool = False
    ) -> SigningKey:
        """A fresh identity key; ``extractable`` must be chosen now (WebCrypto cannot change it)."""
        ...

    async def sign(self, key: SigningKey, data: bytes) -> bytes:
        """A 64-byte signature over ``data`` (Ed25519, or ECDSA-SHA-256 in P1363 form)."""
        ...

    async def verify(
        self, alg: SignatureAlgorithm, public_key: bytes, signature: bytes, data: bytes
    ) -> bool:
        """``True`` iff ``signature`` is valid; ``False`` for a bad signature *or* a bad key."""
        ...

    async def export_private_key(self, key: SigningKey) -> bytes:
        """PKCS#8 DER of an extractable key (``exportKey("pkcs8")``)."""
        ...

    async def import_signing_key(
        self, alg: SignatureAlgorithm, pkcs8: bytes, public_key: bytes, *, extractable: bool = False
    ) -> SigningKey:
        """Import a PKCS#8 private key whose raw public key is ``public_key``.

        Raises :class:`InvalidKeyError` if the bytes do not parse. The caller
        (``identity.import_identity``) checks that the halves match.
        """
        ...

    async def generate_ecdh_key(self, alg: KeyAgreementAlgorithm) -> EcdhKeyPair:
        """A fresh ephemeral key pair in group ``alg``."""
        ...

    async def ecdh_derive(self, key: EcdhKeyPair, peer_public_key: bytes) -> bytes:
        """The 32-byte shared secret; :class:`InvalidKeyError` for a bad peer key."""
        ...
