"""The oracle Crypto implementation: RFC known answers, byte formats, docstring examples."""

from __future__ import annotations

import asyncio
import importlib
import re
import textwrap

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pyapp.core.security.interface import (
    Crypto,
    InvalidKeyError,
    KeyAgreementAlgorithm,
    SignatureAlgorithm,
)
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.unit

# RFC 5869 appendix A.1 and A.3 (HKDF-SHA-256).
RFC5869 = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


def test_oracle_satisfies_protocol() -> None:
    crypto: Crypto = OracleCrypto()  # mypy checks the structural match
    assert crypto is not None


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_hkdf_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    out = asyncio.run(
        OracleCrypto().hkdf_sha256(
            bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length
        )
    )
    assert out.hex() == okm


def test_sha256_known_answer() -> None:
    digest = asyncio.run(OracleCrypto().sha256(b"abc"))
    assert digest.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_aead_round_trip_and_tamper() -> None:
    async def go() -> None:
        c = OracleCrypto()
        key = await c.import_aead_key(bytes(32))
        sealed = await c.aead_seal(key, bytes(12), b"pt", b"aad")
        assert len(sealed) == 2 + 16
        assert await c.aead_open(key, bytes(12), sealed, b"aad") == b"pt"
        assert await c.aead_open(key, bytes(12), sealed, b"aaD") is None
        assert await c.aead_open(key, bytes(12), sealed[:-1] + b"\0", b"aad") is None

    asyncio.run(go())


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_signature_formats(alg: SignatureAlgorithm) -> None:
    async def go() -> None:
        c = OracleCrypto()
        key = await c.generate_signing_key(alg)
        assert len(key.public_key) == (32 if alg is SignatureAlgorithm.ED25519 else 65)
        sig = await c.sign(key, b"msg")
        assert len(sig) == 64
        assert await c.verify(alg, key.public_key, sig, b"msg")
        assert not await c.verify(alg, key.public_key, sig, b"msG")
        assert not await c.verify(alg, key.public_key, sig[:-1], b"msg")
        assert not await c.verify(alg, b"\x04" + bytes(64), sig, b"msg")  # not a key
        if alg is SignatureAlgorithm.ECDSA_P256:
            # P1363 r||s, checked against cryptography's own DER verifier.
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public_key)
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            pub.verify(der, b"msg", ec.ECDSA(hashes.SHA256()))

    asyncio.run(go())


@pytest.mark.parametrize("alg", list(KeyAgreementAlgorithm))
def test_ecdh_agrees_and_rejects_bad_points(alg: KeyAgreementAlgorithm) -> None:
    async def go() -> None:
        c = OracleCrypto()
        a, b = await c.generate_ecdh_key(alg), await c.generate_ecdh_key(alg)
        s1, s2 = await c.ecdh_derive(a, b.public_key), await c.ecdh_derive(b, a.public_key)
        assert s1 == s2 and len(s1) == 32
        bad = bytes(32) if alg is KeyAgreementAlgorithm.X25519 else b"\x04" + bytes(64)
        with pytest.raises(InvalidKeyError):
            await c.ecdh_derive(a, bad)  # all-zero X25519 result / point not on curve

    asyncio.run(go())


def test_seeded_oracle_is_deterministic() -> None:
    async def keys(seed: bytes) -> tuple[bytes, bytes]:
        c = OracleCrypto(seed=seed)
        return (
            (await c.generate_signing_key(SignatureAlgorithm.ED25519)).public_key,
            await c.random_bytes(40),
        )

    assert asyncio.run(keys(b"x")) == asyncio.run(keys(b"x")) != asyncio.run(keys(b"y"))


MODULES = [
    "pyapp.core.security",
    "pyapp.core.security.interface",
    "pyapp.core.security.identity",
    "pyapp.core.security.transcript",
    "pyapp.core.security.handshake",
    "pyapp.core.security.keys",
    "pyapp.core.security.envelope",
    "pyapp.core.security.replay",
    "tests.support.oracle_crypto",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_example_runs(name: str) -> None:
    doc = importlib.import_module(name).__doc__ or ""
    m = re.search(r"Example[^\n]*::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert m, f"{name} has no runnable example"
    exec(compile(textwrap.dedent(m.group(1)), f"<{name} example>", "exec"), {})
