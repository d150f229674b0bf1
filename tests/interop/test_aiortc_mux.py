"""The page's multiplexer against a second implementation written from docs/wire-format.md alone
(tests/interop/doc_mux.py), running on aiortc."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyapp.core.security.envelope import SecureChannel
from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.keys import Role
from tests.conftest import PyPage, ServerProcess
from tests.interop.conftest import PAGE, Link, connect, interop_page
from tests.interop.doc_mux import DocMux
from tests.support.aiortc_peer import PeerThread, authenticate
from tests.support.oracle_crypto import OracleCrypto

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

BIG = bytes(range(256)) * 160  # 40960 bytes: three fragments

async def doc_side(link: Link, mux: DocMux) -> dict[str, Any]:
    await mux.start(15)
    orders = await mux.accept(15)
    first, second = await orders.inbox.get(), await orders.inbox.get()
    fills = mux.open_channel("fills", priority=3)
    mux.send(fills, "filled 1 @ 42")
    mux.send(fills, b"\x00\xff")
    mux.send(orders, "ack: order received")
    ticks = await mux.accept(15)
    tick_list = [await asyncio.wait_for(ticks.inbox.get(), 10) for _ in range(3)]
    quotes = mux.open_channel("quotes", reliable=False)
    await asyncio.wait_for(quotes.accepted.wait(), 10)
    mux.send(quotes, b"BTC 42000")
    await orders.inbox.get()  # woken by the page's CLOSE
    return {"label": orders.label, "cid": orders.cid, "first": first, "second_ok": second == BIG,
            "closed_by_peer": orders.closed_by_peer, "close_sent": orders.close_sent,
            "fills_id": fills.cid, "quotes_id": quotes.cid, "ticks": [ticks.label, ticks.reliable, tick_list], "hellos": mux.hellos_sent, "acks": mux.acks_received,
            "session": mux.session_id.hex(), "peer_session": (mux.peer_session_id or b"").hex(),
            "arrivals": sorted({(name, cid) for name, _, cid in mux.arrivals}),
            "fills_urgent": fills.urgent}


@pytest.mark.parametrize("page_dials", [True, False], ids=["page-offers", "aiortc-offers"])
def test_page_mux_against_doc_mux_on_aiortc(cpage: PyPage, peer_thread: PeerThread,
                                            server: ServerProcess, page_dials: bool) -> None:
    mux_round(cpage, peer_thread, server, page_dials)


def test_firefox_page_mux_against_doc_mux(firefox: Any, peer_thread: PeerThread,
                                          server: ServerProcess) -> None:
    page = interop_page(firefox, server)
    try:
        mux_round(page, peer_thread, server, page_dials=True)
    finally:
        errors = [c for c in page.console if c.startswith("pageerror")]
        page.page.context.close()
        assert not errors, errors


def test_page_mux_against_doc_mux_with_the_urgent_stream(cpage: PyPage, peer_thread: PeerThread,
                                                         server: ServerProcess) -> None:
    """The doc peer implements pyapp-mux-h too: HIGH channels opened by either side ride it."""
    mux_round(cpage, peer_thread, server, page_dials=True, urgent=True)


def mux_round(cpage: PyPage, peer_thread: PeerThread, server: ServerProcess,
              page_dials: bool, urgent: bool = False) -> None:
    link = connect(cpage, peer_thread, server, page_dials=page_dials)
    try:
        # The impolite side (the dialer) takes even ids: computable from the document alone.
        doc_even = not page_dials
        mux = peer_thread.run(_make(link, doc_even, urgent))
        fut = peer_thread.submit(doc_side(link, mux))
        page = link.page.call(f"{PAGE}:mux_round", timeout=60)
        doc = fut.result(30)
        page_parity = 0 if page_dials else 1
        assert page["orders_id"] % 2 == page_parity and doc["cid"] == page["orders_id"]
        assert page["orders_id"] == page_parity  # the first id of its parity
        assert doc["label"] == "orders" and doc["first"] == "buy 1 @ 42" and doc["second_ok"]
        assert page["got"] == ["fills", doc["fills_id"], "filled 1 @ 42", "00ff"]
        assert doc["fills_id"] == (0 if doc_even else 1)
        assert page["reply"] == "ack: order received"
        # Unreliable both ways: DATA on pyapp-mux-u (id 1001), never ACKed.
        assert doc["ticks"] == ["ticks", False, ["tick 0", "tick 1", "tick 2"]]
        assert page["quote"] == ["quotes", doc["quotes_id"], b"BTC 42000".hex()]
        assert not [cid for cid, _ in doc["acks"] if cid == doc["quotes_id"]]
        assert doc["closed_by_peer"] and doc["close_sent"]  # graceful two-way CLOSE
        # Cumulative ACKs from the page's side: message numbers started at 0.
        acked = [seq for cid, seq in doc["acks"] if cid == doc["fills_id"]]
        assert acked and acked[-1] == 2
        # The hellos carried each side's session id to the other.
        assert page["peer_session"] == doc["session"] and doc["peer_session"] == page["session"]
        assert len(bytes.fromhex(doc["peer_session"])) == 8 and doc["hellos"] >= 2
        assert page["errors"] == []
        # HIGH channels (the page's orders, the doc's fills) ride pyapp-mux-h when the
        # doc peer has it, pyapp-mux otherwise; every frame of theirs, both ways.
        where = "urgent" if urgent else "reliable"
        assert page["urgent_transport"] is urgent
        assert page["orders_transport"] == ("URGENT" if urgent else "RELIABLE")
        assert doc["fills_urgent"] is urgent
        arrived = {cid: {name for name, c in doc["arrivals"] if c == cid}
                   for cid in (doc["cid"], doc["fills_id"])}
        assert arrived == {doc["cid"]: {where}, doc["fills_id"]: {where}}, doc["arrivals"]
    finally:
        link.close()


async def _make(link: Link, even: bool, urgent: bool = False) -> DocMux:
    return DocMux(link.peer, even=even, urgent=urgent)


def test_send_encrypted_over_a_doc_mux_channel(cpage: PyPage, peer_thread: PeerThread,
                                               server: ServerProcess) -> None:
    """Authenticate, then envelopes on a logical channel (the logical id is in the AAD)."""
    link = connect(cpage, peer_thread, server, page_dials=False)
    try:
        async def aiortc_side() -> dict[str, Any]:
            crypto = OracleCrypto()
            me = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
            done, _ = await authenticate(link.peer, me, Role.OFFERER, crypto=crypto, timeout=15)
            mux = DocMux(link.peer, even=True)
            await mux.start(15)
            ch = mux.open_channel("sealed")
            sc = SecureChannel.from_keys(crypto, done.keys, Role.OFFERER, ch.cid, reliable=True)
            loop = asyncio.get_running_loop()
            mux.send(ch, await sc.seal(b"sealed over the doc mux", loop.time()))
            reply = await ch.inbox.get()
            assert isinstance(reply, bytes)
            return {"cid": ch.cid, "reply": (await sc.open(reply, loop.time())).decode()}

        fut = peer_thread.submit(aiortc_side())
        page = link.page.call(f"{PAGE}:encrypted_over_mux", timeout=60)
        doc = fut.result(30)
        assert page["got"] == "sealed over the doc mux" and page["cid"] == doc["cid"] == 0
        assert doc["reply"] == "and back, sealed by the page"
    finally:
        link.close()

