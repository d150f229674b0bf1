"""WebCrypto backend, identity, authentication and encryption in real Pyodide + Chromium.

Cross-implementation: the CPython oracle's vectors open/verify in the page,
and what the page seals/signs opens/verifies with the oracle here. The page side is
tests/pyodide/security_cases.py (called with ``pypage.call``).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyapp.core.security.envelope import SecureChannel, parse_envelope
from pyapp.core.security.handshake import Handshake, HandshakeComplete
from pyapp.core.security.identity import PeerId
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.browser

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "crypto_vectors.json"

PAGE = "tests.pyodide.security_cases"


@pytest.fixture(scope="module")
def page(pypage):
    return pypage


def run(coro):
    """Run an oracle coroutine (Playwright's sync API already owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_feature_detection_and_oracle_vectors_in_webcrypto(page):
    text = VECTORS.read_text()
    out = page.call(f"{PAGE}:oracle_vectors", vectors=json.loads(text))
    # Chromium 156 has both modern curves (P-256 remains the fallback elsewhere).
    assert out["algs"] == ["ED25519", "X25519"]
    assert out["hkdf"] == [True, True]
    assert out["psk"] == [True, True]
    assert out["epoch_keys"] == [True, True, True]
    assert out["envelopes"] == [True, "authentication failed"] * 3
    assert out["stream"] is True
    assert out["signatures"] == [True, False, True, True, False, True]
    assert out["ecdh"] == [True, True]
    assert out["handshake"] == [True] * 6


def test_browser_seals_and_signs_cpython_opens_and_verifies(page):
    oracle = OracleCrypto(seed=b"cpython side")
    cpy_x = run(oracle.generate_ecdh_key(KeyAgreementAlgorithm.X25519))
    cpy_p = run(oracle.generate_ecdh_key(KeyAgreementAlgorithm.ECDH_P256))
    out = page.call(f"{PAGE}:seal_and_sign", peer_x25519=cpy_x.public_key.hex(),
                    peer_p256=cpy_p.public_key.hex())

    async def check() -> None:
        rx = await SecureChannel.from_psk(oracle, bytes(range(32)), Role.OFFERER, channel_id=77,
                                          reliable=True)
        envs = [bytes.fromhex(e) for e in out["envs"]]
        got = [await rx.open(e, now=0.0, aad=b"ctx") for e in envs[:3]]
        assert got == [b"bid 1", b"", bytes(range(256)) * 300]
        assert await rx.open(envs[3], now=1.0) == b"after rekey"
        assert parse_envelope(envs[3])[0].key_id == parse_envelope(envs[0])[0].key_id + 1
        # A browser envelope opened with the raw oracle too (direction answerer->offerer).
        assert rx.opener.opened == 4
        from pyapp.core.security.identity import import_identity

        for item, alg in zip(out["sigs"], SignatureAlgorithm, strict=True):
            exp = item["export"]
            key = await import_identity(oracle, exp)
            assert key.alg is alg
            assert str(PeerId.from_public_key(alg, key.public_key)) == exp["peer_id"]
            assert await oracle.verify(alg, key.public_key, bytes.fromhex(item["sig"]),
                                       b"from the browser")
            assert not await oracle.verify(alg, key.public_key, bytes.fromhex(item["sig"]), b"x")
        for (pub, shared), mine in zip(out["ecdh"], (cpy_x, cpy_p), strict=True):
            assert (await oracle.ecdh_derive(mine, bytes.fromhex(pub))).hex() == shared

    run(check())


def test_handshake_browser_against_cpython_oracle(page):
    """A browser Handshake (WebCrypto) and a CPython one (oracle) complete with the same keys."""
    fp_b, fp_c = bytes([7]) * 32, bytes([9]) * 32
    oracle = OracleCrypto()
    ident = run(oracle.generate_signing_key(SignatureAlgorithm.ED25519))
    py = Handshake(oracle, Role.ANSWERER, ident, fp_c, fp_b, now=0.0)
    run(py.start())
    hello_b = page.call(f"{PAGE}:handshake_start")
    hello_c = py.data_to_send()[0]
    auth_b = page.call(f"{PAGE}:handshake_receive", message=hello_c.hex(), now=0.1)
    run(py.receive_message(bytes.fromhex(hello_b), now=0.1))
    auth_c = py.data_to_send()[0]
    run(py.receive_message(bytes.fromhex(auth_b), now=0.2))
    done_c = py.next_event()
    done_b = page.call(f"{PAGE}:handshake_finish", message=auth_c.hex(), now=0.2)
    assert isinstance(done_c, HandshakeComplete)
    assert done_b == ["HandshakeComplete", done_c.transcript_hash.hex(),
                      done_c.keys.offerer_to_answerer.hex(),
                      str(PeerId.from_public_key(ident.alg, ident.public_key))]


def test_authenticate_then_encrypted_channel_with_rekey(page):
    out = page.call(f"{PAGE}:authenticate_then_encrypted")
    assert out["peer_ids"] == [out["ids"][1], out["ids"][0]]
    assert out["roles"] == ["OFFERER", "ANSWERER"]
    assert out["th_equal"] and out["same_keys"] and out["session"]
    assert out["got_all"] is True and out["back"] == "pong"
    assert out["key_id"] == 2  # 120 messages, a new epoch every 50
    assert out["rejected"] == {}
    assert out["label"] == "pyapp-auth"
    assert max(out["ms"]) < 2000


def test_tampering_replay_reflection_on_a_real_channel(page):
    out = page.call(f"{PAGE}:tampering_replay_reflection")
    assert out["results"] == [
        "error: authentication failed",   # reflected: our own direction's key and AAD
        "m0",
        "error: replay",
        "error: authentication failed",   # bit flip: no plaintext delivered
        "error: authentication failed",   # header is authenticated data
        "error: malformed envelope",
        "error: malformed envelope",
        "m1",                              # the genuine message still arrives after all that
        "m2",
    ]
    assert out["batched"] == ["m3", "error: replay", "error: authentication failed", "m4", "m5",
                              "error: replay"]
    assert out["rejected"] == {"replay": 3, "authentication failed": 4, "malformed envelope": 2}
    assert out["received"] == 6


def test_wrong_pinned_peer_id_and_silent_peer_fail(page):
    out = page.call(f"{PAGE}:wrong_pin_and_silent_peer")
    # The pinning side rejects; the other side had already verified a valid peer.
    assert out["pinned"][0] == "key_changed"
    assert out["pinned_state"] == "closed"
    assert out["rejected"] == ["failed", "peer_rejected", True, True]
    assert out["silent"] == "timeout"
    assert 0.9 <= out["silent_s"] < 2.5
    assert out["silent_closed"] is True
    assert out["failures"]["key_changed"] >= 1 and out["failures"]["timeout"] >= 1
    assert out["state"] == ["failed", "timeout"]


def test_identity_changed_is_loud_and_allow_list_enforced(page):
    out = page.call(f"{PAGE}:identity_changed_and_allow_list")
    assert out["first"] == "first seen"
    assert out["changed"] == ["IdentityChangedError", "key_changed", True, True, True]
    assert "impostor" in out["changed_text"]
    assert out["allow"] == "not_allowed"
    assert any("SECURITY WARNING" in line for line in page.console)


def test_mitm_relay_fails_on_both_sides_with_fingerprint_mismatch(page):
    out = page.call(f"{PAGE}:mitm_relay")
    assert out["reasons"] == ["fingerprint_mismatch", "fingerprint_mismatch"]
    assert out["closed"] == [True, True]
    # HELLOs crossed, then each side's ALERT (fingerprint_mismatch = code 1); never an AUTH.
    assert out["relayed"] == [[1, 3], [1, 3], "OFFERER", "ANSWERER", [1]]
    assert out["views_differ"] is True
    assert out["real_equal"] is False
    assert out["stripped_equal"] is True
    assert out["stripped_verify"] == [True, True]
    assert out["real_verify"] is False


def test_seed_functions_over_multiplexed_channels(page):
    out = page.call(f"{PAGE}:seed_functions_over_mux")
    assert out["got"] == ["mode 2", "mode 1", "reply", "error: authentication failed"]
    assert out["roles"] == ["OFFERER", "ANSWERER"]
    assert out["ids"][0] == out["ids"][1]


def test_identity_survives_reload_and_export_import(page):
    before = page.call(f"{PAGE}:identity_before_reload")
    assert before["again"] == before["id"]
    assert before["exported"] == "refused" and before["extractable"] is False
    assert before["moved"] == before["blob_id"] and before["moved_extractable"] is False
    page.page.reload()
    page.page.evaluate("() => pyappReady.then(() => true)")
    after = page.call(f"{PAGE}:identity_after_reload")
    assert after["id"] == before["id"]
    assert after["moved"] == before["blob_id"]
    assert after["pin"] == before["id"]
    assert after["sig_ok"] is True


def test_peer_closed_status_events_and_unsupported_fingerprint(page):
    out = page.call(f"{PAGE}:peer_closed_and_unsupported_fingerprint")
    assert out["closed"] == ["peer_closed", True]
    assert out["seen"] == [["verifying", None], ["failed", "peer_closed"]]
    assert out["state"] == ["failed", "peer_closed", True]
    assert out["fps"] == [["sha-256"], ["sha-256"]]  # two Chromium peers: one line each
    assert out["sha1"] == ["unsupported_fingerprint_algorithm", True]


def test_batched_seal_and_open_match_the_oracle(page):
    """aead_seal_many / aead_open_many pass Python buffers to WebCrypto as views and get one
    buffer back: every kind of buffer (bytes, bytearray, slices, strided and non-byte
    memoryviews), two keys in one batch, and tampered / wrong-key / wrong-AAD items that
    come back as None in their place while the others open."""
    keys = [bytes(range(32)), bytes(range(32, 64))]
    good = b"genuine " * 5000
    cases = []  # (key index, nonce, aad, plaintext, sealed)
    for i in range(6):
        nonce, aad = bytes([0xA0 + i]) * 12, b"ctx %d" % i
        ct = AESGCM(keys[i % 2]).encrypt(nonce, good[: 1000 * i], aad)
        cases.append([i % 2, nonce, aad, good[: 1000 * i], ct])
    cases[1][4] = bytes([cases[1][4][0] ^ 1]) + cases[1][4][1:]  # tampered ciphertext
    cases[3][0] = 0                                               # opened with the other key
    cases[4][2] = b"other aad"                                    # AAD does not match
    out = page.call(f"{PAGE}:batched_aead", keys=[k.hex() for k in keys],
                    sealed=[[c[0], c[1].hex(), c[2].hex(), c[4].hex()] for c in cases])
    assert out["types"] == ["bytes"]
    for i, (pt_hex, env_hex) in enumerate(zip(out["plaintexts"], out["envelopes"], strict=True)):
        prefix = b"prefix-%d|" % i
        expected = prefix + AESGCM(keys[i % 2]).encrypt(bytes([i]) * 12, bytes.fromhex(pt_hex), b"aad %d" % i)
        assert bytes.fromhex(env_hex) == expected, i
    assert len(out["plaintexts"]) == 7 and len(bytes.fromhex(out["plaintexts"][2])) == 65503
    assert len(bytes.fromhex(out["plaintexts"][6])) == 40  # a memoryview of 20 uint16 is 40 bytes
    assert out["opened"] == [c[3].hex() if i in (0, 2, 5) else None for i, c in enumerate(cases)]
    assert out["empty"] == [[], []]
    assert out["errors"] == ["AES-GCM nonces are 12 bytes"] * 2
