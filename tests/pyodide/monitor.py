"""Page side of tests/browser/test_monitor.py: statistics and quality monitoring."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import js

from pyapp.browser._ffi import live_proxies
from pyapp.browser.connection import Connection
from pyapp.browser.loopback import connected_pair
from pyapp.browser.media import start_camera
from pyapp.browser.monitor import QualityMonitor, answer_probes
from pyapp.browser.mux import MuxSession
from pyapp.browser.peer import PeerConnection
from pyapp.browser.stats import get_statistics, report_json
from pyapp.core.quality import ConnectionQuality
from pyapp.core.stats import CANDIDATE_TYPES, ConnectionStatistics, parse_stats
from pyapp.exceptions import OperationTimeout


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise OperationTimeout("condition not met", timeout=timeout)
        await asyncio.sleep(0.02)


async def mux_pair() -> tuple[Connection, Connection, MuxSession, MuxSession]:
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb


def monitor_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if t.get_name() == "pyapp-quality-monitor" and not t.done()]


def _now_ms() -> float:
    return float(js.performance.now())


async def statistics_counts() -> dict[str, Any]:
    a, b, _ma, mb = await mux_pair()          # connected_pair opened and closed one channel
    bulk = a.create_data_channel("bulk")
    extra = a.create_data_channel("extra")
    await asyncio.gather(bulk.wait_open(10), extra.wait_open(10))
    closed: asyncio.Future[None] = asyncio.get_event_loop().create_future()
    extra.events.on("close", lambda: closed.done() or closed.set_result(None))  # type: ignore[func-returns-value]
    extra.close()
    await asyncio.wait_for(closed, 10)
    n = 300_000
    for _ in range(n // 10_000):
        await bulk.send(bytes(10_000))
    orders = a.create_multiplexed_channel(label="orders")
    for i in range(7):
        await orders.send(bytes(1000 + i))
    peer_orders = await mb.accept(5)
    await wait_for(lambda: peer_orders.queued_inbound == sum(1000 + i for i in range(7)))
    await wait_for(lambda: bulk.buffered_amount == 0)
    s = await a.get_statistics()
    rs = await b.get_statistics()
    # The JS filter drops the pairs (and candidates) other than the selected one:
    # parse_stats must read the same from what is left.
    report = await a.peer.get_stats_report()
    every, reduced = report_json(report, every_pair=True), report_json(report)
    same = parse_stats(every, 1.0) == parse_stats(reduced, 1.0)
    chans = {c.label: c for c in s.channels}
    peer_chans = {c.label: c for c in rs.channels}
    out = {"N": n, "bytes_sent": s.bytes_sent, "peer_bytes_received": rs.bytes_received,
           "opened": s.data_channels_opened, "closed": s.data_channels_closed,
           "peer_opened": rs.data_channels_opened,
           "rtt": s.round_trip_time, "local": s.local_candidate_type,
           "remote": s.remote_candidate_type,
           "bitrate": s.available_outgoing_bitrate, "dtls": s.dtls_state,
           "types_ok": s.local_candidate_type in CANDIDATE_TYPES,
           "orders": [chans["orders"].messages_sent, chans["orders"].bytes_sent,
                      chans["orders"].queued_bytes, chans["orders"].dropped,
                      chans["orders"].queueing_delay_ms is not None],
           "peer_orders": [peer_chans["orders"].messages_received,
                           peer_chans["orders"].bytes_received],
           "native": sorted(d.label or "" for d in s.data_channels),
           "reduced_same": same, "pairs": _types(every).count("candidate-pair"),
           "reduced_types": sorted(_types(reduced))}
    a.close()
    b.close()
    return out


def _types(stats: list[dict[str, Any]]) -> list[str]:
    return [str(st.get("type")) for st in stats]


async def probe_path() -> dict[str, Any]:
    a, b, ma, mb = await mux_pair()
    responder = answer_probes(mb)
    idempotent = answer_probes(mb) is responder
    seen: list[ConnectionQuality] = []
    monitor = a.start_connection_quality_monitoring(0.1, seen.append)
    await wait_for(lambda: monitor.source == "probe" and len(seen) >= 5, 10)
    b.create_multiplexed_channel(label="app")
    first_accepted = (await ma.accept(5)).label       # a's side sees b's "app" channel
    # b's application never sees the probe channel: the next accept() times out.
    leaked = True
    try:
        await mb.accept(0.3)
    except TimeoutError:
        leaked = False
    q = seen[-1]
    probe = monitor.probe_statistics
    assert probe is not None
    out = {"idempotent": idempotent, "source": monitor.source, "rtt": q.round_trip_time,
           "loss": q.packet_loss, "jitter": q.jitter, "score": q.quality_score,
           "label": q.label.value, "echoed": responder.echoed, "sent": probe.sent,
           "received": probe.received, "leaked": leaked, "first": first_accepted,
           "errors": monitor.errors, "timeline": len(monitor.timeline),
           "points": monitor.export_timeline()["points"][-1]}
    a.stop_connection_quality_monitoring()
    out["after_stop"] = [monitor.running, a.monitor is None]
    a.close()
    b.close()
    return out


async def injected_probe_loss(share: float) -> dict[str, Any]:
    a, b, ma, mb = await mux_pair()
    answer_probes(mb)
    rng = random.Random(7)
    sent_log: list[tuple[float, bool]] = []   # (send time, dropped by the test hook)

    def keep(_ping: bytes) -> bool:
        dropped = rng.random() < share
        sent_log.append((time.monotonic(), dropped))
        return not dropped

    seen: list[ConnectionQuality] = []
    monitor = QualityMonitor(a, 0.25, seen.append, probe=True, probe_interval=0.02,
                             probe_timeout=1.0, probe_window=10_000, probe_filter=keep)
    monitor.start()
    await wait_for(lambda: len(sent_log) >= 350, 20)
    p = monitor.probe_statistics
    assert p is not None
    # The prober expires pings at its timer, at the latest right before it sends the next
    # ping, so at the last ping's tick exactly the dropped pings older than the timeout
    # were declared lost.
    last_tick = sent_log[-1][0]
    expired_drops = sum(d for t, d in sent_log if t + 1.0 <= last_tick - 0.001)
    expected_resolved = expired_drops + p.received
    decisions = [d for _, d in sent_log]
    last = seen[-1]
    out = {"measured": p.loss_pct, "resolved": p.received + p.lost,
           "expected_resolved": expected_resolved,
           "injected_resolved": 100.0 * expired_drops / expected_resolved,
           "lost": p.lost, "expired_drops": expired_drops, "probe": str(p),
           "injected_all": 100.0 * sum(decisions) / len(decisions),
           "reported": last.packet_loss, "source": monitor.source,
           "filtered": monitor.probes_filtered, "dropped": sum(decisions), "late": p.late,
           "send_failures": monitor.probe_send_failures, "echoed": answer_probes(mb).echoed,
           "mux_dropped": [len(ma.dropped), len(mb.dropped)]}
    monitor.close()
    a.close()
    b.close()
    return out


async def stop_restart_interval_and_failed_polls() -> dict[str, Any]:
    a, b, _ma, mb = await mux_pair()
    answer_probes(mb)
    baseline = live_proxies()
    calls = {"n": 0, "active": 0, "max_active": 0}

    async def flaky(pc: PeerConnection) -> ConnectionStatistics:
        calls["n"] += 1
        calls["active"] += 1
        calls["max_active"] = max(calls["max_active"], calls["active"])
        try:
            if calls["n"] in (2, 3):
                raise RuntimeError("injected getStats failure")
            if calls["n"] == 5:
                await asyncio.sleep(0.25)            # slower than the interval: must not overlap
            return await get_statistics(pc)
        finally:
            calls["active"] -= 1

    got: list[ConnectionQuality] = []
    monitor = QualityMonitor(a, 0.05, got.append, fetch=flaky)
    monitor.start()
    await wait_for(lambda: monitor.completed >= 8, 10)
    fast = {"polls": monitor.polls, "errors": monitor.errors, "max_active": calls["max_active"],
            "last_error": str(monitor.last_error)}
    monitor.set_interval(0.3)
    p0 = monitor.polls
    await asyncio.sleep(0.65)
    slow_polls = monitor.polls - p0
    monitor.stop()
    await asyncio.sleep(0)                            # a cancelled poll task ends on the next tick
    stopped = {"pending": monitor.pending, "tasks": len(monitor_tasks()),
               "running": monitor.running}
    p1, c1 = monitor.polls, calls["n"]
    await asyncio.sleep(0.5)
    after_stop = [monitor.polls - p1, calls["n"] - c1]
    monitor.set_interval(0.05)                        # while stopped: nothing is scheduled
    await asyncio.sleep(0.2)
    after_stop.append(monitor.polls - p1)
    monitor.restart()
    await wait_for(lambda: monitor.polls >= p1 + 3, 5)
    resumed = monitor.polls - p1
    monitor.close()
    await asyncio.sleep(0.1)
    final: dict[str, Any] = {"pending": monitor.pending, "tasks": len(monitor_tasks()),
                             "proxies_delta": live_proxies() - baseline}
    # The default path (getStats through two long-lived proxies): the same guarantees.
    js_path = QualityMonitor(a, 0.05)
    js_path.start()
    await wait_for(lambda: js_path.completed >= 3, 5)
    live_while_running = live_proxies() - baseline
    js_path.stop()
    p2 = js_path.polls
    await asyncio.sleep(0.3)
    final["js_path"] = [live_while_running, js_path.polls - p2, js_path.pending,
                        live_proxies() - baseline, js_path.errors]
    a.close()
    b.close()
    return {"fast": fast, "slow_polls": slow_polls, "stopped": stopped,
            "after_stop": after_stop, "resumed": resumed, "final": final, "samples": len(got)}


async def monitors_share_one_clock() -> dict[str, Any]:
    from pyapp.browser.monitor_clock import monitor_clock

    pairs = [await mux_pair() for _ in range(2)]
    for _a, _b, _ma, mb in pairs:
        answer_probes(mb)
    baseline = live_proxies()
    monitors = []
    for a, _b, _ma, _mb in pairs:
        for _ in range(2):
            m = QualityMonitor(a, 0.2, probe=True)
            m.start()
            monitors.append(m)
    clock = monitor_clock()
    await wait_for(lambda: all(m.source == "probe" and m.completed >= 3 for m in monitors), 10)
    proxies = live_proxies() - baseline

    class Boom:
        calls = 0

        def _deadline(self) -> float:
            return clock.now()

        def _on_timer(self, now: float) -> None:
            Boom.calls += 1
            if Boom.calls >= 2:
                clock.discard(self)
            raise RuntimeError("injected clock member failure")

    boom = Boom()
    completed0 = [m.completed for m in monitors]
    fires0, served0, t0 = clock.fires, clock.served, clock.now()
    clock.add(boom)
    clock.rearm()
    await asyncio.sleep(1.0)
    fires = clock.fires - fires0
    fires_per_s = fires / (clock.now() - t0)
    served_per_fire = (clock.served - served0) / max(1, fires)
    out: dict[str, Any] = {
        "members": clock.members, "proxies": proxies, "fires_per_s": fires_per_s,
        "served_per_fire": served_per_fire,
        "completed": [m.completed >= 3 for m in monitors],
        "source": [m.source for m in monitors], "boom_calls": Boom.calls,
        "others_progressed": all(m.completed > c for m, c in zip(monitors, completed0, strict=True)),
    }
    for m in monitors:
        m.close()
    await asyncio.sleep(0.1)
    out["after"] = {"members": clock.members, "armed": clock.armed,
                    "proxies_delta": live_proxies() - baseline}
    for a, b, _ma, _mb in pairs:
        a.close()
        b.close()
    return out


async def rtp_path_with_the_fake_camera() -> dict[str, Any]:
    a, b = await connected_pair()
    media = await start_camera(audio=False)
    a.add_track(media.video_track, media.stream)
    seen: list[ConnectionQuality] = []
    monitor = b.start_connection_quality_monitoring(0.25, seen.append)
    await wait_for(lambda: monitor.source == "rtp"
                   and sum(q.packet_loss is not None for q in seen) >= 2, 15)
    q = [q for q in seen if q.packet_loss is not None][-1]
    st = monitor.statistics
    assert st is not None and monitor.rates is not None
    out = {"source": monitor.source, "loss": q.packet_loss, "jitter": q.jitter,
           "rtt": q.round_trip_time, "inbound": len(st.media.inbound),
           "recv_bps": monitor.rates.receive_bitrate,
           "bitrate": st.available_outgoing_bitrate, "label": q.label.value}
    media.stop()
    a.close()
    b.close()
    return out


async def firefox_statistics_and_probe() -> dict[str, Any]:
    a, b, _ma, mb = await mux_pair()
    answer_probes(mb)
    ch = a.create_data_channel("x")
    await ch.wait_open(10)
    await ch.send(bytes(50_000))
    await wait_for(lambda: ch.buffered_amount == 0)
    t0 = _now_ms()
    s = await a.get_statistics()
    while (s.bytes_sent or 0) < 50_000 and _now_ms() - t0 < 5000:   # Firefox updates lazily
        await asyncio.sleep(0.05)
        s = await a.get_statistics()
    t1 = _now_ms()
    report = await a.peer.get_stats_report()
    every, reduced = report_json(report, every_pair=True), report_json(report)
    same = parse_stats(every, 1.0) == parse_stats(reduced, 1.0)
    seen: list[ConnectionQuality] = []
    monitor = a.start_connection_quality_monitoring(0.1, seen.append)
    await wait_for(lambda: monitor.source == "probe" and len(seen) >= 3, 10)
    t2 = _now_ms()
    probe = monitor.probe_statistics
    out = {"ms": [t1 - t0, t2 - t1], "bytes_sent": s.bytes_sent,
           "opened": s.data_channels_opened, "bitrate": s.available_outgoing_bitrate,
           "rtt_pair": s.round_trip_time, "source": monitor.source,
           "rtt": probe.rtt_ms if probe else None,
           "rtt_samples": sum(q.round_trip_time is not None for q in seen),
           "errors": monitor.errors, "reduced_same": same,
           "kept_pairs": [_types(every).count("candidate-pair"),
                          _types(reduced).count("candidate-pair")]}
    a.close()
    b.close()
    return out
