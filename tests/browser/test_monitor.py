"""Statistics and quality monitoring over real PeerConnections in Pyodide."""

from __future__ import annotations

import pytest

from tests.conftest import new_pypage

pytestmark = pytest.mark.browser

SETUP = """
import asyncio, json, random, js
from pyapp.browser._ffi import live_proxies
from pyapp.browser.loopback import connected_pair
from pyapp.browser.monitor import PROBE_LABEL, QualityMonitor, answer_probes
from pyapp.browser.mux import DataChannelReliability as R
from pyapp.core.stats import CANDIDATE_TYPES

async def wait_for(pred, timeout=10.0):
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)

async def mux_pair():
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb

def monitor_tasks():
    return [t for t in asyncio.all_tasks() if t.get_name() == "pyapp-quality-monitor" and not t.done()]
"""


def test_statistics_counts_bytes_channels_and_logical_channels(pypage):
    r = pypage.pyjson(SETUP + """
a, b, ma, mb = await mux_pair()          # connected_pair opened and closed one channel
bulk = a.create_data_channel("bulk")
extra = a.create_data_channel("extra")
await asyncio.gather(bulk.wait_open(10), extra.wait_open(10))
closed = asyncio.get_event_loop().create_future()
extra.events.on("close", lambda: closed.done() or closed.set_result(None))
extra.close()
await asyncio.wait_for(closed, 10)
N = 300_000
for _ in range(N // 10_000):
    await bulk.send(bytes(10_000))
orders = a.create_multiplexed_channel(label="orders")
for i in range(7):
    await orders.send(bytes(1000 + i))
peer_orders = await mb.accept(5)
await wait_for(lambda: peer_orders.queued_inbound == sum(1000 + i for i in range(7)))
await wait_for(lambda: bulk.js_channel.bufferedAmount == 0)
s = await a.get_statistics()
rs = await b.get_statistics()
chans = {c.label: c for c in s.channels}
peer_chans = {c.label: c for c in rs.channels}
out = {"N": N, "bytes_sent": s.bytes_sent, "peer_bytes_received": rs.bytes_received,
       "opened": s.data_channels_opened, "closed": s.data_channels_closed,
       "peer_opened": rs.data_channels_opened,
       "rtt": s.round_trip_time, "local": s.local_candidate_type, "remote": s.remote_candidate_type,
       "bitrate": s.available_outgoing_bitrate, "dtls": s.dtls_state,
       "types_ok": s.local_candidate_type in CANDIDATE_TYPES,
       "orders": [chans["orders"].messages_sent, chans["orders"].bytes_sent,
                  chans["orders"].queued_bytes, chans["orders"].dropped,
                  chans["orders"].queueing_delay_ms is not None],
       "peer_orders": [peer_chans["orders"].messages_received, peer_chans["orders"].bytes_received],
       "native": sorted(d.label for d in s.data_channels)}
a.close(); b.close()
json.dumps(out)
""")
    n = r["N"]
    assert r["bytes_sent"] >= n
    assert r["peer_bytes_received"] >= n
    # connected_pair's trigger channel + bulk + extra + the mux's two transports; two closed.
    assert r["opened"] == 5
    assert r["closed"] == 2
    assert r["peer_opened"] == 5
    assert r["rtt"] is not None and 0 <= r["rtt"] < 1000
    assert r["types_ok"] and r["remote"] is not None
    # availableOutgoingBitrate: Chromium reports it only with media (checked in the RTP test).
    assert r["dtls"] == "connected"
    assert r["orders"][:4] == [7, sum(1000 + i for i in range(7)), 0, 0]
    assert r["orders"][4] is True
    assert r["peer_orders"] == [7, sum(1000 + i for i in range(7))]
    assert r["native"] == ["bulk", "pyapp-mux", "pyapp-mux-u"]


def test_probe_path_measures_rtt_and_the_label_stays_reserved(pypage):
    r = pypage.pyjson(SETUP + """
a, b, ma, mb = await mux_pair()
responder = answer_probes(mb)
assert answer_probes(mb) is responder            # idempotent
seen = []
monitor = a.start_connection_quality_monitoring(0.1, seen.append)
await wait_for(lambda: monitor.source == "probe" and len(seen) >= 5, 10)
app_channel = b.create_multiplexed_channel(label="app")
first_accepted = (await ma.accept(5)).label       # a's side sees b's "app" channel
# b's application never sees the probe channel: the next accept() times out.
try:
    await mb.accept(0.3)
    leaked = True
except asyncio.TimeoutError:
    leaked = False
q = seen[-1]
probe = monitor.probe_statistics
out = {"source": monitor.source, "rtt": q.round_trip_time, "loss": q.packet_loss,
       "jitter": q.jitter, "score": q.quality_score, "label": q.label.value,
       "echoed": responder.echoed, "sent": probe.sent, "received": probe.received,
       "leaked": leaked, "first": first_accepted, "errors": monitor.errors,
       "timeline": len(monitor.timeline), "points": monitor.export_timeline()["points"][-1]}
a.stop_connection_quality_monitoring()
out["after_stop"] = [monitor.running, a.quality_monitor is None]
a.close(); b.close()
json.dumps(out)
""")
    assert r["source"] == "probe"
    assert r["rtt"] is not None and 0 < r["rtt"] < 200
    assert r["loss"] == 0.0
    assert r["jitter"] is not None and r["jitter"] >= 0
    assert r["label"] == "excellent" and r["score"] > 95
    assert r["echoed"] >= r["received"] >= 3
    assert r["sent"] >= r["received"]
    assert r["leaked"] is False and r["first"] == "app"
    assert r["errors"] == 0
    assert r["timeline"] >= 5
    point = r["points"]
    assert point["source"] == "probe" and point["label"] == "excellent"
    assert point["send_bps"] is not None and point["send_bps"] > 0
    assert r["after_stop"] == [False, True]


@pytest.mark.parametrize("share", [0.10, 0.30])
def test_injected_probe_loss_is_measured_within_two_points(pypage, share):
    r = pypage.pyjson(SETUP + f"""
SHARE = {share}
a, b, ma, mb = await mux_pair()
answer_probes(mb)
rng = random.Random(7)
import time
sent_log = []                       # (send time, dropped by the test hook)
def keep(ping):
    dropped = rng.random() < SHARE
    sent_log.append((time.monotonic(), dropped))
    return not dropped
seen = []
monitor = QualityMonitor(a, 0.25, seen.append, probe=True, probe_interval=0.02,
                         probe_timeout=1.0, probe_window=10_000, probe_filter=keep)
monitor.start()
await wait_for(lambda: len(sent_log) >= 350, 20)
p = monitor.probe_statistics
# The prober expires pings only at a tick (right before it sends the next ping), so at
# the last ping's tick exactly the dropped pings older than the timeout were declared lost.
last_tick = sent_log[-1][0]
expired_drops = sum(d for t, d in sent_log if t + 1.0 <= last_tick - 0.001)
expected_resolved = expired_drops + p.received
decisions = [d for _, d in sent_log]
last = seen[-1]
out = {{"measured": p.loss_pct, "resolved": p.received + p.lost,
        "expected_resolved": expected_resolved,
        "injected_resolved": 100.0 * expired_drops / expected_resolved,
        "lost": p.lost, "expired_drops": expired_drops, "probe": str(p),
        "injected_all": 100.0 * sum(decisions) / len(decisions),
        "reported": last.packet_loss, "source": monitor.source,
        "filtered": monitor.probes_filtered, "dropped": sum(decisions), "late": p.late,
        "send_failures": monitor.probe_send_failures, "echoed": answer_probes(mb).echoed,
        "mux_dropped": [len(ma.dropped), len(mb.dropped)]}}
monitor.close(); a.close(); b.close()
json.dumps(out)
""")
    assert r["source"] == "probe"
    assert r["filtered"] == r["dropped"] > 0
    assert r["resolved"] >= 250
    assert abs(r["lost"] - r["expired_drops"]) <= 3, r        # real losses/late echoes: ~0
    # The prober's loss over the resolved pings vs the share the hook dropped among them
    # (a ping is sent every 20 ms; an echo arrives within a few ms on loopback).
    assert abs(r["measured"] - r["injected_resolved"]) <= 2.0, r
    # What the monitor reported at its last poll (<= 0.25 s, ~12 pings earlier) is that figure.
    assert abs(r["reported"] - r["measured"]) <= 2.0, r
    assert abs(r["injected_all"] - share * 100) <= 5.0   # the seeded pattern is near nominal


def test_stop_restart_interval_and_failed_polls(pypage):
    r = pypage.pyjson(SETUP + """
a, b, ma, mb = await mux_pair()
answer_probes(mb)
baseline = live_proxies()
real_fetch = None
calls = {"n": 0, "active": 0, "max_active": 0}
from pyapp.browser.stats import get_statistics
async def flaky(pc):
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
got = []
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
stopped = {"pending": monitor.pending, "tasks": len(monitor_tasks()), "running": monitor.running}
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
final = {"pending": monitor.pending, "tasks": len(monitor_tasks()),
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
a.close(); b.close()
json.dumps({"fast": fast, "slow_polls": slow_polls, "stopped": stopped, "after_stop": after_stop,
            "resumed": resumed, "final": final, "samples": len(got)})
""")
    fast = r["fast"]
    assert fast["errors"] == 2 and "injected getStats failure" in fast["last_error"]
    assert fast["polls"] >= 10                    # the failures did not end the monitoring
    assert fast["max_active"] == 1                # polls never overlapped
    assert 1 <= r["slow_polls"] <= 3              # 0.65 s at 0.3 s
    assert r["stopped"] == {"pending": 0, "tasks": 0, "running": False}
    assert r["after_stop"] == [0, 0, 0]
    assert r["resumed"] >= 3
    assert r["final"] == {"pending": 0, "tasks": 0, "proxies_delta": 0, "js_path": [2, 0, 0, 0, 0]}
    assert r["samples"] >= 8


def test_rtp_path_with_the_fake_camera(pypage):
    r = pypage.pyjson(SETUP + """
from pyapp.browser.media import start_camera
a, b = await connected_pair()
media = await start_camera(audio=False)
a.add_track(media.video_track, media.stream)
seen = []
monitor = b.start_connection_quality_monitoring(0.25, seen.append)
await wait_for(lambda: monitor.source == "rtp" and sum(q.packet_loss is not None for q in seen) >= 2, 15)
q = [q for q in seen if q.packet_loss is not None][-1]
st = monitor.statistics
out = {"source": monitor.source, "loss": q.packet_loss, "jitter": q.jitter, "rtt": q.round_trip_time,
       "inbound": len(st.media.inbound), "recv_bps": monitor.rates.receive_bitrate,
       "bitrate": st.available_outgoing_bitrate,
       "label": q.label.value}
media.stop(); a.close(); b.close()
json.dumps(out)
""")
    assert r["source"] == "rtp"
    assert r["inbound"] >= 1
    assert r["loss"] is not None and 0 <= r["loss"] <= 2
    assert r["jitter"] is not None and r["jitter"] >= 0
    assert r["rtt"] is not None
    assert r["recv_bps"] is not None and r["recv_bps"] > 10_000   # the video is flowing
    assert r["label"] in ("excellent", "good")
    assert r["bitrate"] is not None and r["bitrate"] > 0


def test_firefox_statistics_and_probe(firefox, server):
    page = new_pypage(firefox, server)
    try:
        r = page.pyjson(SETUP + """
a, b, ma, mb = await mux_pair()
answer_probes(mb)
ch = a.create_data_channel("x")
await ch.wait_open(10)
await ch.send(bytes(50_000))
await wait_for(lambda: ch.js_channel.bufferedAmount == 0)
t0 = js.performance.now()
s = await a.get_statistics()
while s.bytes_sent < 50_000 and js.performance.now() - t0 < 5000:   # Firefox updates lazily
    await asyncio.sleep(0.05)
    s = await a.get_statistics()
t1 = js.performance.now()
seen = []
monitor = a.start_connection_quality_monitoring(0.1, seen.append)
await wait_for(lambda: monitor.source == "probe" and len(seen) >= 3, 10)
t2 = js.performance.now()
out = {"ms": [t1 - t0, t2 - t1], "bytes_sent": s.bytes_sent, "opened": s.data_channels_opened,
       "bitrate": s.available_outgoing_bitrate, "rtt_pair": s.round_trip_time,
       "source": monitor.source, "rtt": monitor.probe_statistics.rtt_ms,
       "rtt_samples": sum(q.round_trip_time is not None for q in seen), "errors": monitor.errors}
a.close(); b.close()
json.dumps(out)
""")
    finally:
        page.page.context.close()
    assert r["bytes_sent"] >= 50_000
    assert r["opened"] == 4                       # trigger channel, 2 mux transports, "x"
    assert r["bitrate"] is None                   # Firefox has no availableOutgoingBitrate
    assert r["source"] == "probe" and r["rtt"] is not None and r["rtt"] >= 0
    assert r["rtt_samples"] >= 1
    assert r["errors"] == 0
