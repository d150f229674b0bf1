"""authenticate and send_encrypted between a page and aiortc, with aiortc's default SDP
(three a=fingerprint lines), in both offer directions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyapp.core.security.envelope import SecureChannel
from pyapp.core.security.identity import PeerId
from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.keys import Role
from pyapp.exceptions import AuthenticationError
from tests.conftest import PyPage, ServerProcess
from tests.interop.conftest import PAGE, Link, connect, interop_page
from tests.support.aiortc_peer import PeerThread, authenticate
from tests.support.oracle_crypto import OracleCrypto

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

async def aiortc_auth_and_echo(link: Link, role: Role) -> dict[str, Any]:
    crypto = OracleCrypto()
    identity = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
    done, _control = await authenticate(link.peer, identity, role, crypto=crypto, timeout=15)
    secret = await link.peer.accept("secret")
    await secret.wait_open()
    assert secret.id is not None
    sc = SecureChannel.from_keys(crypto, done.keys, role, secret.id, reliable=True)
    loop = asyncio.get_running_loop()
    envelope = await secret.receive()
    assert isinstance(envelope, bytes)
    plain = await sc.open(envelope, loop.time())
    secret.send(await sc.seal(b"sealed by aiortc", loop.time()))
    return {"peer": str(done.peer_id), "th": done.transcript_hash.hex(), "got": plain.decode(),
            "envelope_len": len(envelope),
            "me": str(PeerId.from_public_key(identity.alg, identity.public_key))}


def run_auth(link: Link) -> tuple[dict[str, Any], dict[str, Any]]:
    # The dialer is impolite, hence the handshake's OFFERER.
    aiortc_role = Role.ANSWERER if link.page_dialed else Role.OFFERER
    fut = link.thread.submit(aiortc_auth_and_echo(link, aiortc_role))
    page = link.page.call(f"{PAGE}:authenticate_and_echo", timeout=40)
    return page, fut.result(30)


def check(page: dict[str, Any], aio: dict[str, Any], *, page_dialed: bool) -> None:
    assert page["status"] == "verified"
    assert page["role"] == ("OFFERER" if page_dialed else "ANSWERER")
    # Each side verified the other's identity, and both bound the same transcript.
    assert page["peer"] == aio["me"] and aio["peer"] == page["me"]
    assert page["th"] == aio["th"]
    # Encrypted both ways over a raw data channel (channel id = its SCTP stream id).
    assert aio["got"] == "sealed by the page" and page["got"] == "sealed by aiortc"
    assert aio["envelope_len"] == len("sealed by the page") + 33 == page["wire_bytes"]


@pytest.mark.parametrize("page_dials", [True, False], ids=["page-offers", "aiortc-offers"])
def test_authenticate_and_send_encrypted_chromium(cpage: PyPage, peer_thread: PeerThread,
                                                  server: ServerProcess, page_dials: bool) -> None:
    link = connect(cpage, peer_thread, server, page_dials=page_dials)
    try:
        page, aio = run_auth(link)
        check(page, aio, page_dialed=page_dials)
        # Chromium kept only aiortc's last line: the page bound sha-512, aiortc sha-256.
        assert page["remote_bound"] == ["sha-512"]
    finally:
        link.close()


def test_authenticate_and_send_encrypted_firefox(firefox: Any, peer_thread: PeerThread,
                                                 server: ServerProcess) -> None:
    page = interop_page(firefox, server)
    try:
        link = connect(page, peer_thread, server, page_dials=False)
        try:
            got, aio = run_auth(link)
            check(got, aio, page_dialed=False)
            assert got["remote_bound"] == ["sha-256", "sha-384", "sha-512"]  # all three kept
        finally:
            link.close()
    finally:
        errors = [c for c in page.console if c.startswith("pageerror")]
        page.page.context.close()
        assert not errors, errors


def test_aiortc_refusal_reaches_the_page_with_its_reason(cpage: PyPage, peer_thread: PeerThread,
                                                         server: ServerProcess) -> None:
    """aiortc pinned another PeerId for the page: it says key_changed; the page, which had
    already verified aiortc, learns it (peer_rejected) and closes."""
    link = connect(cpage, peer_thread, server, page_dials=True)
    try:
        async def aiortc_side() -> str:
            crypto = OracleCrypto()
            me = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
            pinned = PeerId.from_public_key(SignatureAlgorithm.ED25519, bytes(32))
            try:
                await authenticate(link.peer, me, Role.ANSWERER, crypto=crypto, timeout=15,
                                   expected_peer_id=pinned)
            except AuthenticationError as exc:
                return exc.reason
            return "verified"

        fut = peer_thread.submit(aiortc_side())
        page = link.page.call(f"{PAGE}:authenticate_then_wait_for_failure", timeout=40)
        assert fut.result(30) == "key_changed"
        # Either the ALERT came while the page still waited for AUTH, or right after it
        # verified aiortc: both end as peer_rejected, naming aiortc's reason.
        assert page["first"] in ("verified", "peer_rejected")
        assert page["status"] == "failed" and page["reason"] == "peer_rejected"
        assert "key_changed" in page["message"] and page["closed"] is True
    finally:
        link.close()
