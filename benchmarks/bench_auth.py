"""Authentication figures between real parties, through the real signaling server.

* auth_ms: median wall time of ``authenticate`` page to page -- two pages (two
  browser contexts) connected through the server's signaling, a fresh
  connection per round. The answering page is started first (it waits for the
  control channel), then the offering page; the figure is the offering page's
  ``AuthResult.elapsed`` (call to verified peer: HELLO/AUTH round trip, WebCrypto
  Ed25519 + X25519 on both sides), so no Playwright round trip is counted.
* auth_aiortc_ms: the same, page to the CPython peer on aiortc
  (tests/support/aiortc_peer.py: pyapp.core's handshake with the ``cryptography``
  oracle), with aiortc's default SDP (three fingerprint lines).

Both are latencies on a shared, noisy machine: compare them side by side in one run.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.keys import Role
from tests.interop.conftest import PAGE, connect
from tests.support.aiortc_peer import PeerThread, authenticate
from tests.support.oracle_crypto import OracleCrypto

ROUNDS = 7


def _elapsed_ms(page: Any) -> float:
    """Wait for the page's background authenticate(); its AuthResult.elapsed in ms."""
    deadline = time.monotonic() + 30
    while not page.call(f"{PAGE}:authenticate_done"):
        if time.monotonic() > deadline:
            raise AssertionError("authenticate() did not finish within 30 s")
        time.sleep(0.02)
    result = page.call(f"{PAGE}:authenticate_result")
    if "ok" not in result:
        raise AssertionError(f"authentication failed: {result}")
    return float(result["elapsed_ms"])


def _page_to_page(a: Any, b: Any) -> float:
    room = "bench-auth-" + uuid.uuid4().hex[:8]
    b_id = b.call(f"{PAGE}:join", room=room, polite=True)
    a_id = a.call(f"{PAGE}:join", room=room, polite=False)
    a.call(f"{PAGE}:dial", peer=b_id, channels=["x"])
    a.call(f"{PAGE}:wait_connected", seconds=30, timeout=40)
    b.call(f"{PAGE}:dial", peer=a_id, channels=[])
    b.call(f"{PAGE}:wait_connected", seconds=30, timeout=40)
    b.call(f"{PAGE}:start_authenticate", seconds=20)  # the answerer first: it waits for the control channel
    a.call(f"{PAGE}:start_authenticate", seconds=20)
    elapsed = _elapsed_ms(a)
    _elapsed_ms(b)
    for page in (a, b):
        page.call(f"{PAGE}:close")
    return elapsed


def _page_to_aiortc(page: Any, thread: PeerThread, server: Any) -> float:
    link = connect(page, thread, server, page_dials=True)
    try:
        async def aiortc_side() -> None:
            crypto = OracleCrypto()
            me = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
            await authenticate(link.peer, me, Role.ANSWERER, crypto=crypto, timeout=20)

        fut = thread.submit(aiortc_side())
        page.call(f"{PAGE}:start_authenticate", seconds=20)
        elapsed = _elapsed_ms(page)
        fut.result(30)
        return elapsed
    finally:
        link.close()


def run(ctx: Any) -> dict[str, float]:
    a, b = ctx.page(), ctx.page()
    thread = PeerThread()
    try:
        for page in (a, b):
            page.call(f"{PAGE}:setup")
        p2p = [_page_to_page(a, b) for _ in range(ROUNDS)]
        aio = [_page_to_aiortc(a, thread, ctx.server) for _ in range(ROUNDS)]
    finally:
        thread.stop()
        for page in (a, b):
            page.page.context.close()
    ctx.note(f"authenticate() page to page: median {statistics.median(p2p):.0f} ms of "
             f"{sorted(round(x) for x in p2p)}")
    ctx.note(f"authenticate() page to aiortc: median {statistics.median(aio):.0f} ms of "
             f"{sorted(round(x) for x in aio)}")
    return {"auth_ms": statistics.median(p2p), "auth_aiortc_ms": statistics.median(aio)}
