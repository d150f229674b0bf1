"""Foundation figures: startup_ratio, bulk_ratio, small_msg_ratio (issue 2).

* startup_ratio: page open → Python ready to connect (the app page), divided by
  bare Pyodide (``loadPyodide()`` + ``runPython``) from the same server, each in a
  fresh browser context (cold cache), interleaved, medians of 5.
* bulk_ratio: 64 MiB as 64 KiB messages over a DataChannel, Python (pyapp's
  ``DataChannel.send`` with backpressure, a Python receiver) vs raw JS in the same
  page; throughput ratio of medians of 3 interleaved rounds.
* small_msg_ratio: 100-byte messages per second, Python ÷ raw JS, same method.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.jsbench import PY_TIMED_TRANSFER, RAW_TRANSFER

HIGH, LOW = 1024 * 1024, 256 * 1024

PY_TRANSFER = PY_TIMED_TRANSFER + """
from pyapp.browser.loopback import loopback_pair
async def _py_transfer(count, size):
    a, b = loopback_pair()
    got_channel = asyncio.get_event_loop().create_future()
    b.events.on("datachannel", lambda ch: got_channel.set_result(ch))
    ca = a.create_data_channel("py")
    cb = await got_channel
    await ca.wait_open(10)
    ms = await _timed_transfer(ca, cb, count, size)
    a.close(); b.close()
    return ms
"""


def _transfer_pair(page: Any, count: int, size: int, rounds: int) -> tuple[float, float]:
    page.py(PY_TRANSFER)
    js_ms, py_ms = [], []
    for _ in range(rounds):
        js_ms.append(page.page.evaluate(RAW_TRANSFER, {"count": count, "size": size, "high": HIGH,
                                                       "low": LOW, "ordered": True}))
        py_ms.append(page.py(f"await _py_transfer({count}, {size})"))
    return statistics.median(js_ms), statistics.median(py_ms)


def run(ctx: Any) -> dict[str, float]:
    # --- startup
    app_ms, bare_ms = [], []
    for _ in range(5):
        context = ctx.chromium.new_context()
        page = context.new_page()
        page.goto(ctx.server.url + "/bench-bare.html")
        page.evaluate("() => bareReady")
        bare_ms.append(page.evaluate("() => bareTimings.ready"))
        context.close()
        context = ctx.chromium.new_context()
        page = context.new_page()
        page.goto(ctx.server.url + "/?noapp=1")
        page.evaluate("() => pyappReady.then(() => true)")
        app_ms.append(page.evaluate("() => pyappTimings.ready"))
        context.close()
    startup_ratio = statistics.median(app_ms) / statistics.median(bare_ms)
    ctx.note(f"startup: app {statistics.median(app_ms):.0f} ms vs bare Pyodide {statistics.median(bare_ms):.0f} ms")

    page = ctx.page()
    try:
        mib = 1024 * 1024
        js_ms, py_ms = _transfer_pair(page, count=1024, size=64 * 1024, rounds=3)
        bulk_ratio = js_ms / py_ms
        ctx.note(f"bulk 64 MiB: raw JS {64 / (js_ms / 1000):.1f} MB/s, Python {64 / (py_ms / 1000):.1f} MB/s")
        n = 20_000
        js_small, py_small = _transfer_pair(page, count=n, size=100, rounds=3)
        small_ratio = js_small / py_small
        ctx.note(f"small: raw JS {n / (js_small / 1000):.0f} msg/s, Python {n / (py_small / 1000):.0f} msg/s")
    finally:
        page.page.context.close()
    return {
        "startup_ratio": startup_ratio,
        "startup_app_ms": statistics.median(app_ms),
        "startup_bare_ms": statistics.median(bare_ms),
        "bulk_ratio": bulk_ratio,
        "bulk_js_mbps": 64 * mib / (js_ms / 1000) / 1e6,
        "bulk_py_mbps": 64 * mib / (py_ms / 1000) / 1e6,
        "small_msg_ratio": small_ratio,
        "small_js_msgs_per_s": n / (js_small / 1000),
        "small_py_msgs_per_s": n / (py_small / 1000),
    }
