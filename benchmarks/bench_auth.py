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
import uuid
from typing import Any

from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.keys import Role
from tests.interop.conftest import connect
from tests.interop.page import SETUP
from tests.support.aiortc_peer import PeerThread, authenticate
from tests.support.oracle_crypto import OracleCrypto

ROUNDS = 7

START = """
async def _auth():
    r = await PC.authenticate(ME, timeout=20)
    return r.elapsed * 1000
TASK = asyncio.ensure_future(_auth())
None
"""


def _wait(page: Any) -> float:
    page.py("await asyncio.wait_for(asyncio.shield(TASK), 30)", timeout=40)
    return float(page.py("TASK.result()"))


def _page_to_page(a: Any, b: Any) -> float:
    room = "bench-auth-" + uuid.uuid4().hex[:8]
    b_id = b.py(f"await IO.join({room!r}, polite=True)")
    a.py(f"await IO.join({room!r}, polite=False)")
    a.py(f"PC = IO.pc({b_id!r}); PC.create_data_channel('x'); None")
    a.py("await PC.wait_connected(30)", timeout=40)
    a_id = a.py("IO.client.peer_id")
    b.py(f"PC = IO.pc({a_id!r}); await PC.wait_connected(30)", timeout=40)
    b.py(START)  # the answerer first: it only waits for the control channel
    a.py(START)
    elapsed = _wait(a)
    _wait(b)
    for page in (a, b):
        page.py("PC.close()")
    return elapsed


def _page_to_aiortc(page: Any, thread: PeerThread, server: Any) -> float:
    link = connect(page, thread, server, page_dials=True)
    try:
        async def aiortc_side() -> None:
            crypto = OracleCrypto()
            me = await crypto.generate_signing_key(SignatureAlgorithm.ED25519)
            await authenticate(link.peer, me, Role.ANSWERER, crypto=crypto, timeout=20)

        fut = thread.submit(aiortc_side())
        page.py(START)
        elapsed = _wait(page)
        fut.result(30)
        return elapsed
    finally:
        link.close()


def run(ctx: Any) -> dict[str, float]:
    a, b = ctx.page(), ctx.page()
    thread = PeerThread()
    try:
        for page in (a, b):
            page.py(SETUP + "\nME = await new_identity()")
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
