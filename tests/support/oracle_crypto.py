"""The CPython implementation of :class:`pyapp.core.security.interface.Crypto`.

Built on ``cryptography``; it is the oracle the WebCrypto implementation is
checked against (through ``tests/fixtures/crypto_vectors.json``). The methods
are ``async`` only to match the Protocol; they compute immediately.

``OracleCrypto(seed=b"...")`` makes every random byte -- and therefore every
generated key, nonce and prefix -- deterministic, which the golden vectors need.
ECDSA signatures stay randomised (``cryptography`` picks ``k`` itself); Ed25519
is deterministic.

Example::

    import asyncio
    from tests.support.oracle_crypto import OracleCrypto

    crypto = OracleCrypto(seed=b"demo")
    assert len(asyncio.run(crypto.random_bytes(4))) == 4
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pyapp.core.security.interface import (
    AEAD_KEY_SIZE,
    AEAD_NONCE_SIZE,
    AeadKey,
    EcdhKeyPair,
    InvalidKeyError,
    KeyAgreementAlgorithm,
    SignatureAlgorithm,
    SigningKey,
)

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_RAW = serialization.Encoding.X962
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint


def _p256_public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(_RAW, _UNCOMPRESSED)


class OracleCrypto:
    """``cryptography``-backed :class:`~pyapp.core.security.interface.Crypto`."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._seed = seed
        self._counter = 0

    def _random(self, n: int) -> bytes:
        if self._seed is None:
            return os.urandom(n)
        out = b""
        while len(out) < n:
            block = self._seed + self._counter.to_bytes(8, "big")
            out += hashlib.sha256(block).digest()
            self._counter += 1
        return out[:n]

    def _p256_private(self) -> ec.EllipticCurvePrivateKey:
        scalar = int.from_bytes(self._random(32), "big") % (_P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())

    async def random_bytes(self, n: int) -> bytes:
        return self._random(n)

    async def sha256(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    async def hkdf_sha256(self, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
        return HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)

    async def import_aead_key(self, key: bytes) -> AeadKey:
        if len(key) != AEAD_KEY_SIZE:
            raise ValueError("AES-256-GCM keys are 32 bytes")
        return AeadKey(AESGCM(key))

    async def aead_seal(self, key: AeadKey, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        assert isinstance(key.handle, AESGCM) and len(nonce) == AEAD_NONCE_SIZE
        return key.handle.encrypt(nonce, plaintext, aad)

    async def aead_open(
        self, key: AeadKey, nonce: bytes, sealed: bytes, aad: bytes
    ) -> bytes | None:
        assert isinstance(key.handle, AESGCM) and len(nonce) == AEAD_NONCE_SIZE
        try:
            return key.handle.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None

    async def generate_signing_key(
        self, alg: SignatureAlgorithm, *, extractable: bool = False
    ) -> SigningKey:
        if alg is SignatureAlgorithm.ED25519:
            ed = ed25519.Ed25519PrivateKey.from_private_bytes(self._random(32))
            public = ed.public_key().public_bytes_raw()
            return SigningKey(alg, public, ed, extractable)
        p = self._p256_private()
        return SigningKey(alg, _p256_public_bytes(p.public_key()), p, extractable)

    async def sign(self, key: SigningKey, data: bytes) -> bytes:
        if isinstance(key.handle, ed25519.Ed25519PrivateKey):
            return key.handle.sign(data)
        assert isinstance(key.handle, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.handle.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # DER -> P1363

    async def verify(
        self, alg: SignatureAlgorithm, public_key: bytes, signature: bytes, data: bytes
    ) -> bool:
        if len(signature) != 64:
            return False
        try:
            if alg is SignatureAlgorithm.ED25519:
                ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
            else:
                pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
                der = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    async def export_private_key(self, key: SigningKey) -> bytes:
        if not key.extractable:
            raise ValueError("key is not extractable")
        assert isinstance(key.handle, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        return key.handle.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    async def import_signing_key(
        self, alg: SignatureAlgorithm, pkcs8: bytes, public_key: bytes, *, extractable: bool = False
    ) -> SigningKey:
        try:
            key = serialization.load_der_private_key(pkcs8, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKeyError("private key does not parse") from exc
        if alg is SignatureAlgorithm.ED25519 and isinstance(key, ed25519.Ed25519PrivateKey):
            return SigningKey(alg, public_key, key, extractable)
        if (
            alg is SignatureAlgorithm.ECDSA_P256
            and isinstance(key, ec.EllipticCurvePrivateKey)
            and isinstance(key.curve, ec.SECP256R1)
        ):
            return SigningKey(alg, public_key, key, extractable)
        raise InvalidKeyError("private key is not of the stated algorithm")

    async def generate_ecdh_key(self, alg: KeyAgreementAlgorithm) -> EcdhKeyPair:
        if alg is KeyAgreementAlgorithm.X25519:
            x = x25519.X25519PrivateKey.from_private_bytes(self._random(32))
            return EcdhKeyPair(alg, x.public_key().public_bytes_raw(), x)
        p = self._p256_private()
        return EcdhKeyPair(alg, _p256_public_bytes(p.public_key()), p)

    async def ecdh_derive(self, key: EcdhKeyPair, peer_public_key: bytes) -> bytes:
        try:
            if isinstance(key.handle, x25519.X25519PrivateKey):
                peer = x25519.X25519PublicKey.from_public_bytes(peer_public_key)
                return key.handle.exchange(peer)  # raises ValueError on an all-zero result
            assert isinstance(key.handle, ec.EllipticCurvePrivateKey)
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public_key)
            return key.handle.exchange(ec.ECDH(), pub)
        except ValueError as exc:
            raise InvalidKeyError("invalid peer key-agreement public key") from exc
