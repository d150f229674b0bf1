"""Multiplexer figures: mux_bulk_ratio, mux_small_ratio and the urgent-message latency under load.

* mux_bulk_ratio: 64 MiB (as 64 KiB messages) through one multiplexed reliable
  channel driven from Python, ÷ raw JS on a single RTCDataChannel in the same
  page (throughput ratio; medians of 3 interleaved rounds).
* mux_small_ratio: 100-byte messages per second through one multiplexed channel
  from Python (``await send_many()`` of 256 at a time; the mux packs them into a
  few SCTP messages; the receiver takes each one in its own ``message`` callback),
  ÷ raw JS sending one 100-byte message per ``send()`` on an RTCDataChannel in
  the same page; 20,000 messages, medians of 3 interleaved rounds.
  mux_small_ratio_per_send: the same with one ``await send()`` per message.
* urgent_p99_ms: round-trip p99 of HIGH 100-byte messages sent every 10 ms and
  echoed back, while a 64 MiB VERY_LOW transfer runs on the same connection
  (two pages, i.e. two renderer processes, connected through the real server;
  two_page_bulk_mib_per_s: that transfer's throughput, until the sender's mux
  queue is empty);
  urgent_idle_p99_ms: the same with no bulk transfer; urgent_p99_ratio = the two.
  For comparison, raw_shared_p99_ms: one raw RTCDataChannel carrying both the
  bulk transfer and the pings (head-of-line blocking behind the bulk data).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.jsbench import PY_TIMED_TRANSFER, RAW_TRANSFER

PY = PY_TIMED_TRANSFER + """
import asyncio, js
from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import DataChannelPriority as P

async def _mux_pair():
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb

async def _mux_bulk(count, size, batch=0):  # also the 100-byte figures (size=100)
    a, b, ma, mb = await _mux_pair()
    ch = a.create_multiplexed_channel(label="bulk")
    peer = await mb.accept(10)
    ms = await _timed_transfer(ch, peer, count, size, batch)
    a.close(); b.close()
    return ms

"""


# Two pages (two renderer processes, as two real peers would be), connected through
# the real signaling server. The responder page echoes 100-byte messages and sinks
# the bulk data; the initiator measures round trips.
TWO_PAGE_COMMON = """
import asyncio, json, js
from pyapp.browser import SignalingClient
from pyapp.browser.connection import Connection
from pyapp.browser.signaling import default_url
from pyapp.browser._ffi import spawn
from pyapp.browser.mux import DataChannelPriority as P
from pyapp.core.negotiation import is_polite
"""

RESPONDER = TWO_PAGE_COMMON + """
client = SignalingClient(default_url())
await client.join(ROOM)
pcs = {}
def _serve(pc):
    mux = pc.multiplexer()
    def on_channel(ch):
        if ch.label == "bulk":
            ch.events.on("message", lambda m: None)
        else:
            ch.events.on("message", ch.send_nowait)
    mux.events.on("channel", on_channel)
    def on_raw(ch):
        if ch.label == "shared":
            ch.events.on("message", lambda m: ch.send_nowait(m) if len(m) == 100 else None)
    pc.events.on("datachannel", on_raw)
def on_signal(sender, data):
    pc = pcs.get(sender)
    if pc is None:
        pc = pcs[sender] = Connection(signal=lambda m: client.send_signal(sender, m),
                                          polite=is_polite(client.peer_id, sender))
        _serve(pc)
    spawn(pc.handle_signal(data), "bench signal")
client.events.on("signal", on_signal)
client.peer_id
"""

INITIATOR = TWO_PAGE_COMMON + """
client = SignalingClient(default_url())
welcome = await client.join(ROOM)
peer = welcome.peers[0]
pc = Connection(signal=lambda m: client.send_signal(peer, m), polite=is_polite(client.peer_id, peer))
client.events.on("signal", lambda sender, data: spawn(pc.handle_signal(data), "signal") if sender == peer else None)
mux = pc.multiplexer(**MUX_OPTIONS)
await mux.wait_open(20)

def _p99(samples):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]

async def _two_page_urgent(with_bulk, raw=False, bulk_bytes=64 * 1024 * 1024):
    rtts, sent_at = [], {}
    def on_echo(m):
        if len(m) == 100:
            t = sent_at.pop(int.from_bytes(m[:4], "big"), None)
            if t is not None:
                rtts.append(js.performance.now() - t)
    if raw:
        urgent = bulk = pc.create_data_channel("shared")
        await urgent.wait_open(10)
    else:
        urgent = mux.create_data_channel_with_priority("urgent", P.HIGH)
        bulk = mux.create_data_channel_with_priority("bulk", P.VERY_LOW)
        await urgent.wait_accepted(10)
    urgent.events.on("message", on_echo)
    stop = asyncio.Event()
    async def pinger():
        seq = 0
        while not stop.is_set():
            seq += 1
            sent_at[seq] = js.performance.now()
            urgent.send_nowait(seq.to_bytes(4, "big") + bytes(96))
            await asyncio.sleep(0.01)
    task = asyncio.ensure_future(pinger())
    bulk_ms = None
    if with_bulk:
        chunk = bytes(64 * 1024)
        t0 = js.performance.now()
        for _ in range(bulk_bytes // len(chunk)):
            await bulk.send(chunk)
        while (bulk.buffered_amount if raw else bulk.stats.queued_bytes) > 0:
            await asyncio.sleep(0.01)
        bulk_ms = js.performance.now() - t0
    else:
        await asyncio.sleep(4)
    stop.set()
    await task
    await asyncio.sleep(0.5)
    (urgent.close(), bulk.close())
    return {"p99": _p99(rtts), "median": sorted(rtts)[len(rtts) // 2], "n": len(rtts), "bulk_ms": bulk_ms}
"""


def _two_page_latency(ctx: Any, mux_options: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
    import uuid

    room = "bench-" + uuid.uuid4().hex[:8]
    responder, initiator = ctx.page(), ctx.page()
    try:
        responder.py(f"ROOM = {room!r}")
        responder.py(RESPONDER)
        initiator.py(f"ROOM = {room!r}; MUX_OPTIONS = {mux_options or {}!r}")
        initiator.py(INITIATOR, timeout=60)
        run = "import json; json.dumps(await _two_page_urgent({}))"
        return {
            "idle": initiator.pyjson(run.format("False")),
            "loaded": initiator.pyjson(run.format("True"), timeout=300),
            "raw": initiator.pyjson(run.format("True, raw=True"), timeout=300),
        }
    finally:
        responder.page.context.close()
        initiator.page.context.close()


def run(ctx: Any) -> dict[str, float]:
    page = ctx.page()
    try:
        page.py(PY)
        js_ms, py_ms = [], []
        for _ in range(3):
            js_ms.append(page.page.evaluate(RAW_TRANSFER, {"count": 1024, "size": 65536, "high": 1 << 20,
                                                           "low": 256 << 10, "ordered": True}))
            py_ms.append(page.py("await _mux_bulk(1024, 65536)"))
        js_med, py_med = statistics.median(js_ms), statistics.median(py_ms)
        ctx.note(f"64 MiB: raw JS {64 / (js_med / 1000):.1f} MiB/s, mux from Python {64 / (py_med / 1000):.1f} MiB/s")
        small_n = 20_000
        js_small, py_small, py_each = [], [], []
        for _ in range(3):
            js_small.append(page.page.evaluate(RAW_TRANSFER, {"count": small_n, "size": 100, "high": 1 << 20,
                                                              "low": 256 << 10, "ordered": True}))
            py_small.append(page.py(f"await _mux_bulk({small_n}, 100, 256)"))
            py_each.append(page.py(f"await _mux_bulk({small_n}, 100)"))
        js_small_med, py_small_med = statistics.median(js_small), statistics.median(py_small)
        py_each_med = statistics.median(py_each)
        ctx.note(f"100 B: raw JS {small_n / (js_small_med / 1000):.0f} msg/s (one per send()), "
                 f"one mux channel from Python {small_n / (py_small_med / 1000):.0f} msg/s "
                 f"(send_many, 256 per call), {small_n / (py_each_med / 1000):.0f} msg/s (one await send() each)")
    finally:
        page.page.context.close()
    lat = _two_page_latency(ctx)
    idle, loaded, raw = lat["idle"], lat["loaded"], lat["raw"]
    ctx.note(f"urgent RTT (two pages) idle p99 {idle['p99']:.1f} ms (median {idle['median']:.1f}, "
             f"n={idle['n']}); under 64 MiB VERY_LOW p99 {loaded['p99']:.1f} ms (median "
             f"{loaded['median']:.1f}, n={loaded['n']}); one raw channel carrying both: p99 "
             f"{raw['p99']:.1f} ms (median {raw['median']:.1f})")
    return {
        "mux_bulk_ratio": js_med / py_med,
        "mux_bulk_mib_per_s": 64 / (py_med / 1000),
        "mux_small_ratio": js_small_med / py_small_med,
        "mux_small_msgs_per_s": small_n / (py_small_med / 1000),
        "mux_small_ratio_per_send": js_small_med / py_each_med,
        "raw_small_msgs_per_s": small_n / (js_small_med / 1000),
        "urgent_p99_ms": loaded["p99"],
        "urgent_idle_p99_ms": idle["p99"],
        "urgent_p99_ratio": loaded["p99"] / idle["p99"],
        "raw_shared_p99_ms": raw["p99"],
        "two_page_bulk_mib_per_s": 64 / (loaded["bulk_ms"] / 1000),
    }
