"""A relaying man in the middle built on aiortc: two peer connections bridging page A and page B,
each presenting the relay's own DTLS certificate, relaying every data-channel message.

Both pages must refuse it with ``fingerprint_mismatch`` -- with aiortc's default SDP (three
fingerprint lines) and with the SDP cut down to one line.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyapp.core.security.handshake import HelloMessage, parse_message
from tests.conftest import PyPage, ServerProcess, new_pypage, wait_until
from tests.interop.conftest import PAGE
from tests.support.aiortc_peer import (
    AiortcPeer,
    Channel,
    PeerThread,
    SdpFilter,
    SignalingPeer,
    keep_one_fingerprint,
)

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

@dataclass
class Relay:
    """The man in the middle: leg ``a`` answers page A, leg ``b`` dials page B."""

    a: AiortcPeer
    b: AiortcPeer
    relayed: dict[str, list[bytes | str]] = field(default_factory=lambda: {"a->b": [], "b->a": []})
    tasks: list[asyncio.Future[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks.append(asyncio.ensure_future(self._bridge()))

    async def _bridge(self) -> None:
        # Every channel page A opens is mirrored towards page B, and piped both ways.
        while True:
            ch_a = await self.a.incoming.get()
            ch_b = self.b.create_channel(ch_a.label, protocol=ch_a.dc.protocol)
            self.tasks.append(asyncio.ensure_future(self._pipe(ch_a, ch_b, "a->b")))
            self.tasks.append(asyncio.ensure_future(self._pipe(ch_b, ch_a, "b->a")))

    async def _pipe(self, src: Channel, dst: Channel, log: str) -> None:
        await dst.wait_open()
        while True:
            try:
                message = await src.receive(timeout=3600)
            except ConnectionError:
                return
            self.relayed[log].append(message)
            dst.send(message)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.a.close()
        await self.b.close()


@pytest.fixture(scope="module")
def pages(chromium: Any, server: ServerProcess) -> Iterator[tuple[PyPage, PyPage]]:
    a, b = new_pypage(chromium, server), new_pypage(chromium, server)
    for page in (a, b):
        page.call(f"{PAGE}:setup")
    yield a, b
    for page in (a, b):
        page.page.context.close()


def run_mitm(page_a: PyPage, page_b: PyPage, thread: PeerThread, server: ServerProcess,
             sdp_filter: SdpFilter | None) -> tuple[dict[str, Any], dict[str, Any], Relay]:
    room = "mitm-" + uuid.uuid4().hex[:10]
    sig = thread.run(SignalingPeer.connect(server.url, room))
    id_a = page_a.call(f"{PAGE}:join", room=room, polite=False)
    id_b = page_b.call(f"{PAGE}:join", room=room, polite=True)

    async def joined() -> list[str]:
        return [await asyncio.wait_for(sig.joined.get(), 10) for _ in range(2)]

    assert thread.run(joined()) == [id_a, id_b]
    relay = Relay(AiortcPeer(sig, id_a, sdp_filter=sdp_filter),
                  AiortcPeer(sig, id_b, sdp_filter=sdp_filter))
    # Page A dials who it believes is B (the relay); the relay dials page B as "A".
    page_a.call(f"{PAGE}:dial", peer=sig.peer_id, channels=["x"])
    page_b.call(f"{PAGE}:dial", peer=sig.peer_id, channels=[])

    async def dial_b() -> None:
        relay.b.create_channel("x")
        await relay.b.dial()
        relay.start()

    thread.run(dial_b())
    for page in (page_a, page_b):
        page.call(f"{PAGE}:wait_connected", seconds=30, timeout=40)
    for page in (page_a, page_b):
        page.call(f"{PAGE}:start_authenticate", seconds=12)
    for page in (page_a, page_b):
        wait_until(lambda p=page: p.call(f"{PAGE}:authenticate_done"), timeout=30)
    out_a = page_a.call(f"{PAGE}:authenticate_result")
    out_b = page_b.call(f"{PAGE}:authenticate_result")
    return out_a, out_b, relay


@pytest.mark.parametrize("cut", [None, "sha-256", "sha-512"], ids=["default-sdp", "only-sha-256",
                                                                   "only-sha-512"])
def test_relaying_mitm_fails_with_fingerprint_mismatch(pages: tuple[PyPage, PyPage],
                                                       peer_thread: PeerThread,
                                                       server: ServerProcess,
                                                       cut: str | None) -> None:
    page_a, page_b = pages
    out_a, out_b, relay = run_mitm(page_a, page_b, peer_thread, server,
                                   keep_one_fingerprint(cut) if cut else None)
    try:
        for out in (out_a, out_b):
            assert out.get("reason") == "fingerprint_mismatch", json.dumps(out)
            assert out["error"] == "AuthenticationError"
            assert "relay" in out["message"]  # the user reads why, not "malformed message"
            assert out["closed"] is True and out["status"] == "failed"
        # What each page bound for the relay's leg: the cut line, or Chromium's kept last one.
        want = cut or "sha-512"
        for out in (out_a, out_b):
            assert [f.split()[0] for f in out["remote_bound"]] == [want]
        sent = [line for sdp in relay.a.sent_sdp + relay.b.sent_sdp for line in sdp.split("\r\n")
                if line.startswith("a=fingerprint:")]
        assert len(sent) == (2 if cut else 6)
        # The relay really relayed: each HELLO crossed (and named the relay's certificate
        # as seen by the sender), then each side's ALERT (fingerprint_mismatch); no AUTH.
        relayed = relay.relayed
        kinds = [[bytes(m)[0] for m in relayed[d]] for d in ("a->b", "b->a")]  # type: ignore[arg-type]
        assert kinds == [[1, 3], [1, 3]], kinds
        hello_a = parse_message(bytes(relayed["a->b"][0]))  # type: ignore[arg-type]
        assert isinstance(hello_a, HelloMessage) and hello_a.role.name == "OFFERER"
        assert [str(f) for f in hello_a.receiver_fingerprints] == out_a["remote_bound"]
    finally:
        peer_thread.run(relay.close())
        peer_thread.run(relay.a.signaling.close())


def test_relaying_mitm_between_firefox_and_chromium(firefox: Any, pages: tuple[PyPage, PyPage],
                                                    peer_thread: PeerThread,
                                                    server: ServerProcess) -> None:
    """Firefox keeps all three of the relay's lines (and selects sha-512); same verdict."""
    page_a = new_pypage(firefox, server)
    try:
        page_a.call(f"{PAGE}:setup")
        out_a, out_b, relay = run_mitm(page_a, pages[1], peer_thread, server,
                                       keep_one_fingerprint("sha-384"))
        try:
            for out in (out_a, out_b):
                assert out.get("reason") == "fingerprint_mismatch", json.dumps(out)
                assert out["closed"] is True and out["status"] == "failed"
            assert [f.split()[0] for f in out_a["remote_bound"]] == ["sha-384"]
            assert [bytes(m)[0] for m in relay.relayed["a->b"]] == [1, 3]  # type: ignore[arg-type]
        finally:
            peer_thread.run(relay.close())
            peer_thread.run(relay.a.signaling.close())
        out_a, out_b, relay = run_mitm(page_a, pages[1], peer_thread, server, None)
        try:
            assert out_a.get("reason") == out_b.get("reason") == "fingerprint_mismatch"
            assert [f.split()[0] for f in out_a["remote_bound"]] == ["sha-256", "sha-384", "sha-512"]
        finally:
            peer_thread.run(relay.close())
            peer_thread.run(relay.a.signaling.close())
    finally:
        page_a.page.context.close()
