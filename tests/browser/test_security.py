"""WebCrypto backend, identity, authentication and encryption in real Pyodide + Chromium.

Cross-implementation: the CPython oracle's vectors open/verify in the page,
and what the page seals/signs opens/verifies with the oracle here.
"""

from __future__ import annotations

import asyncio
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyapp.core.security.envelope import SecureChannel, parse_envelope
from pyapp.core.security.handshake import Handshake, HandshakeComplete
from pyapp.core.security.identity import PeerId
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.browser

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "crypto_vectors.json"

PRELUDE = """
import asyncio, json
from pyapp.browser.crypto import WebCrypto, detect_algorithms
from pyapp.browser.loopback import connected_pair
from pyapp.browser.identity import new_identity
from pyapp.core.security.interface import SignatureAlgorithm, KeyAgreementAlgorithm, EcdhKeyPair
from pyapp.core.security.keys import Role
from pyapp.exceptions import AuthenticationError, DecryptionError
C = WebCrypto()
h = bytes.fromhex

async def channel_pair(a, b, label):
    got = asyncio.get_event_loop().create_future()
    def on_dc(ch):
        if ch.label == label and not got.done():
            got.set_result(ch)
    b.events.on("datachannel", on_dc)
    ca = a.create_data_channel(label)
    cb = await asyncio.wait_for(got, 10)
    await ca.wait_open(10)
    return ca, cb
"""


@pytest.fixture(scope="module")
def page(pypage):
    pypage.py(PRELUDE)
    return pypage


def run(coro):
    """Run an oracle coroutine (Playwright's sync API already owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_feature_detection_and_oracle_vectors_in_webcrypto(page):
    text = VECTORS.read_text()
    out = page.pyjson(f"""
        from pyapp.core.security.envelope import open_envelope, SecureChannel
        from pyapp.core.security.keys import derive_envelope_key, derive_psk_secrets, derive_session_keys, Direction
        from pyapp.core.security.handshake import transcript_from_hellos, parse_message
        from pyapp.core.security.transcript import auth_signature_input
        from pyapp.core.security.identity import PeerId
        import js
        from pyodide.ffi import to_js
        V = json.loads({text!r})
        res = {{"algs": [a.name for a in await detect_algorithms()]}}
        res["hkdf"] = [(await C.hkdf_sha256(h(c["ikm"]), h(c["salt"]), h(c["info"]), c["length"])).hex() == c["okm"]
                       for c in V["hkdf_sha256"]]
        p = V["psk_direction_secrets"][0]
        keys = await derive_psk_secrets(C, h(p["psk"]))
        res["psk"] = [keys.offerer_to_answerer.hex() == p["offerer_to_answerer"],
                      keys.answerer_to_offerer.hex() == p["answerer_to_offerer"]]
        res["epoch_keys"] = [(await derive_envelope_key(C, h(k["direction_secret"]), k["key_id"], h(k["prefix"]),
                              k["channel_id"])).hex() == k["key"] for k in V["envelope_keys"]]
        opened = []
        for e in V["envelopes"]:
            key = await C.import_aead_key(h(e["key"]))
            pt = await open_envelope(C, key, h(e["envelope"]), e["channel_id"], Direction(e["direction"]), h(e["aad"]))
            opened.append(pt.hex() == e["plaintext"])
            # one flipped bit in the tag: no plaintext
            bad = bytearray(h(e["envelope"])); bad[-1] ^= 1
            try:
                await open_envelope(C, key, bytes(bad), e["channel_id"], Direction(e["direction"]), h(e["aad"]))
                opened.append("tampered envelope opened!")
            except DecryptionError as exc:
                opened.append(exc.reason)
        res["envelopes"] = opened
        s = V["psk_stream"]
        rx = await SecureChannel.from_psk(C, h(s["psk"]), Role.ANSWERER, channel_id=s["channel_id"], reliable=True)
        res["stream"] = [(await rx.open(h(env), now=0.0)).hex() for env in s["envelopes"]] == s["plaintexts"]
        sigs = []
        for sv in V["signatures"]:
            alg = SignatureAlgorithm.ED25519 if sv["alg"] == "ed25519" else SignatureAlgorithm.ECDSA_P256
            sigs.append(await C.verify(alg, h(sv["public_key"]), h(sv["signature"]), h(sv["message"])))
            sigs.append(await C.verify(alg, h(sv["public_key"]), h(sv["signature"]), b"other message"))
            key = await C.import_signing_key(alg, h(sv["pkcs8"]), h(sv["public_key"]))
            mine = await C.sign(key, h(sv["message"]))
            sigs.append(mine.hex() == sv["signature"] if sv["deterministic"] else
                        await C.verify(alg, h(sv["public_key"]), mine, h(sv["message"])))
        res["signatures"] = sigs
        ecdh = []
        for ev in V["ecdh"]:
            x = ev["alg"] == "x25519"
            alg = {{"name": "X25519"}} if x else {{"name": "ECDH", "namedCurve": "P-256"}}
            handle = await js.crypto.subtle.importKey("pkcs8", to_js(h(ev["private_pkcs8"])),
                                                      to_js(alg, dict_converter=js.Object.fromEntries), False, to_js(["deriveBits"]))
            pair = EcdhKeyPair(KeyAgreementAlgorithm.X25519 if x else KeyAgreementAlgorithm.ECDH_P256, h(ev["public_key"]), handle)
            ecdh.append((await C.ecdh_derive(pair, h(ev["peer_public_key"]))).hex() == ev["shared_secret"])
        res["ecdh"] = ecdh
        hv = V["handshake"]
        m = {{k: h(v) for k, v in hv["messages"].items()}}
        t = transcript_from_hellos(m["hello_offerer"], m["hello_answerer"]).encode()
        th = await C.sha256(t)
        hs = [t.hex() == hv["transcript"], th.hex() == hv["transcript_hash"]]
        for role, side in ((Role.OFFERER, "offerer"), (Role.ANSWERER, "answerer")):
            sig = parse_message(m["auth_" + side]).signature
            hs.append(await C.verify(SignatureAlgorithm.ED25519, h(hv[side]["identity_public_key"]), sig,
                                     auth_signature_input(role, th)))
        sk = await derive_session_keys(C, h(hv["shared_secret"]), th)
        hs += [sk.offerer_to_answerer.hex() == hv["offerer_to_answerer"],
               sk.answerer_to_offerer.hex() == hv["answerer_to_offerer"]]
        res["handshake"] = hs
        json.dumps(res)
    """)
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
    out = page.pyjson(f"""
        from pyapp.core.security.envelope import SecureChannel
        from pyapp.core.security.identity import export_identity
        psk = bytes(range(32))
        tx = await SecureChannel.from_psk(C, psk, Role.ANSWERER, channel_id=77, reliable=True)
        msgs = [b"bid 1", b"", bytes(range(256)) * 300]
        envs = [(await tx.seal(m, now=0.0, aad=b"ctx")).hex() for m in msgs]
        tx.sealer.request_rekey()
        envs.append((await tx.seal(b"after rekey", now=1.0)).hex())
        sigs = []
        for alg in SignatureAlgorithm:
            ident = await new_identity(exportable=True, alg=alg)
            sigs.append({{"export": await export_identity(C, ident.key),
                         "sig": (await C.sign(ident.key, b"from the browser")).hex()}})
        ecdh = []
        for alg, peer in ((KeyAgreementAlgorithm.X25519, {cpy_x.public_key.hex()!r}),
                          (KeyAgreementAlgorithm.ECDH_P256, {cpy_p.public_key.hex()!r})):
            k = await C.generate_ecdh_key(alg)
            ecdh.append([k.public_key.hex(), (await C.ecdh_derive(k, h(peer))).hex()])
        json.dumps({{"envs": envs, "sigs": sigs, "ecdh": ecdh}})
    """)

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
    hello_b = page.py("""
        from pyapp.core.security.handshake import Handshake
        me = await new_identity()
        HS = Handshake(C, Role.OFFERER, me.key, bytes([7]) * 32, bytes([9]) * 32, now=0.0)
        await HS.start()
        HS.data_to_send()[0].hex()
    """)
    hello_c = py.data_to_send()[0]
    auth_b = page.py(f"""
        await HS.receive_message(h({hello_c.hex()!r}), now=0.1)
        HS.data_to_send()[0].hex()
    """)
    run(py.receive_message(bytes.fromhex(hello_b), now=0.1))
    auth_c = py.data_to_send()[0]
    run(py.receive_message(bytes.fromhex(auth_b), now=0.2))
    done_c = py.next_event()
    done_b = page.pyjson(f"""
        await HS.receive_message(h({auth_c.hex()!r}), now=0.2)
        ev = HS.next_event()
        json.dumps([type(ev).__name__, ev.transcript_hash.hex(), ev.keys.offerer_to_answerer.hex(),
                    str(ev.peer_id)])
    """)
    assert isinstance(done_c, HandshakeComplete)
    assert done_b == ["HandshakeComplete", done_c.transcript_hash.hex(),
                      done_c.keys.offerer_to_answerer.hex(),
                      str(PeerId.from_public_key(ident.alg, ident.public_key))]


def test_authenticate_then_encrypted_channel_with_rekey(page):
    out = page.pyjson("""
        from pyapp.browser.secure import EncryptedChannel, RekeyPolicy
        from pyapp.browser.auth import session_of
        a, b = await connected_pair()
        ia, ib = await new_identity(), await new_identity()
        ra, rb = await asyncio.gather(a.authenticate(ia, expected_peer_id=str(ib.peer_id)),
                                      b.authenticate(ib, expected_peer_id=ia.peer_id))
        ca, cb = await channel_pair(a, b, "orders")
        policy = RekeyPolicy(after_messages=50)
        ea = EncryptedChannel.from_session(ca, ra, policy=policy)
        eb = EncryptedChannel.from_session(cb, rb, policy=policy)
        sent = [f"order {i}".encode() * (i % 7 + 1) for i in range(120)]
        for m in sent[:60]:
            await ea.submit(m)
        await ea.flush()
        for m in sent[60:]:
            await ea.send(m)
        got = [await eb.receive() for _ in sent]
        await eb.send("pong")
        back = await ea.receive()
        res = {"peer_ids": [str(ra.peer_id), str(rb.peer_id)], "ids": [str(ia.peer_id), str(ib.peer_id)],
               "roles": [ra.role.name, rb.role.name],
               "th_equal": ra.transcript_hash == rb.transcript_hash,
               "same_keys": ra.keys == rb.keys, "got_all": got == sent, "back": back.decode(),
               "key_id": ea.key_id, "rejected": eb.rejected, "session": session_of(a) is ra,
               "ms": [round(ra.elapsed * 1000), round(rb.elapsed * 1000)],
               "label": ra.control.label, "wire_len": ca.bytes_sent}
        a.close(); b.close()
        json.dumps(res)
    """)
    assert out["peer_ids"] == [out["ids"][1], out["ids"][0]]
    assert out["roles"] == ["OFFERER", "ANSWERER"]
    assert out["th_equal"] and out["same_keys"] and out["session"]
    assert out["got_all"] is True and out["back"] == "pong"
    assert out["key_id"] == 2  # 120 messages, a new epoch every 50
    assert out["rejected"] == {}
    assert out["label"] == "pyapp-auth"
    assert max(out["ms"]) < 2000


def test_tampering_replay_reflection_on_a_real_channel(page):
    out = page.pyjson("""
        from pyapp.browser.secure import EncryptedChannel
        a, b = await connected_pair()
        ca, cb = await channel_pair(a, b, "raw")
        class Capture:
            channel_id = ca.id
            def __init__(self): self.out = []
            async def send(self, data): self.out.append(bytes(data))
        cap = Capture()
        psk = b"k" * 32
        tx = await EncryptedChannel.from_psk(cap, psk, Role.OFFERER)
        rx = await EncryptedChannel.from_psk(cb, psk, Role.ANSWERER, channel_id=ca.id)
        back = await EncryptedChannel.from_psk(Capture(), psk, Role.ANSWERER, channel_id=ca.id)
        for m in (b"m0", b"m1", b"m2"):
            await tx.send(m)
        e0, e1, e2 = cap.out
        tampered = bytearray(e1); tampered[20] ^= 0x01            # one ciphertext bit
        header_tampered = bytearray(e1); header_tampered[12] ^= 1  # the counter in the header
        await back.send(b"reflect me")
        reflected = back.transport.out[0]
        results = []
        for wire in (reflected, e0, e0, bytes(tampered), bytes(header_tampered), b"short", "text", e1, e2):
            await ca.send(wire)
            try:
                results.append((await rx.receive()).decode())
            except DecryptionError as exc:
                results.append("error: " + exc.reason)
        # The same misbehaviour inside one read-ahead batch (all queued before reading).
        for m in (b"m3", b"m4", b"m5"):
            await tx.send(m)
        e3, e4, e5 = cap.out[3:]
        bad = bytearray(e4); bad[-1] ^= 0x80
        for wire in (e3, e3, bytes(bad), e4, e5, e4):
            await ca.send(wire)
        await asyncio.sleep(0.05)
        batched = []
        for _ in range(6):
            try:
                batched.append((await rx.receive()).decode())
            except DecryptionError as exc:
                batched.append("error: " + exc.reason)
        res = {"results": results, "rejected": rx.rejected, "received": rx.received, "batched": batched}
        a.close(); b.close()
        json.dumps(res)
    """)
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
    out = page.pyjson("""
        from pyapp.browser.auth import FAILURES
        from pyapp.core.security.identity import PeerId
        res = {}
        a, b = await connected_pair()
        ia, ib = await new_identity(), await new_identity()
        wrong = PeerId.from_public_key(ib.alg, bytes(32))
        results = await asyncio.gather(a.authenticate(ia, expected_peer_id=wrong, timeout=5),
                                       b.authenticate(ib, timeout=5), return_exceptions=True)
        res["pinned"] = [r.reason if isinstance(r, AuthenticationError) else "ok" for r in results]
        res["pinned_state"] = a.connection_state
        # b had verified a, then a's ALERT told it a refused it (the reason reaches b).
        for _ in range(100):
            if b.security.status == "failed":
                break
            await asyncio.sleep(0.02)
        res["rejected"] = [b.security.status, b.security.reason, "key_changed" in str(b.security.error),
                           b.closed]
        await asyncio.sleep(0.1)
        b.close()
        # A peer that never answers: b never calls authenticate.
        a, b = await connected_pair()
        loop = asyncio.get_event_loop()
        t0 = loop.time()
        try:
            await a.authenticate(ia, timeout=1.0)
            res["silent"] = "ok"
        except AuthenticationError as exc:
            res["silent"] = exc.reason
        res["silent_s"] = loop.time() - t0
        res["silent_closed"] = a.closed
        res["state"] = [a.security.status, a.security.reason]
        b.close()
        res["failures"] = dict(FAILURES)
        json.dumps(res)
    """)
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
    out = page.pyjson("""
        from pyapp.browser.auth import IdentityChangedError
        from pyapp.browser.identity import TrustStore
        from pyapp.core.security.identity import KnownPeers, PeerId
        res = {}
        ia, ib, impostor = await new_identity(), await new_identity(), await new_identity()
        store = TrustStore(KnownPeers(), db="pyapp-test-trust")
        a, b = await connected_pair()
        r, _ = await asyncio.gather(a.authenticate(ia, known_peers=store, contact="bob"), b.authenticate(ib))
        res["first"] = r.trust.status.value
        a.close(); b.close()
        a, b = await connected_pair()
        results = await asyncio.gather(a.authenticate(ia, known_peers=await TrustStore.load("pyapp-test-trust"),
                                                      contact="bob"),
                                       b.authenticate(impostor), return_exceptions=True)
        err = results[0]
        res["changed"] = [type(err).__name__, err.reason, str(err.previous) == str(ib.peer_id),
                          str(err.presented) == str(impostor.peer_id), a.closed]
        res["changed_text"] = str(err)
        b.close()
        a, b = await connected_pair()
        results = await asyncio.gather(a.authenticate(ia, known_peers=KnownPeers(allow=[ib.peer_id])),
                                       b.authenticate(impostor), return_exceptions=True)
        res["allow"] = getattr(results[0], "reason", "ok")
        b.close()
        json.dumps(res)
    """)
    assert out["first"] == "first seen"
    assert out["changed"] == ["IdentityChangedError", "key_changed", True, True, True]
    assert "impostor" in out["changed_text"]
    assert out["allow"] == "not_allowed"
    assert any("SECURITY WARNING" in line for line in page.console)


MITM = """
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.secure import EncryptedChannel
from pyapp.core.security.handshake import parse_message
from pyapp.core.security.transcript import Transcript, encode_fields, auth_signature_input
from pyapp.browser.auth import AUTH_LABEL

# Alice <-> relay (R1) and relay (R2) <-> Bob: two separate DTLS sessions. The relay
# answers each victim as if it were the other peer (what a malicious signaling server
# that terminates both connections can do) and forwards every data-channel message.
alice, r1 = loopback_pair()
r2, bob = loopback_pair()
alice.create_data_channel("x"); r2.create_data_channel("x")
await asyncio.gather(*(pc.wait_connected(10) for pc in (alice, r1, r2, bob)))
relayed = {"a->b": [], "b->a": []}

async def pipe(src, dst, log):
    async for m in src:
        log.append(bytes(m))
        try:
            await dst.send(m)
        except Exception:
            return

relay_tasks = []
def on_r1_channel(ch):
    if ch.label == AUTH_LABEL:
        out = r2.create_data_channel(AUTH_LABEL, protocol="pyapp-auth/1")
        relay_tasks.append(asyncio.ensure_future(pipe(ch, out, relayed["a->b"])))
        relay_tasks.append(asyncio.ensure_future(pipe(out, ch, relayed["b->a"])))
r1.events.on("datachannel", on_r1_channel)

ia, ib = await new_identity(), await new_identity()
outcome = await asyncio.gather(alice.authenticate(ia, timeout=5), bob.authenticate(ib, timeout=5),
                               return_exceptions=True)
"""


def test_mitm_relay_fails_on_both_sides_with_fingerprint_mismatch(page):
    out = page.pyjson(MITM + textwrap.dedent("""
        from pyapp.core.security.fingerprint import remote_fingerprints, sdp_fingerprints
        res = {"reasons": [getattr(r, "reason", repr(r)) for r in outcome],
               "closed": [alice.closed, bob.closed]}
        hello_a = relayed["a->b"][0]; hello_b = relayed["b->a"][0]
        ma, mb = parse_message(hello_a), parse_message(hello_b)
        res["relayed"] = [[m[0] for m in relayed["a->b"]], [m[0] for m in relayed["b->a"]],
                          ma.role.name, mb.role.name, [m[3] for m in relayed["a->b"][1:]]]
        # What each victim saw in its own SDP: different certificates on the two legs.
        fp = lambda pc, which: tuple(sdp_fingerprints(getattr(pc, which)["sdp"]))
        a_view = (fp(alice, "local_description"), fp(alice, "remote_description"))
        b_view = (fp(bob, "remote_description"), fp(bob, "local_description"))
        res["views_differ"] = a_view != b_view
        # The real transcripts (with fingerprints), as each victim builds them, differ:
        ta = Transcript.of(ma.side(a_view[0]), mb.side(a_view[1]))
        tb = Transcript.of(ma.side(b_view[0]), mb.side(b_view[1]))
        res["real_equal"] = ta.encode() == tb.encode()
        # Without the fingerprint binding (fields 0x01/0x02 dropped), both victims would
        # build byte-identical transcripts from the relayed HELLOs ...
        strip = lambda t: encode_fields([(tag, v) for tag, v in t.fields() if tag not in (0x01, 0x02)])
        res["stripped_equal"] = strip(ta) == strip(tb)
        # ... so each victim's AUTH signature over it (what it would have sent) verifies
        # at the other victim through the relay: the MITM would have passed.
        th_a, th_b = await C.sha256(strip(ta)), await C.sha256(strip(tb))
        sig_a = await C.sign(ia.key, auth_signature_input(Role.OFFERER, th_a))
        sig_b = await C.sign(ib.key, auth_signature_input(Role.ANSWERER, th_b))
        res["stripped_verify"] = [await C.verify(ia.alg, ma.public_key, sig_a, auth_signature_input(Role.OFFERER, th_b)),
                                  await C.verify(ib.alg, mb.public_key, sig_b, auth_signature_input(Role.ANSWERER, th_a))]
        # With the binding, the same signature cannot verify over the other side's real transcript.
        real_a, real_b = await C.sha256(ta.encode()), await C.sha256(tb.encode())
        sig_real = await C.sign(ia.key, auth_signature_input(Role.OFFERER, real_a))
        res["real_verify"] = await C.verify(ia.alg, ma.public_key, sig_real, auth_signature_input(Role.OFFERER, real_b))
        for t in relay_tasks: t.cancel()
        for pc in (alice, r1, r2, bob): pc.close()
        json.dumps(res)
    """))
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
    out = page.pyjson("""
        from pyapp.browser.secure import send_encrypted, receive_encrypted, encrypted
        a, b = await connected_pair()
        ia, ib = await new_identity(), await new_identity()
        await asyncio.gather(a.authenticate(ia), b.authenticate(ib))
        ma, mb = a.multiplexer(), b.multiplexer()
        await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
        psk_a = a.create_multiplexed_channel(label="psk")
        psk_b = await mb.accept(10)
        ses_a = a.create_multiplexed_channel(label="session")
        ses_b = await mb.accept(10)
        key = bytes(range(32))
        await send_encrypted(psk_a, b"mode 2", key)
        await send_encrypted(ses_a, "mode 1")
        got = [await receive_encrypted(psk_b, key), await receive_encrypted(ses_b)]
        await send_encrypted(psk_b, b"reply", key)
        got.append(await receive_encrypted(psk_a, key))
        # The wrong key on the other end: rejected, never delivered.
        wrong_a = a.create_multiplexed_channel(label="wrong key")
        wrong_b = await mb.accept(10)
        await send_encrypted(wrong_a, b"secret", key)
        ch = await encrypted(psk_b, key)
        try:
            got.append((await receive_encrypted(wrong_b, bytes(32))).decode())
        except DecryptionError as exc:
            got.append("error: " + exc.reason)
        res = {"got": [g if isinstance(g, str) else g.decode() for g in got],
               "roles": [(await encrypted(psk_a, key)).secure.role.name, ch.secure.role.name],
               "ids": [psk_a.channel_id, (await encrypted(psk_a, key)).channel_id]}
        a.close(); b.close()
        json.dumps(res)
    """)
    assert out["got"] == ["mode 2", "mode 1", "reply", "error: authentication failed"]
    assert out["roles"] == ["OFFERER", "ANSWERER"]
    assert out["ids"][0] == out["ids"][1]


def test_identity_survives_reload_and_export_import(page):
    before = page.pyjson("""
        from pyapp.browser.identity import (load_identity, delete_identity, export_identity,
                                            import_identity, TrustStore)
        from pyapp.core.security.identity import KnownPeers, PeerId
        from pyapp.exceptions import LocalProtocolError
        await delete_identity(db="pyapp-test-reload")
        me = await load_identity(db="pyapp-test-reload")
        again = await load_identity(db="pyapp-test-reload")
        store = TrustStore(KnownPeers(), db="pyapp-test-reload")
        store.peers.pin("carol", me.peer_id)
        await store.save()
        try:
            await export_identity(me)
            exported = "exported a non-extractable key!"
        except LocalProtocolError:
            exported = "refused"
        portable = await new_identity(exportable=True)
        blob = await export_identity(portable)
        moved = await import_identity(json.dumps(blob), db="pyapp-test-import")
        json.dumps({"id": str(me.peer_id), "again": str(again.peer_id), "exported": exported,
                    "extractable": me.key.handle.extractable, "blob_id": blob["peer_id"],
                    "moved": str(moved.peer_id), "moved_extractable": moved.key.handle.extractable})
    """)
    assert before["again"] == before["id"]
    assert before["exported"] == "refused" and before["extractable"] is False
    assert before["moved"] == before["blob_id"] and before["moved_extractable"] is False
    page.page.reload()
    page.page.evaluate("() => pyappReady.then(() => true)")
    after = page.pyjson("""
        import json
        from pyapp.browser.identity import load_identity, TrustStore
        from pyapp.browser.crypto import default_crypto
        me = await load_identity(db="pyapp-test-reload")
        moved = await load_identity(db="pyapp-test-import")
        store = await TrustStore.load("pyapp-test-reload")
        c = default_crypto()
        sig = await c.sign(me.key, b"still works")
        json.dumps({"id": str(me.peer_id), "moved": str(moved.peer_id),
                    "pin": str(store.peers.contacts["carol"]),
                    "sig_ok": await c.verify(me.alg, me.public_key, sig, b"still works")})
    """)
    assert after["id"] == before["id"]
    assert after["moved"] == before["blob_id"]
    assert after["pin"] == before["id"]
    assert after["sig_ok"] is True


def test_peer_closed_status_events_and_unsupported_fingerprint(page):
    page.py(PRELUDE)  # an earlier test reloads the page
    out = page.pyjson("""
        from pyapp.browser.auth import security_of, connection_fingerprints
        from pyapp.core.security.reasons import describe
        res = {}
        a, b = await connected_pair()
        ia, ib = await new_identity(), await new_identity()
        seen = []
        security_of(a).events.on("status", lambda s: seen.append([s.status, s.reason]))
        task = asyncio.ensure_future(a.authenticate(ia, timeout=10))
        await asyncio.sleep(0.3)   # a waits for b's HELLO; b hangs up instead
        b.close()
        try:
            await task
            res["closed"] = "ok"
        except AuthenticationError as exc:
            res["closed"] = [exc.reason, str(exc) == describe(exc.reason) or "closed" in str(exc)]
        res["seen"] = seen
        res["state"] = [a.security.status, a.security.reason, a.closed]
        # A remote SDP whose only fingerprint uses another hash: named, not "malformed".
        a, b = await connected_pair()
        local, remote = connection_fingerprints(a)
        res["fps"] = [[str(f.hash.sdp_name) for f in local], [f.hash.sdp_name for f in remote]]
        class Sdp:
            polite = False
            local_description = a.local_description
            remote_description = {"type": "answer", "sdp": "\\r\\n".join(
                line if not line.startswith("a=fingerprint:") else "a=fingerprint:sha-1 " + ":".join(["AB"] * 20)
                for line in a.remote_description["sdp"].split("\\r\\n"))}
        try:
            connection_fingerprints(Sdp())
            res["sha1"] = "accepted"
        except AuthenticationError as exc:
            res["sha1"] = [exc.reason, "sha-1" in str(exc)]
        a.close(); b.close()
        json.dumps(res)
    """)
    assert out["closed"] == ["peer_closed", True]
    assert out["seen"] == [["verifying", None], ["failed", "peer_closed"]]
    assert out["state"] == ["failed", "peer_closed", True]
    assert out["fps"] == [["sha-256"], ["sha-256"]]  # two Chromium peers: one line each
    assert out["sha1"] == ["unsupported_fingerprint_algorithm", True]
