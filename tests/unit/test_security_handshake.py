"""The HELLO/AUTH handshake: success, failures by reason, reflection, MITM, fuzzing, SDP parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyapp.core.security.envelope import SecureChannel
from pyapp.core.security.fingerprint import (
    Fingerprint,
    HashFunction,
    certificate_fingerprint,
    remote_fingerprints,
    sdp_fingerprints,
)
from pyapp.core.security.handshake import (
    ALERT,
    Handshake,
    HandshakeComplete,
    HandshakeFailed,
    HandshakeState,
    HelloMessage,
    parse_alert,
    parse_message,
)
from pyapp.core.security.identity import KnownPeers, PeerId, TrustStatus
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role
from pyapp.core.security.reasons import WIRE_CODES, AuthReason, describe
from pyapp.core.security.transcript import Transcript, auth_signature_input, encode_fields
from pyapp.exceptions import AuthenticationError, LocalProtocolError
from tests.support import pump
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.unit

ED, P256 = SignatureAlgorithm.ED25519, SignatureAlgorithm.ECDSA_P256
FA, FB, FM1, FM2 = b"\xaa" * 32, b"\xbb" * 32, b"\x11" * 32, b"\x22" * 32
REASONS = set(AuthReason)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


async def make(
    alg_a: SignatureAlgorithm = ED,
    alg_b: SignatureAlgorithm = ED,
    *,
    fps: tuple[Any, Any, Any, Any] = (FA, FB, FB, FA),
    eph: KeyAgreementAlgorithm = KeyAgreementAlgorithm.X25519,
    crypto: OracleCrypto | None = None,
    **kw_a: object,
) -> tuple[Handshake, Handshake]:
    """Offerer ``a`` and answerer ``b``; fps = (a local(s), a's view of b, b local(s), b's view of a)."""
    c = crypto or OracleCrypto()
    ka, kb = await c.generate_signing_key(alg_a), await c.generate_signing_key(alg_b)
    a = Handshake(c, Role.OFFERER, ka, fps[0], fps[1], now=0.0, ephemeral_alg=eph, **kw_a)  # type: ignore[arg-type]
    b = Handshake(c, Role.ANSWERER, kb, fps[2], fps[3], now=0.0, ephemeral_alg=eph)
    await a.start()
    await b.start()
    return a, b


SHA256 = HashFunction.SHA256


def fp(digest: bytes) -> Fingerprint:
    return Fingerprint(SHA256, digest)


def reason(h: Handshake) -> str | None:
    return h.error.reason if h.error else None


@pytest.mark.parametrize(
    ("alg_a", "alg_b", "eph"),
    [
        (ED, ED, KeyAgreementAlgorithm.X25519),
        (P256, P256, KeyAgreementAlgorithm.ECDH_P256),
        (ED, P256, KeyAgreementAlgorithm.X25519),
        (P256, ED, KeyAgreementAlgorithm.ECDH_P256),
    ],
)
def test_handshake_succeeds(
    alg_a: SignatureAlgorithm, alg_b: SignatureAlgorithm, eph: KeyAgreementAlgorithm
) -> None:
    async def go() -> None:
        a, b = await make(alg_a, alg_b, eph=eph)
        await pump(a, b)
        ea, eb = a.next_event(), b.next_event()
        assert isinstance(ea, HandshakeComplete) and isinstance(eb, HandshakeComplete)
        assert a.state is b.state is HandshakeState.DONE and a.get_timer() is None
        assert ea.transcript_hash == eb.transcript_hash and ea.keys == eb.keys
        assert ea.peer_id == PeerId.from_public_key(alg_b, b._identity.public_key)
        assert eb.peer_id == PeerId.from_public_key(alg_a, a._identity.public_key)
        # The keys drive a working envelope session.
        c = OracleCrypto()
        sa = SecureChannel.from_keys(c, ea.keys, Role.OFFERER, 1, reliable=True)
        sb = SecureChannel.from_keys(c, eb.keys, Role.ANSWERER, 1, reliable=True)
        assert await sb.open(await sa.seal(b"hi", now=0), now=0) == b"hi"
        assert await sa.open(await sb.seal(b"yo", now=0), now=0) == b"yo"

    run(go)


def test_pinned_peer_id() -> None:
    async def go() -> None:
        c = OracleCrypto()
        kb = await c.generate_signing_key(ED)
        right = PeerId.from_public_key(ED, kb.public_key)
        for expected, want in (
            (right, None),
            (PeerId.from_public_key(ED, bytes(32)), "key_changed"),
        ):
            ka = await c.generate_signing_key(ED)
            a = Handshake(c, Role.OFFERER, ka, FA, FB, now=0.0, expected_peer_id=expected)
            b = Handshake(c, Role.ANSWERER, kb, FB, FA, now=0.0)
            await a.start()
            await b.start()
            await pump(a, b)
            assert reason(a) == want
            assert b.state is HandshakeState.DONE  # b got a valid AUTH from a
            if want:
                ev = a.next_event()
                assert isinstance(ev, HandshakeFailed) and ev.error.reason == want

    run(go)


def test_timeout() -> None:
    async def go() -> None:
        a, _ = await make(timeout=5.0)
        assert a.get_timer() == 5.0
        a.handle_timer(4.9)
        assert a.state is HandshakeState.HELLO_SENT
        a.handle_timer(5.0)
        assert reason(a) == "timeout" and a.get_timer() is None
        assert a.data_to_send() == []  # nothing further goes out after failure
        # A message that arrives after the deadline also times out.
        b2a, b2b = await make()
        for msg in b2b.data_to_send():
            await b2a.receive_message(msg, now=10.5)
        assert reason(b2a) == "timeout"

    run(go)


def test_known_peers_tofu_and_identity_change() -> None:
    async def go() -> None:
        c = OracleCrypto()
        store = KnownPeers()
        a, b = await make(crypto=c, known_peers=store, contact="bob")
        await pump(a, b)
        ev = a.next_event()
        assert isinstance(ev, HandshakeComplete) and ev.trust is not None
        assert ev.trust.status is TrustStatus.FIRST_SEEN
        # "bob" comes back with a different key.
        a2, b2 = await make(crypto=c, known_peers=store, contact="bob")
        await pump(a2, b2)
        assert reason(a2) == "key_changed" and str(ev.peer_id) in str(a2.error)
        fail = a2.next_event()
        assert isinstance(fail, HandshakeFailed) and fail.trust is not None
        assert fail.trust.previous == ev.peer_id
        # An allow-list that excludes the peer.
        a3, b3 = await make(crypto=c, known_peers=KnownPeers(allow=[]), contact="carol")
        await pump(a3, b3)
        assert reason(a3) == "not_allowed"

    run(go)


def test_mitm_signaling_server_is_detected_and_fingerprints_matter() -> None:
    """The server swapped SDP: each side sees the MITM's certificate as the remote one."""

    async def go() -> None:
        a, b = await make(fps=(FA, FM1, FB, FM2))
        hello_a, hello_b = a.data_to_send()[0], b.data_to_send()[0]
        await a.receive_message(hello_b, now=0.1)
        await b.receive_message(hello_a, now=0.1)
        assert reason(a) == reason(b) == "fingerprint_mismatch"
        assert "relay" in str(a.error) and Fingerprint(SHA256, FM2).hex() in str(a.error)

        # Contrast: each side's transcript, and the same without fingerprint fields.
        ha, hb = parse_message(hello_a), parse_message(hello_b)
        assert isinstance(ha, HelloMessage) and isinstance(hb, HelloMessage)
        view_a = Transcript.of(ha.side((fp(FA),)), hb.side((fp(FM1),)))  # what a would sign
        view_b = Transcript.of(ha.side((fp(FM2),)), hb.side((fp(FB),)))  # what b would verify
        assert view_a.encode() != view_b.encode()
        bare_a = encode_fields([f for f in view_a.fields() if f[0] not in (0x01, 0x02)])
        bare_b = encode_fields([f for f in view_b.fields() if f[0] not in (0x01, 0x02)])
        assert bare_a == bare_b  # without the binding, the MITM would be invisible
        c = OracleCrypto()
        for transcript_a, transcript_b, verifies in (
            (bare_a, bare_b, True),
            (view_a.encode(), view_b.encode(), False),
        ):
            th_a, th_b = await c.sha256(transcript_a), await c.sha256(transcript_b)
            sig = await c.sign(a._identity, auth_signature_input(Role.OFFERER, th_a))
            ok = await c.verify(
                ED, a._identity.public_key, sig, auth_signature_input(Role.OFFERER, th_b)
            )
            assert ok is verifies

    run(go)


def test_mitm_that_rewrites_hello_fingerprints_fails_on_signature() -> None:
    async def go() -> None:
        a, b = await make(fps=(FA, FM1, FB, FM2))

        def rewrite(src: Handshake, msg: bytes) -> bytes:
            m = parse_message(msg)
            if isinstance(m, HelloMessage):  # make the claim match the receiver's own cert
                m = HelloMessage(
                    m.role,
                    m.alg,
                    m.ephemeral_alg,
                    m.nonce,
                    (fp(FB if src is a else FA),),
                    m.public_key,
                    m.ephemeral_public_key,
                )
                return m.encode()
            return msg

        await pump(a, b, relay=rewrite)
        assert reason(a) == reason(b) == "bad_signature"

    run(go)


def test_reflected_hello_fails() -> None:
    async def go() -> None:
        a, _ = await make()
        hello_a = a.data_to_send()[0]
        await a.receive_message(hello_a, now=0.1)  # its own HELLO bounced back
        assert reason(a) == "protocol_violation"
        # Same nonce but the role byte flipped: still recognised as our own.
        a, _ = await make()
        hello_a = a.data_to_send()[0]
        flipped = hello_a[:2] + bytes([Role.ANSWERER]) + hello_a[3:]
        await a.receive_message(flipped, now=0.1)
        assert reason(a) == "protocol_violation"

    run(go)


def test_reflected_auth_fails() -> None:
    async def go() -> None:
        a, b = await make()
        captured: list[bytes] = []

        def hold(src: Handshake, m: bytes) -> bytes | None:
            if m[0] == 2:
                if src.role is Role.OFFERER:
                    captured.append(m)
                return None
            return m

        await pump(a, b, relay=hold)
        own_auth = captured[0]
        await a.receive_message(own_auth, now=0.1)
        assert reason(a) == "protocol_violation"
        # Even with the role byte rewritten, a's own signature does not verify as b's.
        a2, b2 = await make()
        captured.clear()
        await pump(a2, b2, relay=hold)
        forged = captured[0][:2] + bytes([Role.ANSWERER]) + captured[0][3:]
        await a2.receive_message(forged, now=0.1)
        assert reason(a2) == "bad_signature"

    run(go)


def test_replayed_handshake_messages_fail() -> None:
    async def go() -> None:
        # Messages recorded from one session do not authenticate another session.
        a, b = await make()
        old: dict[int, bytes] = {}

        def record(src: Handshake, m: bytes) -> bytes:
            if src is b:
                old[m[0]] = m
            return m

        await pump(a, b, relay=record)
        c = OracleCrypto()
        a2 = Handshake(c, Role.OFFERER, await c.generate_signing_key(ED), FA, FB, now=0.0)
        await a2.start()
        await a2.receive_message(old[1], now=0.1)  # b's old HELLO
        await a2.receive_message(old[2], now=0.1)  # b's old AUTH
        assert reason(a2) == "bad_signature"

    run(go)


def test_out_of_order_and_duplicate_messages() -> None:
    async def go() -> None:
        a, b = await make()
        hello_b = b.data_to_send()[0]
        a.data_to_send()
        await a.receive_message(hello_b, now=0.1)
        await a.receive_message(hello_b, now=0.1)  # second HELLO
        assert reason(a) == "protocol_violation"
        a, b = await make()
        await a.receive_message(bytes([2, 2, 1]) + bytes(64), now=0.1)  # AUTH before HELLO
        assert reason(a) == "protocol_violation"

    run(go)


def test_algorithm_and_version_mismatch() -> None:
    async def go() -> None:
        c = OracleCrypto()
        a = Handshake(c, Role.OFFERER, await c.generate_signing_key(ED), FA, FB, now=0.0)
        b = Handshake(
            c,
            Role.ANSWERER,
            await c.generate_signing_key(ED),
            FB,
            FA,
            now=0.0,
            ephemeral_alg=KeyAgreementAlgorithm.ECDH_P256,
        )
        await a.start()
        await b.start()
        await pump(a, b)
        assert reason(a) == reason(b) == "unsupported_algorithm"
        a, b = await make()
        hello = bytearray(b.data_to_send()[0])
        hello[1] = 1  # the sha-256-only handshake of earlier releases
        await a.receive_message(bytes(hello), now=0.1)
        assert reason(a) == "unsupported_version" and "version 1" in str(a.error)

    run(go)


def test_invalid_ephemeral_point_is_malformed() -> None:
    async def go() -> None:
        a, b = await make(eph=KeyAgreementAlgorithm.ECDH_P256)
        hello = b.data_to_send()[0]
        bad = hello[:-64] + bytes(64)  # 0x04 || zeros: not on the curve
        await a.receive_message(bad, now=0.1)
        assert reason(a) == "protocol_violation"

    run(go)


def test_local_misuse() -> None:
    async def go() -> None:
        c = OracleCrypto()
        k = await c.generate_signing_key(ED)
        with pytest.raises(LocalProtocolError):
            Handshake(c, Role.OFFERER, k, b"short", FB, now=0.0)
        h = Handshake(c, Role.OFFERER, k, FA, FB, now=0.0)
        with pytest.raises(LocalProtocolError):
            await h.receive_message(b"x", now=0.0)
        await h.start()
        with pytest.raises(LocalProtocolError):
            await h.start()
        a, b = await make()
        await pump(a, b)
        with pytest.raises(LocalProtocolError):
            await a.receive_message(b"late", now=0.2)

    run(go)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parser_fuzz_only_typed_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except AuthenticationError as exc:
        assert exc.reason in REASONS


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_state_machine_fuzz_mutated_messages(data: st.DataObject) -> None:
    async def go() -> None:
        a, b = await make()
        hello = bytearray(b.data_to_send()[0])
        if data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(hello) - 1))
            hello[i] ^= data.draw(st.integers(1, 255))
        else:
            hello = bytearray(data.draw(st.binary(max_size=200)))
        await a.receive_message(bytes(hello), now=0.1)
        assert a.state in (HandshakeState.AUTH_SENT, HandshakeState.FAILED)
        if a.error is not None:
            assert a.error.reason in REASONS
        junk = data.draw(st.binary(max_size=80))
        await a.receive_message(junk, now=0.2)
        assert a.state in (HandshakeState.FAILED, HandshakeState.AUTH_SENT, HandshakeState.DONE)

    run(go)


def hexfp(n: int, size: int) -> str:
    return ":".join(f"{(n + i) % 256:02X}" for i in range(size))


SHA1_LINE = "a=fingerprint:sha-1 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\r\n"
SDP = """v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
a=fingerprint:sha-1 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
a=fingerprint:SHA-256 {fp}\r
a=setup:actpass\r
"""

AIORTC_LINES = "".join(
    f"a=fingerprint:{h.sdp_name} {hexfp(h.value, h.digest_size)}\r\n" for h in HashFunction)


def test_sdp_fingerprint_parsing() -> None:
    text = hexfp(0, 32)
    want = Fingerprint(SHA256, bytes(range(32)))
    assert sdp_fingerprints(SDP.format(fp=text)) == [want]
    # A sha-1 line beside it is skipped in our own SDP, refused in a remote one.
    assert remote_fingerprints(SDP.format(fp=text).replace(SHA1_LINE, "")) == (want,)
    spaced = SDP.replace("a=fingerprint:SHA-256 {fp}", "  a=fingerprint: sha-256   {fp}  ")
    assert sdp_fingerprints(spaced.format(fp=text.lower()).replace("\r", "")) == [want]
    twice = SDP.format(fp=text) + f"a=fingerprint:sha-256 {text}\r\n"
    assert sdp_fingerprints(twice) == [want]  # same cert repeated per m-section
    with pytest.raises(AuthenticationError, match="two different sha-256") as exc:
        remote_fingerprints(twice.replace(SHA1_LINE, "") + "a=fingerprint:sha-256 " + hexfp(9, 32))
    assert exc.value.reason == "protocol_violation"
    for bad in (text[:-3], text + ":00", text.replace(":", "", 1), "ZZ" + text[2:]):
        with pytest.raises(AuthenticationError) as exc:
            sdp_fingerprints(SDP.format(fp=bad))
        assert exc.value.reason == "protocol_violation"
    with pytest.raises(AuthenticationError, match="no a=fingerprint") as exc:
        sdp_fingerprints("v=0\r\n")
    assert exc.value.reason == "protocol_violation"


def test_sdp_with_several_algorithms_all_are_bound() -> None:
    # aiortc's three lines: a verifier binds all of them, in canonical order.
    fps = sdp_fingerprints("v=0\r\n" + AIORTC_LINES)
    assert [f.hash for f in fps] == [HashFunction.SHA256, HashFunction.SHA384, HashFunction.SHA512]
    reversed_lines = "".join(reversed(AIORTC_LINES.splitlines(keepends=True)))
    assert remote_fingerprints(reversed_lines) == tuple(fps)
    # Chromium keeps only the last line: that one alone.
    assert remote_fingerprints("a=fingerprint:sha-512 " + hexfp(3, 64)) == (fps[2],)
    assert remote_fingerprints("a=fingerprint:SHA-384 " + hexfp(2, 48))[0].hash is HashFunction.SHA384


def test_a_remote_line_we_cannot_check_is_refused() -> None:
    """Firefox accepts a certificate matching any one line: a sha-1 line could hide a relay."""
    with pytest.raises(AuthenticationError, match="sha-1, which we cannot check") as exc:
        remote_fingerprints(SDP.format(fp=hexfp(0, 32)))
    assert exc.value.reason == "unsupported_fingerprint_algorithm"
    # Our own SDP is ours: a line we do not use there is simply skipped.
    assert [f.hash for f in sdp_fingerprints(SDP.format(fp=hexfp(0, 32)))] == [SHA256]


@pytest.mark.parametrize("name", ["sha-1", "md5", "sha-224", "md2", "sha3-256"])
def test_sdp_with_only_other_algorithms_is_refused_by_name(name: str) -> None:
    with pytest.raises(AuthenticationError) as exc:
        remote_fingerprints(f"v=0\r\na=fingerprint:{name} {hexfp(0, 20)}\r\n")
    assert exc.value.reason == "unsupported_fingerprint_algorithm"
    assert name in str(exc.value) and "sha-256, sha-384 or sha-512" in str(exc.value)
    with pytest.raises(AuthenticationError) as exc:
        sdp_fingerprints(f"v=0\r\na=fingerprint:{name} {hexfp(0, 20)}\r\n")
    assert exc.value.reason == "unsupported_fingerprint_algorithm"


def test_certificate_fingerprint_matches_hashlib() -> None:
    import hashlib

    der = b"0\x82\x01\x0a" + bytes(range(200))
    for h in HashFunction:
        got = certificate_fingerprint(der, h)
        assert got.digest == hashlib.new(h.sdp_name.replace("-", ""), der).digest()
        assert Fingerprint.parse(h.sdp_name, got.hex()) == got


@pytest.mark.parametrize(
    ("a_local", "b_sees_a"),
    [
        ("all", [HashFunction.SHA512]),  # aiortc offers three; Chromium keeps the last
        ("all", [HashFunction.SHA256]),  # ... or the first, when the order is reversed
        ("all", list(HashFunction)),  # Firefox keeps all three
        ("all", [HashFunction.SHA256, HashFunction.SHA384]),  # SDP cut by someone
        ("sha-256", [HashFunction.SHA256]),  # two browsers
    ],
)
def test_both_sides_bind_the_same_fingerprints_whatever_lines_they_kept(
        a_local: str, b_sees_a: list[HashFunction]) -> None:
    async def go() -> None:
        a_fps = [certificate_fingerprint(b"cert-a", h) for h in HashFunction]
        if a_local == "sha-256":
            a_fps = a_fps[:1]
        b_fp = certificate_fingerprint(b"cert-b", HashFunction.SHA256)
        a_view = [certificate_fingerprint(b"cert-a", h) for h in b_sees_a]
        a, b = await make(fps=(a_fps, b_fp, [b_fp], a_view))
        await pump(a, b)
        ea, eb = a.next_event(), b.next_event()
        assert isinstance(ea, HandshakeComplete) and isinstance(eb, HandshakeComplete)
        assert ea.transcript_hash == eb.transcript_hash and ea.keys == eb.keys

    run(go)


def test_a_fingerprint_the_holder_never_published_is_a_mismatch() -> None:
    """The peer saw our cert under sha-384, but our SDP has only sha-256: rewritten SDP."""

    async def go() -> None:
        cert_a = b"cert-a"
        a_view = certificate_fingerprint(cert_a, HashFunction.SHA384)
        a, b = await make(fps=([certificate_fingerprint(cert_a)], FB, FB, a_view))
        await pump(a, b)
        assert reason(a) == "fingerprint_mismatch" and "sha-384" in str(a.error)

    run(go)


def test_relay_hiding_behind_one_of_several_lines_is_a_mismatch() -> None:
    """The verifier's browser accepted DTLS with the relay's cert under sha-256 while the real
    peer's sha-512 line was also there: the real peer sees the relay's line among "its own"."""

    async def go() -> None:
        real_a = [certificate_fingerprint(b"cert-a", h) for h in HashFunction]
        relay_line = certificate_fingerprint(b"relay cert", HashFunction.SHA256)
        b_sees_a = [relay_line, real_a[2]]  # what the relay put in b's remote SDP
        a, b = await make(fps=(real_a, FB, FB, b_sees_a))
        await pump(a, b)
        assert reason(a) == "fingerprint_mismatch" and relay_line.hex() in str(a.error)

    run(go)


def test_hello_fingerprint_encoding_is_checked() -> None:
    async def go() -> None:
        a, b = await make()
        hello = b.data_to_send()[0]
        for bad in (hello[:37] + b"\x00" + hello[38:],  # zero fingerprints
                    hello[:37] + b"\x04" + hello[38:],  # more than one per hash
                    hello[:40]):  # cut inside the digest
            a2, _ = await make()
            await a2.receive_message(bad, now=0.1)
            assert reason(a2) == "protocol_violation", bad.hex()
        # Two entries out of order (sha-512 before sha-256).
        two = (hello[:37] + b"\x02" + b"\x03" + bytes(64) + b"\x01" + bytes(32) + hello[38 + 33:])
        await a.receive_message(two, now=0.1)
        assert reason(a) == "protocol_violation" and "sorted" in str(a.error)

    run(go)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list(HashFunction)), min_size=1, max_size=3, unique=True),
       st.binary(min_size=1, max_size=40))
def test_hello_roundtrip_with_any_fingerprint_set(hashes: list[HashFunction], cert: bytes) -> None:
    async def go() -> None:
        view = [certificate_fingerprint(cert, h) for h in hashes]
        a, b = await make(fps=([certificate_fingerprint(cert, h) for h in HashFunction], FB, FB, view))
        hello = b.data_to_send()[0]
        parsed = parse_message(hello)
        assert isinstance(parsed, HelloMessage) and parsed.encode() == hello
        assert parsed.receiver_fingerprints == tuple(sorted(view, key=lambda f: f.hash))
        await a.receive_message(hello, now=0.1)
        await pump(a, b)
        assert a.state is b.state is HandshakeState.DONE

    run(go)


def test_unknown_hash_code_in_hello_is_named() -> None:
    async def go() -> None:
        a, b = await make()
        hello = bytearray(b.data_to_send()[0])
        hello[5 + 32 + 1] = 9  # the first fingerprint's hash code byte
        await a.receive_message(bytes(hello), now=0.1)
        assert reason(a) == "unsupported_fingerprint_algorithm"

    run(go)


def test_peer_closed_and_every_reason_has_a_message() -> None:
    async def go() -> None:
        a, _ = await make()
        a.connection_lost("control channel closed by the peer")
        assert reason(a) == "peer_closed" and "closed by the peer" in str(a.error)
        ev = a.next_event()
        assert isinstance(ev, HandshakeFailed) and ev.error is a.error

    run(go)
    for r in AuthReason:
        text = describe(r)
        assert text and text != r.value and "pyapp" not in text.split()[0]


@settings(max_examples=200)
@given(st.text(max_size=400))
def test_sdp_parser_fuzz(text: str) -> None:
    try:
        fps = remote_fingerprints(text)
    except AuthenticationError as exc:
        assert exc.reason in ("protocol_violation", "unsupported_fingerprint_algorithm")
    else:
        assert fps and all(len(fp.digest) == fp.hash.digest_size for fp in fps)


def test_a_failing_side_alerts_its_peer_with_the_reason() -> None:
    async def go() -> None:
        a, b = await make(fps=(FA, FM1, FB, FM2))  # a relay: each side sees a stranger
        a.data_to_send()
        hello_b = b.data_to_send()[0]
        await a.receive_message(hello_b, now=0.1)
        assert reason(a) == "fingerprint_mismatch"
        [alert] = a.data_to_send()
        assert alert == bytes([ALERT, 2, Role.OFFERER, WIRE_CODES[AuthReason.FINGERPRINT_MISMATCH]])
        # b has not looked at a's HELLO yet: the ALERT tells it why a hung up.
        await b.receive_message(alert, now=0.1)
        assert reason(b) == "peer_rejected" and "fingerprint_mismatch" in str(b.error)
        assert b.data_to_send() == []  # an ALERT is never answered

    run(go)


def test_pinned_side_alert_reaches_a_peer_that_already_succeeded() -> None:
    async def go() -> None:
        c = OracleCrypto()
        ka, kb = await c.generate_signing_key(ED), await c.generate_signing_key(ED)
        wrong = PeerId.from_public_key(ED, bytes(32))
        a = Handshake(c, Role.OFFERER, ka, FA, FB, now=0.0, expected_peer_id=wrong)
        b = Handshake(c, Role.ANSWERER, kb, FB, FA, now=0.0)
        await a.start()
        await b.start()
        alerts: list[bytes] = []

        def keep(src: Handshake, m: bytes) -> bytes:
            if m[0] == ALERT:
                alerts.append(m)
            return m

        await pump(a, b, relay=keep)
        assert reason(a) == "key_changed" and b.state is HandshakeState.DONE
        err = parse_alert(alerts[0])
        assert err is not None and err.reason == "peer_rejected" and "key_changed" in str(err)
        assert parse_alert(b"\x03\x02\x00") is None and parse_alert(b"junk") is None

    run(go)


def test_no_alert_for_timeouts_and_closed_transports_and_unknown_codes() -> None:
    async def go() -> None:
        a, _ = await make(timeout=1.0)
        a.data_to_send()
        a.handle_timer(2.0)
        assert reason(a) == "timeout" and a.data_to_send() == []
        a, _ = await make()
        a.data_to_send()
        a.connection_lost()
        assert reason(a) == "peer_closed" and a.data_to_send() == []
        a, _ = await make()
        await a.receive_message(bytes([ALERT, 2, Role.ANSWERER, 99]), now=0.1)
        assert reason(a) == "peer_rejected" and "reason code 99" in str(a.error)
        a, _ = await make()
        await a.receive_message(bytes([ALERT, 2, Role.ANSWERER, 1, 0]), now=0.1)
        assert reason(a) == "protocol_violation"
        assert set(WIRE_CODES) <= set(AuthReason) and len(set(WIRE_CODES.values())) == len(WIRE_CODES)

    run(go)
