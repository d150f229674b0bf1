"""Generate ``tests/fixtures/crypto_vectors.json`` with the CPython oracle.

Run ``python -m tests.support.make_crypto_vectors`` from the repo root. The
output is deterministic (seeded randomness, Ed25519 for the handshake) except
the ECDSA P-256 signature vector, which is verify-only. ``build_vectors`` is
also what ``tests/unit/test_security_vectors.py`` re-runs to check the file.

All byte strings are lowercase hex. The browser test opens/verifies these with
WebCrypto and seals new ones for CPython to open.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from pyapp.core.security.envelope import EnvelopeHeader, SecureChannel, seal_envelope
from pyapp.core.security.fingerprint import (
    HashFunction,
    certificate_fingerprint,
    encode_fingerprints,
)
from pyapp.core.security.handshake import Handshake, HandshakeComplete, transcript_from_hellos
from pyapp.core.security.identity import PeerId
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Direction, Role, derive_envelope_key, derive_psk_secrets
from tests.support import pump
from tests.support.oracle_crypto import OracleCrypto

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "crypto_vectors.json"

# RFC 5869 appendix A, test cases 1 and 3.
HKDF_CASES = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42),
    ("0b" * 22, "", "", 42),
]
# The offerer plays aiortc (three fingerprint lines, the answerer's browser kept
# sha-512); the answerer plays a browser (one sha-256 line).
FPS_OFFERER = [certificate_fingerprint(b"offerer certificate", h) for h in HashFunction]
FP_ANSWERER = certificate_fingerprint(b"answerer certificate", HashFunction.SHA256)


def _pkcs8(handle: Any) -> str:
    der: bytes = handle.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der.hex()


async def _handshake_vector() -> dict[str, Any]:
    crypto = OracleCrypto(seed=b"pyapp handshake vector v1")
    id_o = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
    id_a = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
    off = Handshake(crypto, Role.OFFERER, id_o, FPS_OFFERER, FP_ANSWERER, now=0.0)
    ans = Handshake(crypto, Role.ANSWERER, id_a, [FP_ANSWERER], FPS_OFFERER[2:], now=0.0)
    await off.start()
    await ans.start()
    msgs: dict[str, bytes] = {}

    def record(src: Handshake, msg: bytes) -> bytes:
        kind = "hello" if msg[0] == 1 else "auth"
        msgs[f"{kind}_{src.role.name.lower()}"] = msg
        return msg

    await pump(off, ans, relay=record)
    eo, ea = off.next_event(), ans.next_event()
    assert isinstance(eo, HandshakeComplete) and isinstance(ea, HandshakeComplete)
    assert eo.keys == ea.keys
    transcript = transcript_from_hellos(msgs["hello_offerer"], msgs["hello_answerer"]).encode()
    eph_o, eph_a = off._ephemeral, ans._ephemeral  # the vector needs the private halves
    assert eph_o is not None and eph_a is not None
    return {
        "offerer": {
            "identity_alg": "ed25519",
            "identity_pkcs8": _pkcs8(id_o.handle),
            "identity_public_key": id_o.public_key.hex(),
            "peer_id": str(PeerId.from_public_key(id_o.alg, id_o.public_key)),
            "ephemeral_alg": "x25519",
            "ephemeral_pkcs8": _pkcs8(eph_o.handle),
            "ephemeral_public_key": eph_o.public_key.hex(),
            "dtls_fingerprints_in_sdp": [str(fp) for fp in FPS_OFFERER],
            "dtls_fingerprints_bound": encode_fingerprints(FPS_OFFERER[2:]).hex(),
        },
        "answerer": {
            "identity_alg": "ed25519",
            "identity_pkcs8": _pkcs8(id_a.handle),
            "identity_public_key": id_a.public_key.hex(),
            "peer_id": str(PeerId.from_public_key(id_a.alg, id_a.public_key)),
            "ephemeral_alg": "x25519",
            "ephemeral_pkcs8": _pkcs8(eph_a.handle),
            "ephemeral_public_key": eph_a.public_key.hex(),
            "dtls_fingerprints_in_sdp": [str(FP_ANSWERER)],
            "dtls_fingerprints_bound": encode_fingerprints([FP_ANSWERER]).hex(),
        },
        "messages": {k: v.hex() for k, v in sorted(msgs.items())},
        "transcript": transcript.hex(),
        "transcript_hash": eo.transcript_hash.hex(),
        "shared_secret": (await crypto.ecdh_derive(eph_o, eph_a.public_key)).hex(),
        "offerer_to_answerer": eo.keys.offerer_to_answerer.hex(),
        "answerer_to_offerer": eo.keys.answerer_to_offerer.hex(),
    }


async def build_vectors() -> dict[str, Any]:
    """Every vector, as a JSON-able dict."""
    crypto = OracleCrypto(seed=b"pyapp crypto vectors v1")
    hkdf = []
    for ikm, salt, info, length in HKDF_CASES:
        okm = await crypto.hkdf_sha256(
            bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length
        )
        hkdf.append({"ikm": ikm, "salt": salt, "info": info, "length": length, "okm": okm.hex()})

    psk = bytes(range(32))
    keys = await derive_psk_secrets(crypto, psk)
    psk_vec = {
        "psk": psk.hex(),
        "offerer_to_answerer": keys.offerer_to_answerer.hex(),
        "answerer_to_offerer": keys.answerer_to_offerer.hex(),
    }

    envelope_keys, envelopes = [], []
    cases = [
        (
            keys.offerer_to_answerer,
            0,
            bytes.fromhex("a1b2c3d4"),
            1,
            Direction.OFFERER_TO_ANSWERER,
            0,
            b"",
            b"hello",
        ),
        (
            keys.answerer_to_offerer,
            7,
            bytes.fromhex("00000001"),
            4096,
            Direction.ANSWERER_TO_OFFERER,
            2**40 + 5,
            b"extra aad",
            b"",
        ),
        (
            keys.offerer_to_answerer,
            2**32 - 1,
            bytes.fromhex("ffffffff"),
            2**32 - 1,
            Direction.OFFERER_TO_ANSWERER,
            2**64 - 1,
            b"",
            bytes(range(256)) * 4,
        ),
    ]
    for secret, key_id, prefix, channel, direction, counter, aad, plaintext in cases:
        raw = await derive_envelope_key(crypto, secret, key_id, prefix, channel)
        envelope_keys.append(
            {
                "direction_secret": secret.hex(),
                "key_id": key_id,
                "prefix": prefix.hex(),
                "channel_id": channel,
                "key": raw.hex(),
            }
        )
        header = EnvelopeHeader(key_id, prefix, counter)
        env = await seal_envelope(
            crypto, await crypto.import_aead_key(raw), header, channel, direction, plaintext, aad
        )
        envelopes.append(
            {
                "key": raw.hex(),
                "key_id": key_id,
                "prefix": prefix.hex(),
                "counter": counter,
                "nonce": header.nonce.hex(),
                "channel_id": channel,
                "direction": int(direction),
                "aad": aad.hex(),
                "plaintext": plaintext.hex(),
                "envelope": env.hex(),
            }
        )

    # A PSK session stream, as the receiver would see it (opens with SecureChannel.from_psk).
    sender = await SecureChannel.from_psk(crypto, psk, Role.OFFERER, channel_id=9, reliable=True)
    stream = [(await sender.seal(m, now=0.0)).hex() for m in (b"one", b"two", b"three")]
    psk_stream = {
        "psk": psk.hex(),
        "sender_role": "offerer",
        "channel_id": 9,
        "reliable": True,
        "plaintexts": [b"one".hex(), b"two".hex(), b"three".hex()],
        "envelopes": stream,
    }

    signatures = []
    for alg in SignatureAlgorithm:
        key = await crypto.generate_signing_key(alg)
        msg = b"pyapp signature vector"
        signatures.append(
            {
                "alg": "ed25519" if alg is SignatureAlgorithm.ED25519 else "ecdsa-p256",
                "pkcs8": _pkcs8(key.handle),
                "public_key": key.public_key.hex(),
                "message": msg.hex(),
                "signature": (await crypto.sign(key, msg)).hex(),
                "deterministic": alg is SignatureAlgorithm.ED25519,
            }
        )

    ecdh = []
    for group in KeyAgreementAlgorithm:
        k1 = await crypto.generate_ecdh_key(group)
        k2 = await crypto.generate_ecdh_key(group)
        ecdh.append(
            {
                "alg": "x25519" if group is KeyAgreementAlgorithm.X25519 else "ecdh-p256",
                "private_pkcs8": _pkcs8(k1.handle),
                "public_key": k1.public_key.hex(),
                "peer_public_key": k2.public_key.hex(),
                "shared_secret": (await crypto.ecdh_derive(k1, k2.public_key)).hex(),
            }
        )

    return {
        "format": "pyapp-crypto-vectors",
        "version": 2,
        "generator": "tests/support/make_crypto_vectors.py (cryptography oracle)",
        "hkdf_sha256": hkdf,
        "psk_direction_secrets": [psk_vec],
        "envelope_keys": envelope_keys,
        "envelopes": envelopes,
        "psk_stream": psk_stream,
        "signatures": signatures,
        "ecdh": ecdh,
        "handshake": await _handshake_vector(),
    }


def main() -> None:
    data = asyncio.run(build_vectors())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
