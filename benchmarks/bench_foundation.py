"""Foundation figures: startup_ratio, page_heap_mb, bulk_ratio, small_msg_ratio.

* startup_ratio: page open → Python ready to connect (the app page: pyapp imported
  and its ``start()`` run; restored from the build's memory snapshot), divided by
  bare Pyodide (``loadPyodide()`` + ``runPython``) from the same server, each in a
  fresh browser context (cold cache), interleaved, medians of 5.
  startup_nosnapshot_ms: the same app page with ``?nosnapshot=1`` (the fallback
  path: a normal Pyodide start, the wheel fetched in parallel);
  startup_snapshot_used: the share of app loads that really restored the snapshot.
* page_heap_mb: memory of a started app page (after a forced GC, CDP): V8 heap in
  use + ArrayBuffer backing stores + the wasm linear memory; the parts are
  page_js_heap_mb and page_wasm_mb, and page_heap_mb_nosnapshot / bare_heap_mb
  are the same for the normal start and for bare Pyodide.
* bulk_ratio: 64 MiB as 64 KiB messages over a DataChannel, Python (pyapp's
  ``DataChannel.send`` with backpressure, a Python receiver) vs raw JS in the same
  page; throughput ratio of medians of 3 interleaved rounds.
* small_msg_ratio: 100-byte messages per second, Python ÷ raw JS, same method;
  Python sends them with ``DataChannel.send_many`` in batches of 256 (one FFI
  crossing per batch, still one data-channel message per item; the receiver is
  a per-message ``message`` listener). small_msg_ratio_per_send: the same with
  one ``await send()`` per message.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.jsbench import PY_TIMED_TRANSFER, RAW_TRANSFER

HIGH, LOW = 1024 * 1024, 256 * 1024

PY_TRANSFER = PY_TIMED_TRANSFER + """
from pyapp.browser.loopback import loopback_pair
async def _py_transfer(count, size, batch=0):
    a, b = loopback_pair()
    got_channel = asyncio.get_event_loop().create_future()
    b.events.on("datachannel", lambda ch: got_channel.set_result(ch))
    ca = a.create_data_channel("py")
    cb = await got_channel
    await ca.wait_open(10)
    ms = await _timed_transfer(ca, cb, count, size, batch)
    a.close(); b.close()
    return ms
"""


def _transfer_pair(page: Any, count: int, size: int, rounds: int,
                   batches: tuple[int, ...] = (0,)) -> tuple[float, ...]:
    """Medians: raw JS, then Python for each batch size (0: one ``await send()`` each)."""
    page.py(PY_TRANSFER)
    js_ms: list[float] = []
    py_ms: list[list[float]] = [[] for _ in batches]
    for _ in range(rounds):
        js_ms.append(page.page.evaluate(RAW_TRANSFER, {"count": count, "size": size, "high": HIGH,
                                                       "low": LOW, "ordered": True}))
        for i, batch in enumerate(batches):
            py_ms[i].append(page.py(f"await _py_transfer({count}, {size}, {batch})"))
    return (statistics.median(js_ms), *(statistics.median(x) for x in py_ms))


def _heap(page: Any) -> tuple[float, float]:
    """(V8 heap + backing stores, wasm memory) in MiB, after a forced GC."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    usage = cdp.send("Runtime.getHeapUsage")
    wasm = page.evaluate("() => globalThis.pyodide ? pyodide._module.HEAP8.buffer.byteLength : "
                         "(globalThis.bareWasmBytes ?? 0)")
    cdp.detach()
    return (usage["usedSize"] + usage.get("backingStorageSize", 0)) / 2**20, wasm / 2**20


def _load(ctx: Any, path: str, ready: str, timing: str) -> tuple[float, Any, Any]:
    context = ctx.chromium.new_context()
    page = context.new_page()
    page.goto(ctx.server.url + path)
    page.evaluate(ready)
    return float(page.evaluate(timing)), page, context


def _startup(ctx: Any) -> dict[str, float]:
    app_ms, bare_ms, fallback_ms, used = [], [], [], 0
    heaps: dict[str, tuple[float, float]] = {}
    rounds = 5
    for i in range(rounds):
        ms, page, context = _load(ctx, "/bench-bare.html", "() => bareReady", "() => bareTimings.ready")
        bare_ms.append(ms)
        if i == 0:
            heaps["bare"] = _heap(page)
        context.close()
        ms, page, context = _load(ctx, "/?noapp=1", "() => pyappReady.then(() => true)", "() => pyappTimings.ready")
        app_ms.append(ms)
        used += page.evaluate("() => pyappStartup.snapshot") == "used"
        if i == 0:
            heaps["app"] = _heap(page)
        context.close()
        ms, page, context = _load(ctx, "/?noapp=1&nosnapshot=1", "() => pyappReady.then(() => true)",
                                  "() => pyappTimings.ready")
        fallback_ms.append(ms)
        if i == 0:
            heaps["nosnapshot"] = _heap(page)
        context.close()
    app, bare, fallback = (statistics.median(x) for x in (app_ms, bare_ms, fallback_ms))
    ctx.note(f"startup: app {app:.0f} ms (snapshot restored in {used}/{rounds}), "
             f"app without snapshot {fallback:.0f} ms, bare Pyodide {bare:.0f} ms")
    ctx.note("page memory (MiB, V8 heap + backing stores / wasm): " + ", ".join(
        f"{k} {js:.1f} / {wasm:.1f}" for k, (js, wasm) in heaps.items()))
    return {
        "startup_ratio": app / bare,
        "startup_app_ms": app,
        "startup_bare_ms": bare,
        "startup_nosnapshot_ms": fallback,
        "startup_nosnapshot_ratio": fallback / bare,
        "startup_snapshot_used": used / rounds,
        "page_heap_mb": sum(heaps["app"]),
        "page_js_heap_mb": heaps["app"][0],
        "page_wasm_mb": heaps["app"][1],
        "page_heap_mb_nosnapshot": sum(heaps["nosnapshot"]),
        "bare_heap_mb": sum(heaps["bare"]),
    }


def run(ctx: Any) -> dict[str, float]:
    figures = _startup(ctx)
    page = ctx.page()
    try:
        mib = 1024 * 1024
        js_ms, py_ms = _transfer_pair(page, count=1024, size=64 * 1024, rounds=3)
        bulk_ratio = js_ms / py_ms
        ctx.note(f"bulk 64 MiB: raw JS {64 / (js_ms / 1000):.1f} MB/s, Python {64 / (py_ms / 1000):.1f} MB/s")
        n = 20_000
        js_small, py_small, py_each = _transfer_pair(page, count=n, size=100, rounds=3, batches=(256, 0))
        small_ratio = js_small / py_small
        ctx.note(f"small: raw JS {n / (js_small / 1000):.0f} msg/s, Python {n / (py_small / 1000):.0f} msg/s "
                 f"(send_many, 256 per call), {n / (py_each / 1000):.0f} msg/s (one await send() each)")
    finally:
        page.page.context.close()
    return figures | {
        "bulk_ratio": bulk_ratio,
        "bulk_js_mbps": 64 * mib / (js_ms / 1000) / 1e6,
        "bulk_py_mbps": 64 * mib / (py_ms / 1000) / 1e6,
        "small_msg_ratio": small_ratio,
        "small_js_msgs_per_s": n / (js_small / 1000),
        "small_py_msgs_per_s": n / (py_small / 1000),
        "small_msg_ratio_per_send": js_small / py_each,
    }
