"""Pool + limiter + SignalingDialer between two pages through the real signaling server."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import new_pypage, wait_until

pytestmark = pytest.mark.e2e

PAGE = "tests.pyodide.pool_signaling_cases"
"""The page side of this test (a real module, ruff and mypy checked)."""


def test_inbound_burst_is_bounded_then_peer_loss_fails_unacked_sends(chromium, server):
    room = "pool-" + uuid.uuid4().hex[:8]
    a = new_pypage(chromium, server)
    b = new_pypage(chromium, server)
    try:
        a.call(f"{PAGE}:join", room=room, max_connections=8)
        b_id = b.call(f"{PAGE}:join", room=room, max_connections=1)
        # A burst of 3 offers from A (3 separate dialers, as 3 peers would) to B,
        # whose limiter has 1 slot and 1 inbound queue place: 1 accepted, 1 queued
        # (then refused when its inbound wait ends while the first holds the slot),
        # 1 refused at once: 2 refused, each with its reason.
        burst = a.call(f"{PAGE}:dial_burst", peer=b_id, dialers=3, timeout=60)
        stats = b.call(f"{PAGE}:inbound_stats")
        assert burst.count("connected") == 1, burst
        refused = [r for r in burst if r != "connected"]
        assert all(r.startswith("LimitExceeded: peer") for r in refused), refused
        assert any("inbound queue full" in r for r in refused), refused
        assert any("deadline passed" in r for r in refused), refused
        assert stats[0] == 1 and stats[1] == 2
        wait_until(lambda: b.call(f"{PAGE}:limiter_held") == 0, timeout=10)   # the bye freed it

        # Peer loss mid-transfer: A streams over a multiplexed channel while B
        # holds delivery (nothing is acknowledged), then B's page closes.
        a.call(f"{PAGE}:start_stream", peer=b_id, timeout=30)
        wait_until(lambda: b.call(f"{PAGE}:second_incoming_open"), timeout=10)
        b.call(f"{PAGE}:hold_delivery")
        a.page.wait_for_timeout(300)     # A keeps streaming into the held channel
        b.page.context.close()
        out = wait_until(lambda: a.call(f"{PAGE}:stream_outcome"), timeout=20)
        assert out["size"] == 0 and out["held"] == 0
        assert out["gone"][0] in ("peer closed the connection", "connection failed", "connection closed")
        assert out["error"] in ("DeliveryError", "ConnectionClosedError", "ChannelResetError")
        assert out["failures"] > 0, out        # unacknowledged messages were reported, not dropped
    finally:
        for p in (a, b):
            if not p.page.is_closed():
                p.page.context.close()
