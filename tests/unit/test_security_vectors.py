"""Re-check tests/fixtures/crypto_vectors.json against the oracle and the core.

The same file is what the browser test feeds to WebCrypto; if this test
passes, the file is a faithful statement of pyapp's byte formats.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pyapp.core.security.envelope import SecureChannel, open_envelope
from pyapp.core.security.fingerprint import encode_fingerprints
from pyapp.core.security.handshake import transcript_from_hellos
from pyapp.core.security.identity import PeerId, alg_from_name
from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.keys import (
    Direction,
    Role,
    derive_envelope_key,
    derive_psk_secrets,
    derive_session_keys,
)
from pyapp.core.security.transcript import auth_signature_input
from tests.support.make_crypto_vectors import build_vectors
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.unit

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "crypto_vectors.json").read_text()
)
H = bytes.fromhex


def test_file_matches_generator() -> None:
    fresh = asyncio.run(build_vectors())
    for name in ("signatures",):  # ECDSA signatures are randomised; checked by verify below
        fresh.pop(name)
    stored = {k: v for k, v in VECTORS.items() if k != "signatures"}
    assert fresh == stored


def test_vectors_open_and_verify() -> None:
    async def go() -> None:
        c = OracleCrypto()
        for v in VECTORS["hkdf_sha256"]:
            okm = await c.hkdf_sha256(H(v["ikm"]), H(v["salt"]), H(v["info"]), v["length"])
            assert okm.hex() == v["okm"]
        for v in VECTORS["psk_direction_secrets"]:
            keys = await derive_psk_secrets(c, H(v["psk"]))
            assert keys.offerer_to_answerer.hex() == v["offerer_to_answerer"]
            assert keys.answerer_to_offerer.hex() == v["answerer_to_offerer"]
        for v in VECTORS["envelope_keys"]:
            raw = await derive_envelope_key(
                c, H(v["direction_secret"]), v["key_id"], H(v["prefix"]), v["channel_id"]
            )
            assert raw.hex() == v["key"]
        for v in VECTORS["envelopes"]:
            key = await c.import_aead_key(H(v["key"]))
            env = H(v["envelope"])
            assert env[5:17] == H(v["nonce"])
            pt = await open_envelope(
                c, key, env, v["channel_id"], Direction(v["direction"]), H(v["aad"])
            )
            assert pt.hex() == v["plaintext"]
        s = VECTORS["psk_stream"]
        rx = await SecureChannel.from_psk(
            c, H(s["psk"]), Role.ANSWERER, s["channel_id"], reliable=True
        )
        opened = [(await rx.open(H(e), now=0.0)).hex() for e in s["envelopes"]]
        assert opened == s["plaintexts"]
        for v in VECTORS["signatures"]:
            alg = alg_from_name(v["alg"])
            assert await c.verify(alg, H(v["public_key"]), H(v["signature"]), H(v["message"]))

    asyncio.run(go())


def test_handshake_vector() -> None:
    async def go() -> None:
        c = OracleCrypto()
        v = VECTORS["handshake"]
        o, a, msgs = v["offerer"], v["answerer"], v["messages"]
        t = transcript_from_hellos(H(msgs["hello_offerer"]), H(msgs["hello_answerer"]))
        assert t.encode().hex() == v["transcript"]
        assert encode_fingerprints(t.offerer.fingerprints).hex() == o["dtls_fingerprints_bound"]
        assert encode_fingerprints(t.answerer.fingerprints).hex() == a["dtls_fingerprints_bound"]
        assert [str(fp).split()[0] for fp in t.offerer.fingerprints] == ["sha-512"]
        th = await c.sha256(t.encode())
        assert th.hex() == v["transcript_hash"]
        for side, role in ((o, Role.OFFERER), (a, Role.ANSWERER)):
            auth = H(msgs[f"auth_{role.name.lower()}"])
            pub = H(side["identity_public_key"])
            signed = auth_signature_input(role, th)
            assert await c.verify(SignatureAlgorithm.ED25519, pub, auth[3:], signed)
            assert str(PeerId.from_public_key(SignatureAlgorithm.ED25519, pub)) == side["peer_id"]
        keys = await derive_session_keys(c, H(v["shared_secret"]), th)
        assert keys.offerer_to_answerer.hex() == v["offerer_to_answerer"]
        assert keys.answerer_to_offerer.hex() == v["answerer_to_offerer"]

    asyncio.run(go())
