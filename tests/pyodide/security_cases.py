"""Page side of tests/browser/test_security.py (called with ``pypage.call``): WebCrypto,
identities, authentication and end-to-end encryption over real RTCDataChannels."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import js
from pyodide.ffi import to_js

from pyapp.browser.auth import (
    AUTH_LABEL,
    FAILURES,
    connection_fingerprints,
    security_of,
    session_of,
)
from pyapp.browser.connection import Connection
from pyapp.browser.crypto import WebCrypto, default_crypto, detect_algorithms
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import (
    TrustStore,
    delete_identity,
    export_identity,
    import_identity,
    load_identity,
    new_identity,
)
from pyapp.browser.loopback import connected_pair, loopback_pair
from pyapp.browser.secure import (
    EncryptedChannel,
    RekeyPolicy,
    encrypted,
    receive_encrypted,
    send_encrypted,
)
from pyapp.core.security.envelope import SecureChannel, open_envelope
from pyapp.core.security.fingerprint import sdp_fingerprints
from pyapp.core.security.handshake import (
    AuthMessage,
    Handshake,
    HelloMessage,
    parse_message,
    transcript_from_hellos,
)
from pyapp.core.security.identity import KnownPeers, PeerId
from pyapp.core.security.identity import export_identity as export_signing_key
from pyapp.core.security.interface import EcdhKeyPair, KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import (
    Direction,
    Role,
    derive_envelope_key,
    derive_psk_secrets,
    derive_session_keys,
)
from pyapp.core.security.reasons import describe
from pyapp.core.security.transcript import Transcript, auth_signature_input, encode_fields
from pyapp.exceptions import AuthenticationError, DecryptionError, LocalProtocolError

C = WebCrypto()
h = bytes.fromhex

_HANDSHAKE: dict[str, Handshake] = {}
"""The browser side of the handshake against the CPython oracle, between calls."""


async def _channel_pair(a: Connection, b: Connection, label: str) -> tuple[DataChannel, DataChannel]:
    got: asyncio.Future[DataChannel] = asyncio.get_event_loop().create_future()

    def on_dc(ch: DataChannel) -> None:
        if ch.label == label and not got.done():
            got.set_result(ch)

    b.events.on("datachannel", on_dc)
    ca = a.create_data_channel(label)
    cb = await asyncio.wait_for(got, 10)
    await ca.wait_open(10)
    return ca, cb


def _hello(data: bytes) -> HelloMessage:
    message = parse_message(data)
    assert isinstance(message, HelloMessage), f"not a HELLO: {message!r}"
    return message


def _auth(data: bytes) -> AuthMessage:
    message = parse_message(data)
    assert isinstance(message, AuthMessage), f"not an AUTH: {message!r}"
    return message


async def oracle_vectors(vectors: dict[str, Any]) -> dict[str, Any]:
    """Feature detection, and the CPython oracle's vectors checked with WebCrypto."""
    V = vectors
    res: dict[str, Any] = {"algs": [a.name for a in await detect_algorithms()]}
    res["hkdf"] = [(await C.hkdf_sha256(h(c["ikm"]), h(c["salt"]), h(c["info"]), c["length"])).hex()
                   == c["okm"] for c in V["hkdf_sha256"]]
    p = V["psk_direction_secrets"][0]
    keys = await derive_psk_secrets(C, h(p["psk"]))
    res["psk"] = [keys.offerer_to_answerer.hex() == p["offerer_to_answerer"],
                  keys.answerer_to_offerer.hex() == p["answerer_to_offerer"]]
    res["epoch_keys"] = [(await derive_envelope_key(C, h(k["direction_secret"]), k["key_id"],
                                                    h(k["prefix"]), k["channel_id"])).hex() == k["key"]
                         for k in V["envelope_keys"]]
    opened: list[bool | str] = []
    for e in V["envelopes"]:
        key = await C.import_aead_key(h(e["key"]))
        pt = await open_envelope(C, key, h(e["envelope"]), e["channel_id"], Direction(e["direction"]),
                                 h(e["aad"]))
        opened.append(pt.hex() == e["plaintext"])
        # one flipped bit in the tag: no plaintext
        bad = bytearray(h(e["envelope"]))
        bad[-1] ^= 1
        try:
            await open_envelope(C, key, bytes(bad), e["channel_id"], Direction(e["direction"]),
                                h(e["aad"]))
            opened.append("tampered envelope opened!")
        except DecryptionError as exc:
            opened.append(exc.reason)
    res["envelopes"] = opened
    s = V["psk_stream"]
    rx = await SecureChannel.from_psk(C, h(s["psk"]), Role.ANSWERER, channel_id=s["channel_id"],
                                      reliable=True)
    res["stream"] = [(await rx.open(h(env), now=0.0)).hex() for env in s["envelopes"]] == s["plaintexts"]
    sigs = []
    for sv in V["signatures"]:
        alg = SignatureAlgorithm.ED25519 if sv["alg"] == "ed25519" else SignatureAlgorithm.ECDSA_P256
        sigs.append(await C.verify(alg, h(sv["public_key"]), h(sv["signature"]), h(sv["message"])))
        sigs.append(await C.verify(alg, h(sv["public_key"]), h(sv["signature"]), b"other message"))
        signing_key = await C.import_signing_key(alg, h(sv["pkcs8"]), h(sv["public_key"]))
        mine = await C.sign(signing_key, h(sv["message"]))
        sigs.append(mine.hex() == sv["signature"] if sv["deterministic"] else
                    await C.verify(alg, h(sv["public_key"]), mine, h(sv["message"])))
    res["signatures"] = sigs
    ecdh = []
    for ev in V["ecdh"]:
        x = ev["alg"] == "x25519"
        params = {"name": "X25519"} if x else {"name": "ECDH", "namedCurve": "P-256"}
        handle = await js.crypto.subtle.importKey(
            "pkcs8", to_js(h(ev["private_pkcs8"])),
            to_js(params, dict_converter=js.Object.fromEntries), False, to_js(["deriveBits"]))
        pair = EcdhKeyPair(KeyAgreementAlgorithm.X25519 if x else KeyAgreementAlgorithm.ECDH_P256,
                           h(ev["public_key"]), handle)
        ecdh.append((await C.ecdh_derive(pair, h(ev["peer_public_key"]))).hex() == ev["shared_secret"])
    res["ecdh"] = ecdh
    hv = V["handshake"]
    m = {k: h(v) for k, v in hv["messages"].items()}
    t = transcript_from_hellos(m["hello_offerer"], m["hello_answerer"]).encode()
    th = await C.sha256(t)
    hs = [t.hex() == hv["transcript"], th.hex() == hv["transcript_hash"]]
    for role, side in ((Role.OFFERER, "offerer"), (Role.ANSWERER, "answerer")):
        sig = _auth(m["auth_" + side]).signature
        hs.append(await C.verify(SignatureAlgorithm.ED25519, h(hv[side]["identity_public_key"]), sig,
                                 auth_signature_input(role, th)))
    sk = await derive_session_keys(C, h(hv["shared_secret"]), th)
    hs += [sk.offerer_to_answerer.hex() == hv["offerer_to_answerer"],
           sk.answerer_to_offerer.hex() == hv["answerer_to_offerer"]]
    res["handshake"] = hs
    return res


async def seal_and_sign(peer_x25519: str, peer_p256: str) -> dict[str, Any]:
    """Envelopes, signatures and ECDH results made here, for the oracle to check."""
    psk = bytes(range(32))
    tx = await SecureChannel.from_psk(C, psk, Role.ANSWERER, channel_id=77, reliable=True)
    msgs = [b"bid 1", b"", bytes(range(256)) * 300]
    envs = [(await tx.seal(m, now=0.0, aad=b"ctx")).hex() for m in msgs]
    tx.sealer.request_rekey()
    envs.append((await tx.seal(b"after rekey", now=1.0)).hex())
    sigs = []
    for alg in SignatureAlgorithm:
        ident = await new_identity(exportable=True, alg=alg)
        sigs.append({"export": await export_signing_key(C, ident.key),
                     "sig": (await C.sign(ident.key, b"from the browser")).hex()})
    ecdh = []
    for ka, peer in ((KeyAgreementAlgorithm.X25519, peer_x25519),
                     (KeyAgreementAlgorithm.ECDH_P256, peer_p256)):
        k = await C.generate_ecdh_key(ka)
        ecdh.append([k.public_key.hex(), (await C.ecdh_derive(k, h(peer))).hex()])
    return {"envs": envs, "sigs": sigs, "ecdh": ecdh}


async def handshake_start() -> str:
    """Start a browser Handshake (offerer); its HELLO."""
    me = await new_identity()
    hs = Handshake(C, Role.OFFERER, me.key, bytes([7]) * 32, bytes([9]) * 32, now=0.0)
    _HANDSHAKE["hs"] = hs
    await hs.start()
    return hs.data_to_send()[0].hex()


async def handshake_receive(message: str, now: float) -> str:
    """Feed the peer's message to the browser Handshake; the next message it sends."""
    hs = _HANDSHAKE["hs"]
    await hs.receive_message(h(message), now=now)
    return hs.data_to_send()[0].hex()


async def handshake_finish(message: str, now: float) -> list[str]:
    """Feed the peer's last message; the event's name, transcript hash, a key, the peer id."""
    hs = _HANDSHAKE.pop("hs")
    await hs.receive_message(h(message), now=now)
    ev: Any = hs.next_event()
    return [type(ev).__name__, ev.transcript_hash.hex(), ev.keys.offerer_to_answerer.hex(),
            str(ev.peer_id)]


async def authenticate_then_encrypted() -> dict[str, Any]:
    """Two pages' worth of authenticate(), then 120 messages with a rekey every 50."""
    a, b = await connected_pair()
    ia, ib = await new_identity(), await new_identity()
    ra, rb = await asyncio.gather(a.authenticate(ia, expected_peer_id=str(ib.peer_id)),
                                  b.authenticate(ib, expected_peer_id=ia.peer_id))
    ca, cb = await _channel_pair(a, b, "orders")
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
           "key_id": ea.key_id, "rejected": eb.rejected, "session": session_of(cast(Any, a)) is ra,
           "ms": [round(ra.elapsed * 1000), round(rb.elapsed * 1000)],
           "label": ra.control.label, "wire_len": ca.bytes_sent}
    a.close()
    b.close()
    return res


class _Capture:
    """A transport that keeps what is sent on it (the attacker's view of the wire)."""

    def __init__(self, channel_id: int | None) -> None:
        self.channel_id = channel_id
        self.out: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.out.append(bytes(data))


async def _receive_text(rx: EncryptedChannel) -> str:
    try:
        return (await rx.receive()).decode()
    except DecryptionError as exc:
        return "error: " + exc.reason


async def tampering_replay_reflection() -> dict[str, Any]:
    """Reflected, replayed, tampered and malformed envelopes on a real channel."""
    a, b = await connected_pair()
    ca, cb = await _channel_pair(a, b, "raw")
    cap = _Capture(ca.id)
    psk = b"k" * 32
    tx = await EncryptedChannel.from_psk(cap, psk, Role.OFFERER)
    rx = await EncryptedChannel.from_psk(cb, psk, Role.ANSWERER, channel_id=ca.id)
    back_wire = _Capture(ca.id)
    back = await EncryptedChannel.from_psk(back_wire, psk, Role.ANSWERER, channel_id=ca.id)
    for m in (b"m0", b"m1", b"m2"):
        await tx.send(m)
    e0, e1, e2 = cap.out
    tampered = bytearray(e1)
    tampered[20] ^= 0x01  # one ciphertext bit
    header_tampered = bytearray(e1)
    header_tampered[12] ^= 1  # the counter in the header
    await back.send(b"reflect me")
    reflected = back_wire.out[0]
    results = []
    wires: tuple[bytes | str, ...] = (reflected, e0, e0, bytes(tampered), bytes(header_tampered),
                                      b"short", "text", e1, e2)
    for wire in wires:
        await ca.send(wire)
        results.append(await _receive_text(rx))
    # The same misbehaviour inside one read-ahead batch (all queued before reading).
    for m in (b"m3", b"m4", b"m5"):
        await tx.send(m)
    e3, e4, e5 = cap.out[3:]
    bad = bytearray(e4)
    bad[-1] ^= 0x80
    for batch_wire in (e3, e3, bytes(bad), e4, e5, e4):
        await ca.send(batch_wire)
    await asyncio.sleep(0.05)
    batched = [await _receive_text(rx) for _ in range(6)]
    res = {"results": results, "rejected": rx.rejected, "received": rx.received, "batched": batched}
    a.close()
    b.close()
    return res


async def wrong_pin_and_silent_peer() -> dict[str, Any]:
    """A pinned PeerId that does not match, then a peer that never answers."""
    res: dict[str, Any] = {}
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
    return res


async def identity_changed_and_allow_list() -> dict[str, Any]:
    """Trust on first use, then an impostor for the same contact; an allow-list."""
    res: dict[str, Any] = {}
    ia, ib, impostor = await new_identity(), await new_identity(), await new_identity()
    store = TrustStore(KnownPeers(), db="pyapp-test-trust")
    a, b = await connected_pair()
    r, _ = await asyncio.gather(a.authenticate(ia, known_peers=store, contact="bob"),
                                b.authenticate(ib))
    assert r.trust is not None, "no trust verdict with a store"
    res["first"] = r.trust.status.value
    a.close()
    b.close()
    a, b = await connected_pair()
    results = await asyncio.gather(
        a.authenticate(ia, known_peers=await TrustStore.load("pyapp-test-trust"), contact="bob"),
        b.authenticate(impostor), return_exceptions=True)
    err: Any = results[0]
    res["changed"] = [type(err).__name__, err.reason, str(err.previous) == str(ib.peer_id),
                      str(err.presented) == str(impostor.peer_id), a.closed]
    res["changed_text"] = str(err)
    b.close()
    a, b = await connected_pair()
    results = await asyncio.gather(a.authenticate(ia, known_peers=KnownPeers(allow=[ib.peer_id])),
                                   b.authenticate(impostor), return_exceptions=True)
    res["allow"] = getattr(results[0], "reason", "ok")
    b.close()
    return res


async def _pipe(src: DataChannel, dst: DataChannel, log: list[bytes]) -> None:
    async for m in src:
        assert not isinstance(m, str), f"text on the control channel: {m!r}"
        log.append(bytes(m))
        try:
            await dst.send(m)
        except Exception:  # the other leg closed: the relay stops forwarding
            return


def _fingerprints(description: dict[str, Any] | None) -> tuple[Any, ...]:
    assert description is not None, "no SDP"
    return tuple(sdp_fingerprints(description["sdp"]))


async def mitm_relay() -> dict[str, Any]:
    """A relay that terminates both DTLS sessions and forwards every message."""
    # Alice <-> relay (R1) and relay (R2) <-> Bob: two separate DTLS sessions. The relay
    # answers each victim as if it were the other peer (what a malicious signaling server
    # that terminates both connections can do) and forwards every data-channel message.
    alice, r1 = loopback_pair()
    r2, bob = loopback_pair()
    alice.create_data_channel("x")
    r2.create_data_channel("x")
    await asyncio.gather(*(pc.wait_connected(10) for pc in (alice, r1, r2, bob)))
    relayed: dict[str, list[bytes]] = {"a->b": [], "b->a": []}
    relay_tasks: list[asyncio.Future[None]] = []

    def on_r1_channel(ch: DataChannel) -> None:
        if ch.label == AUTH_LABEL:
            out = r2.create_data_channel(AUTH_LABEL, protocol="pyapp-auth/1")
            relay_tasks.append(asyncio.ensure_future(_pipe(ch, out, relayed["a->b"])))
            relay_tasks.append(asyncio.ensure_future(_pipe(out, ch, relayed["b->a"])))

    r1.events.on("datachannel", on_r1_channel)
    ia, ib = await new_identity(), await new_identity()
    outcome = await asyncio.gather(alice.authenticate(ia, timeout=5), bob.authenticate(ib, timeout=5),
                                   return_exceptions=True)
    res: dict[str, Any] = {"reasons": [getattr(r, "reason", repr(r)) for r in outcome],
                           "closed": [alice.closed, bob.closed]}
    hello_a = relayed["a->b"][0]
    hello_b = relayed["b->a"][0]
    ma, mb = _hello(hello_a), _hello(hello_b)
    res["relayed"] = [[m[0] for m in relayed["a->b"]], [m[0] for m in relayed["b->a"]],
                      ma.role.name, mb.role.name, [m[3] for m in relayed["a->b"][1:]]]
    # What each victim saw in its own SDP: different certificates on the two legs.
    a_view = (_fingerprints(alice.local_description), _fingerprints(alice.remote_description))
    b_view = (_fingerprints(bob.remote_description), _fingerprints(bob.local_description))
    res["views_differ"] = a_view != b_view
    # The real transcripts (with fingerprints), as each victim builds them, differ:
    ta = Transcript.of(ma.side(a_view[0]), mb.side(a_view[1]))
    tb = Transcript.of(ma.side(b_view[0]), mb.side(b_view[1]))
    res["real_equal"] = ta.encode() == tb.encode()

    # Without the fingerprint binding (fields 0x01/0x02 dropped), both victims would
    # build byte-identical transcripts from the relayed HELLOs ...
    def strip(t: Transcript) -> bytes:
        return encode_fields([(tag, v) for tag, v in t.fields() if tag not in (0x01, 0x02)])

    res["stripped_equal"] = strip(ta) == strip(tb)
    # ... so each victim's AUTH signature over it (what it would have sent) verifies
    # at the other victim through the relay: the MITM would have passed.
    th_a, th_b = await C.sha256(strip(ta)), await C.sha256(strip(tb))
    sig_a = await C.sign(ia.key, auth_signature_input(Role.OFFERER, th_a))
    sig_b = await C.sign(ib.key, auth_signature_input(Role.ANSWERER, th_b))
    res["stripped_verify"] = [
        await C.verify(ia.alg, ma.public_key, sig_a, auth_signature_input(Role.OFFERER, th_b)),
        await C.verify(ib.alg, mb.public_key, sig_b, auth_signature_input(Role.ANSWERER, th_a))]
    # With the binding, the same signature cannot verify over the other side's real transcript.
    real_a, real_b = await C.sha256(ta.encode()), await C.sha256(tb.encode())
    sig_real = await C.sign(ia.key, auth_signature_input(Role.OFFERER, real_a))
    res["real_verify"] = await C.verify(ia.alg, ma.public_key, sig_real,
                                        auth_signature_input(Role.OFFERER, real_b))
    for task in relay_tasks:
        task.cancel()
    for pc in (alice, r1, r2, bob):
        pc.close()
    return res


async def seed_functions_over_mux() -> dict[str, Any]:
    """send_encrypted / receive_encrypted on multiplexed channels: session and PSK mode."""
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
    got: list[bytes | str] = [await receive_encrypted(psk_b, key), await receive_encrypted(ses_b)]
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
    a.close()
    b.close()
    return res


async def identity_before_reload() -> dict[str, Any]:
    """A stored identity, a pinned contact, and an exported identity imported elsewhere."""
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
    handle: Any = me.key.handle
    moved_handle: Any = moved.key.handle
    return {"id": str(me.peer_id), "again": str(again.peer_id), "exported": exported,
            "extractable": handle.extractable, "blob_id": blob["peer_id"],
            "moved": str(moved.peer_id), "moved_extractable": moved_handle.extractable}


async def identity_after_reload() -> dict[str, Any]:
    """What identity_before_reload stored, after a page reload."""
    me = await load_identity(db="pyapp-test-reload")
    moved = await load_identity(db="pyapp-test-import")
    store = await TrustStore.load("pyapp-test-reload")
    c = default_crypto()
    sig = await c.sign(me.key, b"still works")
    return {"id": str(me.peer_id), "moved": str(moved.peer_id),
            "pin": str(store.peers.contacts["carol"]),
            "sig_ok": await c.verify(me.alg, me.public_key, sig, b"still works")}


class _Sdp:
    """Just the attributes connection_fingerprints() reads, with a sha-1-only remote SDP."""

    polite = False

    def __init__(self, pc: Connection) -> None:
        self.local_description = pc.local_description
        remote = pc.remote_description
        assert remote is not None, "no remote SDP"
        self.remote_description = {"type": "answer", "sdp": "\r\n".join(
            line if not line.startswith("a=fingerprint:")
            else "a=fingerprint:sha-1 " + ":".join(["AB"] * 20)
            for line in remote["sdp"].split("\r\n"))}


async def peer_closed_and_unsupported_fingerprint() -> dict[str, Any]:
    """The peer hangs up mid-handshake (status events); an SDP with only a sha-1 fingerprint."""
    res: dict[str, Any] = {}
    a, b = await connected_pair()
    ia, _ib = await new_identity(), await new_identity()
    seen: list[list[str | None]] = []
    security_of(a).events.on("status", lambda s: seen.append([s.status, s.reason]))
    task = asyncio.ensure_future(a.authenticate(ia, timeout=10))
    await asyncio.sleep(0.3)  # a waits for b's HELLO; b hangs up instead
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
    local, remote = connection_fingerprints(cast(Any, a))
    res["fps"] = [[str(f.hash.sdp_name) for f in local], [f.hash.sdp_name for f in remote]]
    fake: Any = _Sdp(a)
    try:
        connection_fingerprints(fake)
        res["sha1"] = "accepted"
    except AuthenticationError as exc:
        res["sha1"] = [exc.reason, "sha-1" in str(exc)]
    a.close()
    b.close()
    return res



def _plaintexts() -> list[Any]:
    """Every kind of buffer aead_seal_many takes, at the sizes that matter."""
    big = bytes(i % 251 for i in range(65503))
    wide = memoryview(bytes(range(40))).cast("H")  # itemsize 2: must go out as its 40 bytes
    return [b"", b"x", big, bytearray(b"a bytearray"), memoryview(b"..slice of a buffer..")[2:-2],
            memoryview(bytes(range(64)))[::2], wide]


async def batched_aead(keys: list[str], sealed: list[list[str]]) -> dict[str, Any]:
    """WebCrypto's batched calls (views of Python buffers, one buffer back) against the oracle.

    ``sealed``: (key index, nonce, aad, ciphertext||tag) made by the oracle, opened here
    in one batch as memoryviews of one packed buffer (as received batches arrive)."""
    handles = [await C.import_aead_key(h(k)) for k in keys]
    items = []
    for i, pt in enumerate(_plaintexts()):
        items.append((handles[i % 2], bytes([i]) * 12, pt, b"aad %d" % i, b"prefix-%d|" % i))
    envelopes = await C.aead_seal_many(items)
    packed = memoryview(b"".join(h(s[3]) for s in sealed))
    views, offset = [], 0
    for s in sealed:
        n = len(h(s[3]))
        views.append(packed[offset:offset + n])
        offset += n
    opened = await C.aead_open_many([(handles[int(s[0])], h(s[1]), v, h(s[2]))
                                     for s, v in zip(sealed, views, strict=True)])
    errors = []
    try:
        await C.aead_seal_many([(handles[0], b"short", b"x", b"", b"")])
    except LocalProtocolError as exc:
        errors.append(str(exc))
    try:
        await C.aead_open_many([(handles[0], b"short", b"x" * 16, b"")])
    except LocalProtocolError as exc:
        errors.append(str(exc))
    return {
        "plaintexts": [bytes(p).hex() if not isinstance(p, memoryview) else p.tobytes().hex()
                       for p in _plaintexts()],
        "envelopes": [e.hex() for e in envelopes],
        "types": sorted({type(e).__name__ for e in envelopes}),
        "opened": [None if o is None else o.hex() for o in opened],
        "empty": [await C.aead_seal_many([]), await C.aead_open_many([])],
        "errors": errors,
    }
