"""Multiplexed logical channels over real RTCDataChannels in Pyodide."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

SETUP = """
import asyncio, hashlib, json, os
from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import DataChannelPriority as P, DataChannelReliability as R
from pyapp.exceptions import ChannelResetError, LocalProtocolError
"""


def test_open_send_receive_both_ways_and_id_parity(pypage):
    result = pypage.pyjson(SETUP + """
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
ca = a.create_multiplexed_channel(label="orders")
cb_local = b.create_data_channel_with_priority("quotes", P.HIGH)
cb = await mb.accept(5)
ca_peer = await ma.accept(5)
await ca.send(b"buy")
await ca.send("text too")
await cb_local.send(b"quote")
got_b = [await cb.receive(), await cb.receive()]
got_a = await ca_peer.receive()
await ca.wait_accepted(5)
# create_multiplexed_channel on a raw data channel, with an explicit id of the right parity.
raw = a.channels[0]
explicit = raw.create_multiplexed_channel(40, label="explicit")
try:
    raw.create_multiplexed_channel(41, label="wrong parity")
    parity_error = None
except LocalProtocolError as exc:
    parity_error = str(exc)
out = {"ids": [ca.channel_id, cb_local.channel_id, explicit.channel_id],
       "labels": [cb.label, ca_peer.label], "prio": ca_peer.priority.name,
       "got_b": [x if isinstance(x, str) else x.decode() for x in got_b],
       "got_a": got_a.decode(), "parity_error": parity_error,
       "stats": [ca.stats.messages_sent, cb.stats.messages_received],
       "states": [ca.state, cb.state]}
a.close(); b.close()
json.dumps(out)
""")
    a_id, b_id, explicit = result["ids"]
    assert a_id % 2 == 0 and b_id % 2 == 1 and explicit == 40
    assert result["labels"] == ["orders", "quotes"]
    assert result["prio"] == "HIGH"
    assert result["got_b"] == ["buy", "text too"]
    assert result["got_a"] == "quote"
    assert "parity" in result["parity_error"]
    assert result["stats"] == [2, 2]
    assert result["states"] == ["open", "open"]


def test_eight_channels_256_mib_mixed_priorities_and_reliabilities(pypage):
    result = pypage.pyjson(SETUP + """
import js
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
specs = [(p, r) for p in (P.VERY_LOW, P.LOW, P.MEDIUM, P.HIGH) for r in ("reliable", "unreliable")]
TOTAL = 256 * 1024 * 1024
reliable_share = TOTAL // 6          # the reliable channels carry most of the bytes
unreliable_share = TOTAL // 12
sent_hash, recv_hash, recv_counts, corrupt, sizes = {}, {}, {}, {}, {}
channels = []
for prio, kind in specs:
    rel = R.RELIABLE if kind == "reliable" else R.UNRELIABLE
    ch = a.create_multiplexed_channel(label=f"{prio.name}-{kind}", priority=prio, reliability=rel)
    channels.append((ch, kind))
peers = {}
for _ in specs:
    ch = await mb.accept(10)
    peers[ch.label] = ch
    recv_hash[ch.label] = hashlib.sha256()
    recv_counts[ch.label] = 0
    corrupt[ch.label] = 0
done = {label: asyncio.get_event_loop().create_future() for label in peers}
expected_msgs = {}
def make_handler(label, kind):
    def on_message(data):
        if kind == "unreliable" and data[32:36] == b"LAST":
            if hashlib.sha256(data[32:]).digest() != data[:32]:
                corrupt[label] += 1
            if not done[label].done():
                done[label].set_result(None)
            return
        recv_counts[label] += 1
        if kind == "reliable":
            recv_hash[label].update(data)
            if recv_counts[label] == expected_msgs[label]:
                done[label].set_result(None)
        else:
            # Each unreliable message carries the SHA-256 of its own body.
            if hashlib.sha256(data[32:]).digest() != data[:32]:
                corrupt[label] += 1
    return on_message
async def producer(ch, kind):
    size = 256 * 1024 if kind == "reliable" else 60 * 1024
    share = reliable_share if kind == "reliable" else unreliable_share
    n = share // size
    h = hashlib.sha256()
    block = os.urandom(size)
    for i in range(n):
        body = i.to_bytes(8, "big") + block[8:]
        if kind == "reliable":
            h.update(body)
            await ch.send(body)
        else:
            await ch.send(hashlib.sha256(body).digest() + body)
            if i % 16 == 0:
                await asyncio.sleep(0)   # let the pump drain: unreliable drops under pressure
    if kind == "unreliable":
        # The end marker goes once the queue has drained, and is retried until seen.
        body = b"LAST" + bytes(64)
        while not done[ch.label].done():
            await ch.send(hashlib.sha256(body).digest() + body)
            await asyncio.sleep(0.05)
        # More markers push the receiver past its reorder window, so any message
        # lost just before the end is counted too.
        for _ in range(24):
            await ch.send(hashlib.sha256(body).digest() + body)
            await asyncio.sleep(0.005)
    sent_hash[ch.label] = h.hexdigest()
    return n
for ch, kind in channels:
    size = 256 * 1024 if kind == "reliable" else 60 * 1024
    expected_msgs[ch.label] = (reliable_share if kind == "reliable" else unreliable_share) // size
    peers[ch.label].events.on("message", make_handler(ch.label, kind))
t0 = js.performance.now()
counts = await asyncio.gather(*(producer(ch, kind) for ch, kind in channels))
await asyncio.wait_for(asyncio.gather(*done.values()), 240)
elapsed = (js.performance.now() - t0) / 1000
await asyncio.sleep(0.3)
out = {"elapsed": elapsed, "channels": {}}
for (ch, kind), n in zip(channels, counts):
    stats = ch.stats
    out["channels"][ch.label] = {
        "kind": kind, "sent": n, "received": recv_counts[ch.label], "corrupt": corrupt[ch.label],
        "hash_ok": kind != "reliable" or sent_hash[ch.label] == recv_hash[ch.label].hexdigest(),
        "dropped": (stats.messages_dropped + peers[ch.label].stats.messages_incomplete
                    + peers[ch.label].stats.messages_lost),
        "bytes": stats.bytes_sent}
out["errors"] = [str(e) for e in ma.protocol_errors + mb.protocol_errors]
a.close(); b.close()
json.dumps(out)
""", timeout=300)
    chans = result["channels"]
    assert len(chans) == 8
    total = sum(c["bytes"] for c in chans.values())
    assert total >= 255 * 1024 * 1024, total
    for label, c in chans.items():
        assert c["corrupt"] == 0, label
        if c["kind"] == "reliable":
            assert c["hash_ok"], f"{label}: SHA-256 mismatch"
            assert c["received"] == c["sent"], label
        else:
            # Never more than was sent; whatever did not arrive was counted as dropped.
            assert c["received"] <= c["sent"], label
            assert c["received"] + c["dropped"] >= c["sent"], (label, c)
    assert result["errors"] == []


def test_garbage_frames_reset_one_channel_others_keep_flowing(pypage):
    result = pypage.pyjson(SETUP + """
import struct
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
victim = a.create_multiplexed_channel(label="victim")
healthy = a.create_multiplexed_channel(label="healthy", priority=P.HIGH)
peers = {}
for _ in range(2):
    ch = await mb.accept(5)
    peers[ch.label] = ch
await victim.send(b"before")
assert await peers["victim"].receive() == b"before"
# A misbehaving peer: a DATA frame for the victim whose length field lies, then pure garbage.
header = struct.pack("!BBHBBIIH", 1, 3, victim.channel_id, 0x03, 0, 1, 0, 500)
ma.reliable.send_nowait(header + b"short")
ma.reliable.send_nowait(b"\\xff" * 3)
for i in range(20):
    await healthy.send(f"tick {i}".encode())
ticks = [await peers["healthy"].receive() for _ in range(20)]
try:
    await asyncio.wait_for(peers["victim"].receive(), 5)
    victim_error = None
except ChannelResetError as exc:
    victim_error = exc.reason
for _ in range(50):
    if victim.state == "reset":
        break
    await asyncio.sleep(0.02)
out = {"ticks": len(ticks), "victim_error": victim_error, "sender_state": victim.state,
       "errors": [type(e).__name__ for e in mb.protocol_errors],
       "healthy_state": healthy.state, "mux_errors": mb.stats().protocol_errors}
a.close(); b.close()
json.dumps(out)
""")
    assert result["ticks"] == 20
    assert result["victim_error"] and "length" in result["victim_error"].lower()
    assert result["sender_state"] == "reset"
    assert result["healthy_state"] == "open"
    assert result["errors"] and all(e == "FrameError" for e in result["errors"])
    assert result["mux_errors"] >= 2


def test_priority_hint_is_feature_detected(pypage):
    result = pypage.pyjson("""
import json
from pyapp.browser.mux import supports_priority_hint
from pyapp.browser import PeerConnection
pc = PeerConnection(signal=lambda m: None)
ch = pc.create_data_channel("hinted", priority="high")
import js
has = bool(js.Reflect.has(ch.js_channel, "priority"))
pc.close()
json.dumps({"detected": supports_priority_hint(), "has": has})
""")
    assert result["detected"] == result["has"]


def test_reliable_channels_resume_on_a_fresh_connection_without_loss_or_duplicates(pypage):
    result = pypage.pyjson(SETUP + """
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
ch = a.create_multiplexed_channel(label="orders")
peer = await mb.accept(5)
N, SIZE = 300, 32 * 1024
received, seqs = hashlib.sha256(), []
all_in = asyncio.get_event_loop().create_future()
half = asyncio.get_event_loop().create_future()
def on_message(m):
    seqs.append(int.from_bytes(m[:4], "big"))
    received.update(m)
    if len(seqs) == N // 3 and not half.done():
        half.set_result(None)
    if len(seqs) == N and not all_in.done():
        all_in.set_result(None)
peer.events.on("message", on_message)
sent = hashlib.sha256()
async def produce():
    for i in range(N):
        body = i.to_bytes(4, "big") + os.urandom(SIZE - 4)
        sent.update(body)
        await ch.send(body)
producer = asyncio.ensure_future(produce())
await asyncio.wait_for(half, 30)
# The connection dies mid-transfer (both ends), with messages in flight.
sa, sb = a.detach_multiplexer(), b.detach_multiplexer()
unacked_at_loss = sa.stats().replay_bytes
a.close(); b.close()
await asyncio.sleep(0.2)
got_during_outage = len(seqs)
a2, b2 = await connected_pair()
a2.adopt_multiplexer(sa); b2.adopt_multiplexer(sb)
await producer
await asyncio.wait_for(all_in, 60)
await asyncio.sleep(0.2)
out = {"count": len(seqs), "unique": len(set(seqs)), "in_order": seqs == sorted(seqs),
       "sha_ok": sent.hexdigest() == received.hexdigest(), "unacked_at_loss": unacked_at_loss,
       "duplicates_dropped": peer.stats.duplicates if hasattr(peer.stats, "duplicates") else None,
       "state": ch.state, "got_during_outage": got_during_outage}
a2.close(); b2.close()
json.dumps(out)
""", timeout=120)
    assert result["count"] == 300
    assert result["unique"] == 300, "a message was delivered twice"
    assert result["in_order"]
    assert result["sha_ok"]
    assert result["unacked_at_loss"] > 0, "nothing was in flight: the test did not exercise replay"
    assert result["state"] == "open"


def test_peer_gone_for_good_fails_unacknowledged_sends_loudly(pypage):
    result = pypage.pyjson(SETUP + """
from pyapp.exceptions import DeliveryError, PyAppError
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
ch = a.create_multiplexed_channel(label="orders")
await ch.wait_accepted(5)
sa = a.detach_multiplexer()
b.close(); a.close()          # the peer is gone; our session waits for a resume that never comes
for i in range(5):
    await ch.send(f"order {i}".encode())   # queued for replay
failures = sa.fail("peer gone for good")
try:
    await ch.send(b"late")
    late = None
except PyAppError as exc:
    late = type(exc).__name__
json.dumps({"undelivered": [m.decode() for f in failures for m in f.messages],
            "error": type(failures[0].error).__name__ if failures else None, "late": late,
            "state": ch.state})
""")
    assert result["undelivered"] == [f"order {i}" for i in range(5)]
    assert result["error"] == "DeliveryError"
    assert result["late"] == "DeliveryError"
    assert result["state"] == "closed"


def test_power_saving_pauses_bulk_and_unreliable_low_priority(pypage):
    result = pypage.pyjson(SETUP + """
a, b = await connected_pair()
ma, mb = a.multiplexer(), b.multiplexer()
await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
bulk = a.create_data_channel_with_priority("bulk", P.VERY_LOW)
ticks = a.create_data_channel_with_priority("ticks", P.LOW, R.UNRELIABLE)
urgent = a.create_data_channel_with_priority("urgent", P.HIGH)
peers = {}
for _ in range(3):
    ch = await mb.accept(5)
    peers[ch.label] = ch
ma.set_paused_priorities(bulk=True, unreliable_low_priority=True)
blocked = asyncio.ensure_future(bulk.send(b"bulk while paused"))
await ticks.send(b"tick while paused")       # dropped and counted, not queued
await urgent.send(b"urgent still flows")
urgent_got = await asyncio.wait_for(peers["urgent"].receive(), 5)
await asyncio.sleep(0.2)
was_blocked = not blocked.done()
ma.set_paused_priorities(bulk=False, unreliable_low_priority=False)
await asyncio.wait_for(blocked, 5)
bulk_got = await asyncio.wait_for(peers["bulk"].receive(), 5)
await ticks.send(b"tick after")
tick_got = await asyncio.wait_for(peers["ticks"].receive(), 5)
out = {"urgent": urgent_got.decode(), "was_blocked": was_blocked, "bulk": bulk_got.decode(),
       "tick": tick_got.decode(), "paused_drops": ma.paused_drops}
a.close(); b.close()
json.dumps(out)
""")
    assert result == {"urgent": "urgent still flows", "was_blocked": True,
                      "bulk": "bulk while paused", "tick": "tick after", "paused_drops": 1}


def test_peer_creating_its_session_late_loses_nothing(pypage):
    result = pypage.pyjson(SETUP + """
a, b = await connected_pair()
ma = a.multiplexer()
ch = a.create_multiplexed_channel(label="early")
sends = [asyncio.ensure_future(ch.send(f"m{i}".encode())) for i in range(5)]
await asyncio.sleep(1.0)          # a's negotiated channels are open; b has none yet
mb = b.multiplexer()
peer = await mb.accept(10)
got = [(await peer.receive()).decode() for _ in range(5)]
await asyncio.gather(*sends)
out = {"got": got, "label": peer.label}
a.close(); b.close()
json.dumps(out)
""")
    assert result == {"got": [f"m{i}" for i in range(5)], "label": "early"}


PAGE = "tests.pyodide.mux_cases"


def test_concurrent_receives_are_served_in_order_and_close_wakes_every_waiter(pypage):
    result = pypage.call(f"{PAGE}:concurrent_receive", timeout=60)
    for kind in ("mux", "raw"):
        assert result[kind]["got"] == ["one", "two"], kind
        assert result[kind]["ends"] == ["ConnectionClosedError"] * 2, kind


def test_closing_an_unreliable_channel_delivers_what_was_sent_before_it(pypage):
    rounds = pypage.call(f"{PAGE}:unreliable_close_drains", timeout=90)
    assert len(rounds) == 3
    for r in rounds:
        assert r["protocol_errors"] == [], r
        assert r["state"] == "closed" and r["error"] == "None", r
        assert r["received"] + r["lost"] == 60, r   # nothing vanishes uncounted
        assert r["received"] == r["distinct"] == 60, r  # loopback loses nothing


def test_reserved_channels_never_reach_accept(pypage):
    result = pypage.call(f"{PAGE}:reserved_channels_never_reach_accept", timeout=60)
    assert result == {"first": "app", "second": None, "served": ["pyapp-probe", "pyapp-probe"],
                      "labels": ["x", "y"]}


def test_protocol_errors_are_logged_once_per_channel(pypage):
    result = pypage.call(f"{PAGE}:protocol_errors_are_logged", timeout=60)
    assert result["state"] == "reset"
    assert len(result["logged"]) == 1, result["logged"]
    assert "reset" in result["logged"][0] and "never sent" in result["logged"][0]
