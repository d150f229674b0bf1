"""TURN figures: turn_setup_ms and turn_bulk_ratio.

A local coturn (Debian's ``turnserver``, REST credentials from ``web.turn``) on
loopback; two PeerConnections in one page (``loopback_pair``), once with
``iceTransportPolicy: "relay"`` through coturn and once direct (host
candidates), interleaved, medians of 5 (setup) and 3 (bulk) rounds.

* turn_setup_ms: new connection pair → data channel open, through the relay
  (candidate gathering includes the TURN allocation with its 401 round trip).
* turn_bulk_ratio: throughput through the relay ÷ direct, 32 MiB in 64 KiB
  messages with pyapp's backpressure. Both ends and coturn share this machine's
  CPUs, so this says what relaying costs here, not on a network.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from benchmarks.jsbench import PY_TIMED_TRANSFER
from web.turn import Coturn, TurnConfig, TurnIssuer

MIB = 1024 * 1024

PY_SETUP = PY_TIMED_TRANSFER + """
import json
from pyapp.browser.loopback import loopback_pair

async def _pair(servers, policy):
    t0 = js.performance.now()
    a, b = loopback_pair(ice_servers=servers, ice_transport_policy=policy)
    got_channel = asyncio.get_event_loop().create_future()
    b.events.on("datachannel", lambda ch: got_channel.set_result(ch))
    ca = a.create_data_channel("bulk")
    cb = await asyncio.wait_for(got_channel, 20)
    await ca.wait_open(20)
    setup = js.performance.now() - t0
    stats = await a.get_statistics()
    return a, b, ca, cb, setup, [stats.local_candidate_type, stats.remote_candidate_type]

async def _setup(servers, policy):
    a, b, ca, cb, setup, types = await _pair(servers, policy)
    a.close(); b.close()
    return json.dumps({"ms": setup, "types": types})

async def _bulk(servers, policy, count, size):
    a, b, ca, cb, setup, types = await _pair(servers, policy)
    ms = await _timed_transfer(ca, cb, count, size)
    a.close(); b.close()
    return json.dumps({"ms": ms, "types": types})
"""


def _run(page: Any, call: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(page.py(call))
    return result


def run(ctx: Any) -> dict[str, float]:
    with Coturn() as turn:
        grant = TurnIssuer(TurnConfig(tuple(turn.urls()), turn.secret, ttl=600)).grant("bench")
        servers = json.dumps(list(grant.ice_servers))
        page = ctx.page()
        try:
            page.py(PY_SETUP)
            page.py(f"SERVERS = json.loads({servers!r})")
            relay_setup, direct_setup = [], []
            for _ in range(5):
                r = _run(page, "await _setup(SERVERS, 'relay')")
                assert r["types"] == ["relay", "relay"], f"not relayed: {r['types']}"
                relay_setup.append(r["ms"])
                d = _run(page, "await _setup([], 'all')")
                assert "relay" not in d["types"], d["types"]
                direct_setup.append(d["ms"])
            count, size = 512, 64 * 1024
            relay_ms, direct_ms = [], []
            for _ in range(3):
                relay_ms.append(_run(page, f"await _bulk(SERVERS, 'relay', {count}, {size})")["ms"])
                direct_ms.append(_run(page, f"await _bulk([], 'all', {count}, {size})")["ms"])
        finally:
            page.page.context.close()
        allocations = turn.count(r"ALLOCATE processed, success")
    mbytes = count * size / 1e6
    relay_mbps = mbytes / (statistics.median(relay_ms) / 1000)
    direct_mbps = mbytes / (statistics.median(direct_ms) / 1000)
    ctx.note(f"setup: relay {statistics.median(relay_setup):.0f} ms, direct "
             f"{statistics.median(direct_setup):.0f} ms; bulk 32 MiB: relay {relay_mbps:.1f} MB/s, "
             f"direct {direct_mbps:.1f} MB/s ({allocations} allocations on coturn)")
    return {
        "turn_setup_ms": statistics.median(relay_setup),
        "turn_setup_direct_ms": statistics.median(direct_setup),
        "turn_bulk_ratio": relay_mbps / direct_mbps,
        "turn_bulk_relay_mbps": relay_mbps,
        "turn_bulk_direct_mbps": direct_mbps,
    }
