"""Quality-monitoring figures (issue 7): CPU share of monitoring and long tasks under load.

* monitor_cpu_pct: main-thread CPU share (% of one core) of quality monitoring at
  1 Hz on 8 connections (8 loopback pairs in one page, in-band probes on, the
  peers answering). Chromium's own accounting (CDP ``Performance.getMetrics``
  ``TaskDuration``: main-thread task time) over a window with the monitors
  running, minus the same window with the same 8 connections idle; medians of
  3 interleaved rounds. Both ends of every connection are in the page, so the peers'
  probe responders are counted too. monitor_cpu_pct_stats_only: the same without
  probes (getStats polls only). monitor_self_cpu_pct: the monitors' own timing (``busy_seconds``:
  performance timing around the poll, ping and echo code) over the same window.
  monitor_poll_ms: mean main-thread time of one poll (getStats JSON + parse + score).
* long_tasks_50ms: main-thread long tasks (PerformanceObserver ``longtask``, all
  of which are > 50 ms) during a 64 MiB transfer (64 KiB messages over a
  multiplexed channel) on a monitored connection; long_tasks_50ms_unmonitored:
  the same transfer with no monitor, for comparison; longest_task_ms: the
  longest one seen with monitoring on.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

WINDOW = 8.0  # seconds per measurement window
ROUNDS = 3

PY = """
import asyncio, js
from pyapp.browser.loopback import connected_pair
from pyapp.browser.monitor import QualityMonitor, answer_probes

async def _mux_pair():
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    answer_probes(mb)
    return a, b, ma, mb

_PAIRS = []
_MONITORS = []

async def _setup(n):
    for _ in range(n):
        _PAIRS.append(await _mux_pair())

def _start_monitors(probe=True):
    for a, b, ma, mb in _PAIRS:
        m = QualityMonitor(a, 1.0, probe=probe)
        m.start()
        _MONITORS.append(m)

def _stop_monitors():
    out = [sum(m.busy_seconds for m in _MONITORS), sum(m.completed for m in _MONITORS),
           sum(m.errors for m in _MONITORS), [m.source for m in _MONITORS]]
    for m in _MONITORS:
        m.close()
    _MONITORS.clear()
    return out

js.eval('''globalThis.benchLongTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) benchLongTasks.push(e.duration); })
  .observe({ type: "longtask", buffered: false });''')

async def _bulk(monitored, total=64 * 1024 * 1024, size=64 * 1024):
    a, b, ma, mb = await _mux_pair()
    monitor = None
    if monitored:
        monitor = QualityMonitor(a, 1.0, probe=True)
        monitor.start()
        await asyncio.sleep(1.5)
    ch = a.create_multiplexed_channel(label="bulk")
    peer = await mb.accept(10)
    state = {"got": 0}
    done = asyncio.get_event_loop().create_future()
    def on_message(m):
        state["got"] += len(m)
        if state["got"] >= total and not done.done():
            done.set_result(None)
    peer.events.on("message", on_message)
    chunk = bytes(size)
    js.benchLongTasks.length = 0
    t0 = js.performance.now()
    for _ in range(total // size):
        await ch.send(chunk)
    await done
    ms = js.performance.now() - t0
    tasks = list(js.benchLongTasks)
    polls = monitor.completed if monitor else 0
    if monitor:
        monitor.close()
    a.close(); b.close()
    return [len(tasks), max(tasks, default=0.0), ms, polls]
"""


def _task_seconds(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def run(ctx: Any) -> dict[str, float]:
    page = ctx.page()
    page.py(PY)
    page.py("await _setup(8)", timeout=120)
    cdp = page.page.context.new_cdp_session(page.page)
    cdp.send("Performance.enable")

    def window(start: str | None) -> tuple[float, float, float]:
        """(main-thread share, self-timed share, ms per poll) over one window."""
        if start is not None:
            page.py(start)
            time.sleep(1.5)  # first polls and the probe channels' setup are not steady state
            page.py("[setattr(m, 'busy_seconds', 0.0) for m in _MONITORS]")
        c0 = page.py("sum(m.completed for m in _MONITORS)")
        t0, w0 = _task_seconds(cdp), time.monotonic()
        time.sleep(WINDOW)
        t1, w1 = _task_seconds(cdp), time.monotonic()
        if start is None:
            return (t1 - t0) / (w1 - w0), 0.0, 0.0
        busy, completed, errors, sources = page.py("_stop_monitors()")
        if errors:
            ctx.note(f"monitor errors={errors} sources={sorted(set(sources))}")
        return ((t1 - t0) / (w1 - w0), 100.0 * busy / (w1 - w0),
                1000.0 * busy / max(1, completed - c0))

    idle, probed, stats_only, self_pct, poll_ms = [], [], [], [], []
    for _ in range(ROUNDS):
        idle.append(window(None)[0])
        share, own, per_poll = window("_start_monitors(True)")
        probed.append(share)
        self_pct.append(own)
        poll_ms.append(per_poll)
        stats_only.append(window("_start_monitors(False)")[0])

    base = statistics.median(idle)
    cpu_pct = 100.0 * (statistics.median(probed) - base)
    ctx.note(f"main-thread busy (% of a core): idle {100 * base:.2f}, "
             f"monitored with probes {100 * statistics.median(probed):.2f}, "
             f"getStats only {100 * statistics.median(stats_only):.2f}")

    plain = page.py("await _bulk(False)", timeout=300)
    with_monitor = page.py("await _bulk(True)", timeout=300)
    ctx.note(f"64 MiB: {plain[2]:.0f} ms unmonitored, {with_monitor[2]:.0f} ms monitored "
             f"({with_monitor[3]} polls during the transfer)")
    page.page.context.close()
    return {
        "monitor_cpu_pct": round(cpu_pct, 3),
        "monitor_cpu_pct_stats_only": round(100.0 * (statistics.median(stats_only) - base), 3),
        "monitor_self_cpu_pct": round(statistics.median(self_pct), 3),
        "monitor_poll_ms": round(statistics.median(poll_ms), 3),
        "long_tasks_50ms": float(with_monitor[0]),
        "long_tasks_50ms_unmonitored": float(plain[0]),
        "longest_task_ms": round(float(with_monitor[1]), 1),
    }
