"""Pool figures (issue 5): setup_ms, mem_per_conn_kb.

* setup_ms: median over 20 dials of the time from ``await pool.get_connection(peer)``
  to an open data channel on the leased connection, page to page through the
  real signaling server (the pool's SignalingDialer on one page, a
  SignalingDialer accepting inbound offers through its limiter on the other).
  Each connection is closed before the next dial so every get really dials.
* mem_per_conn_kb: JS heap (CDP ``HeapProfiler.collectGarbage`` +
  ``Runtime.getHeapUsage``) plus Python memory (``tracemalloc`` in Pyodide)
  added by 32 open pooled connections, divided by 32. Loopback dialer, so each
  connection includes its in-page remote end: two RTCPeerConnections per
  figure, an upper bound for one real connection.
"""

from __future__ import annotations

import statistics
import uuid
from typing import Any

SETUP = """
import asyncio, json, js
from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, SignalingDialer
client = SignalingClient(default_url())
welcome = await client.join(ROOM)
limiter = ConnectionLimiter(8)
dialer = SignalingDialer(client, limiter=limiter)
client.peer_id
"""

DIALS = """
pool = ConnectionPool(4, timeout=30, dialer=dialer, limiter=limiter)
times = []
for _ in range(NDIALS):
    t0 = js.performance.now()
    lease = await pool.get_connection(PEER)
    ch = lease.pc.create_data_channel("bench")
    await ch.wait_open(10)
    times.append(js.performance.now() - t0)
    ch.close()
    lease.release()
    lease.connection.close()
    await asyncio.sleep(0.05)
pool.close()
json.dumps(times)
"""

MEMORY = """
import asyncio, gc, json, tracemalloc
from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, LoopbackDialer
pool = ConnectionPool(32, timeout=None, dialer=LoopbackDialer(), limiter=ConnectionLimiter(32))
async def open_all(n):
    return await asyncio.gather(*(pool.get_connection(f"mem{i}") for i in range(n)))
"""


def _js_heap(cdp: Any) -> int:
    cdp.send("HeapProfiler.collectGarbage")
    return int(cdp.send("Runtime.getHeapUsage")["usedSize"])


def run(ctx: Any) -> dict[str, float]:
    room = "bench-pool-" + uuid.uuid4().hex[:8]
    answer = ctx.page()
    offer = ctx.page()
    try:
        answer.py(SETUP.replace("ROOM", repr(room)))
        offer_id = offer.py(SETUP.replace("ROOM", repr(room)))
        answer_id = answer.py("client.peer_id")
        assert offer_id != answer_id
        times = offer.pyjson(DIALS.replace("PEER", repr(answer_id)).replace("NDIALS", "20"), timeout=300)
        accepted = answer.py("dialer.inbound_accepted")
        held = answer.py("limiter.held")
        ctx.note(f"setup: median {statistics.median(times):.1f} ms, min {min(times):.1f}, "
                 f"max {max(times):.1f} over {len(times)} dials; peer accepted {accepted}, holds {held}")
    finally:
        answer.page.context.close()
        offer.page.context.close()

    page = ctx.page()
    try:
        cdp = page.page.context.new_cdp_session(page.page)
        page.py(MEMORY)
        page.py("leases = await open_all(2); [l.connection.close() for l in leases]; gc.collect(); None")
        page.py("gc.collect(); tracemalloc.start(); None")
        js0 = _js_heap(cdp)
        py0 = page.py("tracemalloc.get_traced_memory()[0]")
        page.py("leases = await open_all(32); await asyncio.sleep(0.5); gc.collect(); None", timeout=120)
        js1 = _js_heap(cdp)
        py1 = page.py("tracemalloc.get_traced_memory()[0]")
        size = page.py("pool.stats.size")
        page.py("pool.close(); tracemalloc.stop(); None")
        assert size == 32
        js_kb = (js1 - js0) / 32 / 1024
        py_kb = (py1 - py0) / 32 / 1024
        ctx.note(f"memory per connection: JS heap {js_kb:.1f} KB + Python {py_kb:.1f} KB "
                 "(loopback: both ends in the page)")
    finally:
        page.page.context.close()
    return {
        "setup_ms": statistics.median(times),
        "setup_ms_max": max(times),
        "mem_per_conn_kb": js_kb + py_kb,
        "mem_per_conn_js_kb": js_kb,
        "mem_per_conn_py_kb": py_kb,
    }
