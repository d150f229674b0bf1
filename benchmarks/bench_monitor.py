"""Quality-monitoring figures: CPU share of monitoring and long tasks under load.

Two pages (two renderer processes), connected through the real signaling server:
the monitoring page holds 8 connections (8 signaling clients) to one responder
page, which answers the in-band probes and sinks bulk data. Every figure is
measured on the monitoring side unless its name says otherwise.

* monitor_cpu_pct: main-thread CPU share (% of one core) of quality monitoring at
  1 Hz on 8 connections, in the monitoring page only: Chromium's own accounting
  (CDP ``Performance.getMetrics`` ``TaskDuration`` with ``timeDomain:
  threadTicks``, i.e. the main thread's CPU time inside tasks, so time the thread
  spends preempted on a busy machine does not count: every main-thread task of
  that page: getStats calls and their JSON, parsing and scoring in Python, probe
  pings sent and their echoes received through the mux, the mux pumps they cause,
  timers, and the garbage collection done inside those tasks) over a window with
  the monitors running, minus the same window with the same 8 connections idle
  (signaling keepalives, the idle mux); medians of 3 interleaved rounds. monitor_responder_cpu_pct: the same for
  the responder page (answering the probes), not included above.
  monitor_cpu_pct_stats_only: monitoring page, without probes (getStats polls
  only). monitor_self_cpu_pct: the monitors' own timing (``busy_seconds``:
  performance timing around the poll, ping and echo code) over the same window.
  monitor_poll_ms: mean main-thread time of one poll (getStats JSON + parse + score).
* long_tasks_50ms: main-thread long tasks (PerformanceObserver ``longtask``, all
  of which are > 50 ms) in the monitoring page while it sends 64 MiB (64 KiB
  messages over a multiplexed channel) on a monitored connection;
  long_tasks_50ms_unmonitored: the same transfer with no monitor, for
  comparison; longest_task_ms: the longest one seen with monitoring on.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

WINDOW = 8.0  # seconds per measurement window
ROUNDS = 3

COMMON = """
import asyncio, js
from pyapp.browser import SignalingClient
from pyapp.browser.connection import Connection
from pyapp.browser.signaling import default_url
from pyapp.browser._ffi import spawn
from pyapp.browser.monitor import QualityMonitor, answer_probes
from pyapp.core.negotiation import is_polite
"""

RESPONDER = COMMON + """
client = SignalingClient(default_url())
await client.join(ROOM)
pcs = {}
def _serve(pc):
    mux = pc.multiplexer()
    answer_probes(mux)
    mux.events.on("channel", lambda ch: ch.events.on("message", lambda m: None))
async def _answer_first(pc, data):
    # The multiplexer's negotiated channels are created once the dialer's offer is
    # applied: created before, they start a second offer that races the dialer's
    # (seen as "Failed to set SSL role for the transport" about 1 dial in 8 on a
    # loaded machine). The mux hello is repeated until heard, so nothing is lost.
    await pc.handle_signal(data)
    _serve(pc)
def on_signal(sender, data):
    pc = pcs.get(sender)
    if pc is None:
        pc = pcs[sender] = Connection(signal=lambda m: client.send_signal(sender, m),
                                      polite=is_polite(client.peer_id, sender))
        spawn(_answer_first(pc, data), "bench signal")
        return
    spawn(pc.handle_signal(data), "bench signal")
client.events.on("signal", on_signal)
client.peer_id
"""

MONITORING = COMMON + """
_PAIRS = []
_MONITORS = []

async def _dial():
    client = SignalingClient(default_url())
    await client.join(ROOM)
    pc = Connection(signal=lambda m: client.send_signal(RESP, m),
                    polite=is_polite(client.peer_id, RESP))
    client.events.on("signal", lambda sender, data: spawn(pc.handle_signal(data), "signal")
                     if sender == RESP else None)
    mux = pc.multiplexer()
    await mux.wait_open(30)
    return client, pc, mux

async def _setup(n):
    for _ in range(n):
        _PAIRS.append(await _dial())

def _start_monitors(probe=True):
    for _client, pc, _mux in _PAIRS:
        m = QualityMonitor(pc, 1.0, probe=probe)
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
    _client, pc, mux = _PAIRS[0]
    monitor = None
    if monitored:
        monitor = QualityMonitor(pc, 1.0, probe=True)
        monitor.start()
        await asyncio.sleep(1.5)
    ch = mux.create_multiplexed_channel(label="bulk")
    chunk = bytes(size)
    js.benchLongTasks.length = 0
    t0 = js.performance.now()
    for _ in range(total // size):
        await ch.send(chunk)
    while ch.stats.queued_bytes > 0:
        await asyncio.sleep(0.01)
    ms = js.performance.now() - t0
    tasks = list(js.benchLongTasks)
    polls = monitor.completed if monitor else 0
    if monitor:
        monitor.close()
    ch.close()
    return [len(tasks), max(tasks, default=0.0), ms, polls]
"""


def _task_seconds(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def run(ctx: Any) -> dict[str, float]:
    room = "bench-mon-" + uuid.uuid4().hex[:8]
    responder, page = ctx.page(), ctx.page()
    try:
        responder.py(f"ROOM = {room!r}")
        resp_id = responder.py(RESPONDER, timeout=60)
        page.py(f"ROOM = {room!r}; RESP = {resp_id!r}")
        page.py(MONITORING)
        page.py("await _setup(8)", timeout=180)
        # Thread ticks: CPU time, not wall time, so other processes on a shared
        # machine do not inflate the tasks (measured: wall-time TaskDuration swung
        # 1.1-4.0 % across the getStats-only windows on a machine at load 7, thread
        # time 0.6-1.3 %).
        cdp = page.page.context.new_cdp_session(page.page)
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        rcdp = responder.page.context.new_cdp_session(responder.page)
        rcdp.send("Performance.enable", {"timeDomain": "threadTicks"})

        def window(start: str | None) -> tuple[float, float, float, float]:
            """(monitoring-page share, responder share, self-timed %, ms per poll) over one window."""
            if start is not None:
                page.py(start)
                time.sleep(1.5)  # first polls and the probe channels' setup are not steady state
                page.py("[setattr(m, 'busy_seconds', 0.0) for m in _MONITORS]")
            c0 = page.py("sum(m.completed for m in _MONITORS)")
            t0, r0, w0 = _task_seconds(cdp), _task_seconds(rcdp), time.monotonic()
            time.sleep(WINDOW)
            t1, r1, w1 = _task_seconds(cdp), _task_seconds(rcdp), time.monotonic()
            share, rshare = (t1 - t0) / (w1 - w0), (r1 - r0) / (w1 - w0)
            if start is None:
                return share, rshare, 0.0, 0.0
            busy, completed, errors, sources = page.py("_stop_monitors()")
            if errors:
                ctx.note(f"monitor errors={errors} sources={sorted(set(sources))}")
            return share, rshare, 100.0 * busy / (w1 - w0), 1000.0 * busy / max(1, completed - c0)

        idle, ridle, probed, rprobed = [], [], [], []
        stats_only, self_pct, poll_ms = [], [], []
        for _ in range(ROUNDS):
            share, rshare, _, _ = window(None)
            idle.append(share)
            ridle.append(rshare)
            share, rshare, own, per_poll = window("_start_monitors(True)")
            probed.append(share)
            rprobed.append(rshare)
            self_pct.append(own)
            poll_ms.append(per_poll)
            stats_only.append(window("_start_monitors(False)")[0])

        base, rbase = statistics.median(idle), statistics.median(ridle)
        cpu_pct = 100.0 * (statistics.median(probed) - base)
        ctx.note(f"monitoring page main thread (% of a core): idle {100 * base:.2f}, "
                 f"monitored with probes {100 * statistics.median(probed):.2f}, "
                 f"getStats only {100 * statistics.median(stats_only):.2f}; responder page: "
                 f"idle {100 * rbase:.2f}, answering probes {100 * statistics.median(rprobed):.2f}")

        plain = page.py("await _bulk(False)", timeout=300)
        with_monitor = page.py("await _bulk(True)", timeout=300)
        ctx.note(f"64 MiB: {plain[2]:.0f} ms unmonitored, {with_monitor[2]:.0f} ms monitored "
                 f"({with_monitor[3]} polls during the transfer)")
    finally:
        page.page.context.close()
        responder.page.context.close()
    return {
        "monitor_cpu_pct": round(cpu_pct, 3),
        "monitor_responder_cpu_pct": round(100.0 * (statistics.median(rprobed) - rbase), 3),
        "monitor_cpu_pct_stats_only": round(100.0 * (statistics.median(stats_only) - base), 3),
        "monitor_self_cpu_pct": round(statistics.median(self_pct), 3),
        "monitor_poll_ms": round(statistics.median(poll_ms), 3),
        "long_tasks_50ms": float(with_monitor[0]),
        "long_tasks_50ms_unmonitored": float(plain[0]),
        "longest_task_ms": round(float(with_monitor[1]), 1),
    }
