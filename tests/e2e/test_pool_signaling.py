"""Pool + limiter + SignalingDialer between two pages through the real signaling server."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import new_pypage, wait_until

pytestmark = pytest.mark.e2e

JOIN = """
import asyncio, json, js
from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, SignalingDialer
from pyapp.exceptions import LimitExceeded, DeliveryError, PyAppError
client = SignalingClient(default_url())
await client.join(ROOM)
limiter = ConnectionLimiter(MAXC, max_queue=4, max_inbound_queue=1)
dialer = SignalingDialer(client, limiter=limiter, inbound_timeout=5.0)
incoming = []
def on_incoming(peer, pc):
    incoming.append(pc)
    pc.multiplexer()
dialer.events.on("incoming", on_incoming)
client.peer_id
"""


def test_inbound_burst_is_bounded_then_peer_loss_fails_unacked_sends(chromium, server):
    room = "pool-" + uuid.uuid4().hex[:8]
    a = new_pypage(chromium, server)
    b = new_pypage(chromium, server)
    try:
        a.py(JOIN.replace("ROOM", repr(room)).replace("MAXC", "8"))
        b_id = b.py(JOIN.replace("ROOM", repr(room)).replace("MAXC", "1"))
        # A burst of 4 offers from A (4 separate dialers, as 4 peers would) to B,
        # whose limiter has 1 slot and 1 inbound queue place: 1 accepted, 1 queued
        # (then times out while the first holds the slot), 2 refused with a reason.
        burst = a.pyjson(f"""
            dialers = [SignalingDialer(client) for _ in range(3)] + [dialer]
            async def one(d):
                try:
                    await d.dial({b_id!r})
                    return "connected"
                except PyAppError as exc:
                    return type(exc).__name__ + ": " + str(exc)
            results = await asyncio.gather(*(one(d) for d in dialers[:3]))
            for d in dialers[:3]:
                d.close()
            json.dumps(results)
        """, timeout=60)
        stats = b.pyjson("json.dumps([dialer.inbound_accepted, dialer.inbound_refused, limiter.held])")
        assert burst.count("connected") == 1, burst
        refused = [r for r in burst if r != "connected"]
        assert all(r.startswith("LimitExceeded: peer") for r in refused), refused
        assert any("inbound queue full" in r for r in refused), refused
        assert stats[0] == 1 and stats[1] == 2
        wait_until(lambda: b.py("limiter.held") == 0, timeout=10)   # the bye freed it

        # Peer loss mid-transfer: A streams over a multiplexed channel while B
        # holds delivery (nothing is acknowledged), then B's page closes.
        a.py(f"""
            pool = ConnectionPool(4, timeout=30, dialer=dialer, limiter=limiter)
            gone = []
            pool.events.on("gone", lambda peer, reason: gone.append(reason))
            lease = await pool.get_connection({b_id!r})
            session = lease.pc.multiplexer()
            await session.wait_open(10)
            from pyapp.core.mux import Priority
            orders = session.create_data_channel_with_priority("orders", Priority.HIGH)
            await orders.send(b"first")
            errors = []
            async def stream():
                try:
                    for i in range(100000):
                        await orders.send(i.to_bytes(4, "big") * 256)
                except PyAppError as exc:
                    errors.append(exc)
            task = asyncio.ensure_future(stream())
            None
        """, timeout=30)
        wait_until(lambda: b.py("len(incoming) == 2 and incoming[-1].multiplexer().transports_open"), timeout=10)
        b.py("incoming[-1].multiplexer().hold_delivery(); None")
        a.py("await asyncio.sleep(0.3); None")
        b.page.context.close()
        out = wait_until(lambda: a.pyjson("""
            json.dumps(None if not (gone and errors) else {
                "gone": gone, "size": pool.stats.size, "held": limiter.held,
                "error": type(errors[0]).__name__, "undelivered": getattr(errors[0], "undelivered", None),
                "failures": sum(len(f.messages) for f in session.delivery_failures)})
        """), timeout=20)
        assert out["size"] == 0 and out["held"] == 0
        assert out["gone"][0] in ("peer closed the connection", "connection failed", "connection closed")
        assert out["error"] in ("DeliveryError", "ConnectionClosedError", "ChannelResetError")
        assert out["failures"] > 0, out        # unacknowledged messages were reported, not dropped
    finally:
        for p in (a, b):
            if not p.page.is_closed():
                p.page.context.close()
