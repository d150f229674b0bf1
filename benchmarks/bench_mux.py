"""Multiplexer figures (issue 3): mux_bulk_ratio and the urgent-message latency under load.

* mux_bulk_ratio: 64 MiB (as 64 KiB messages) through one multiplexed reliable
  channel driven from Python, ÷ raw JS on a single RTCDataChannel in the same
  page (throughput ratio; medians of 3 interleaved rounds).
* urgent_p99_ms: round-trip p99 of HIGH 100-byte messages sent every 10 ms and
  echoed back, while a 64 MiB VERY_LOW transfer runs on the same connection;
  urgent_idle_p99_ms: the same with no bulk transfer; urgent_p99_ratio = the two.
  For comparison, raw_shared_p99_ms: one raw RTCDataChannel carrying both the
  bulk transfer and the pings (head-of-line blocking behind the bulk data).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.jsbench import RAW_TRANSFER

PY = """
import asyncio, js
from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import DataChannelPriority as P

async def _mux_pair():
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb

async def _mux_bulk(count, size):
    a, b, ma, mb = await _mux_pair()
    ch = a.create_multiplexed_channel(label="bulk")
    peer = await mb.accept(10)
    total = count * size
    state = {"got": 0}
    done = asyncio.get_event_loop().create_future()
    def on_message(m):
        state["got"] += len(m)
        if state["got"] >= total and not done.done():
            done.set_result(None)
    peer.events.on("message", on_message)
    chunk = bytes(size)
    t0 = js.performance.now()
    for _ in range(count):
        await ch.send(chunk)
    await done
    ms = js.performance.now() - t0
    a.close(); b.close()
    return ms

def _p99(samples):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]

async def _pinger(send, replies, stop, rtts):
    seq = 0
    while not stop.is_set():
        seq += 1
        t = js.performance.now()
        replies[seq] = t
        send(seq.to_bytes(4, "big") + bytes(96))
        await asyncio.sleep(0.01)

async def _urgent(with_bulk, raw=False, bulk_bytes=64 * 1024 * 1024):
    a, b, ma, mb = await _mux_pair()
    rtts, sent_at = [], {}
    def on_echo(m):
        if len(m) == 100:
            seq = int.from_bytes(m[:4], "big")
            t = sent_at.pop(seq, None)
            if t is not None:
                rtts.append(js.performance.now() - t)
    if raw:
        got = asyncio.get_event_loop().create_future()
        b.events.on("datachannel", lambda ch: got.set_result(ch) if not got.done() else None)
        urgent = a.create_data_channel("shared")
        peer = await asyncio.wait_for(got, 10)
        await urgent.wait_open(10)
        bulk = urgent
        def echo(m):
            if len(m) == 100:
                peer.send_nowait(m)
        send_ping = urgent.send_nowait
    else:
        urgent = a.create_data_channel_with_priority("urgent", P.HIGH)
        bulk = a.create_data_channel_with_priority("bulk", P.VERY_LOW)
        peers = {}
        for _ in range(2):
            ch = await mb.accept(10)
            peers[ch.label] = ch
        peer = peers["urgent"]
        peers["bulk"].events.on("message", lambda m: None)
        def echo(m):
            peer.send_nowait(m)
        send_ping = urgent.send_nowait
    peer.events.on("message", echo)
    urgent.events.on("message", on_echo)
    stop = asyncio.Event()
    pinger = asyncio.ensure_future(_pinger(send_ping, sent_at, stop, rtts))
    if with_bulk:
        chunk = bytes(64 * 1024)
        for _ in range(bulk_bytes // len(chunk)):
            await bulk.send(chunk)
        while (bulk.buffered_amount if raw else bulk.stats.queued_bytes) > 0:
            await asyncio.sleep(0.01)
    else:
        await asyncio.sleep(4)
    stop.set()
    await pinger
    await asyncio.sleep(0.3)
    a.close(); b.close()
    return {"p99": _p99(rtts), "median": sorted(rtts)[len(rtts) // 2], "n": len(rtts)}
"""


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
        idle = page.pyjson("import json; json.dumps(await _urgent(False))")
        loaded = page.pyjson("import json; json.dumps(await _urgent(True))")
        raw = page.pyjson("import json; json.dumps(await _urgent(True, raw=True))")
        ctx.note(f"urgent RTT idle p99 {idle['p99']:.1f} ms (n={idle['n']}), under 64 MiB VERY_LOW "
                 f"p99 {loaded['p99']:.1f} ms (n={loaded['n']}), one raw channel p99 {raw['p99']:.1f} ms")
    finally:
        page.page.context.close()
    return {
        "mux_bulk_ratio": js_med / py_med,
        "mux_bulk_mib_per_s": 64 / (py_med / 1000),
        "urgent_p99_ms": loaded["p99"],
        "urgent_idle_p99_ms": idle["p99"],
        "urgent_p99_ratio": loaded["p99"] / idle["p99"],
        "raw_shared_p99_ms": raw["p99"],
    }
