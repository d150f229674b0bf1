"""Page side of tests/browser/test_mux.py (called with ``pypage.call``): the multiplexer
over real RTCDataChannels."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

from pyapp.browser.datachannel import DataChannel
from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import DataChannelPriority as P
from pyapp.browser.mux import DataChannelReliability as R
from pyapp.browser.mux import MultiplexedChannel, MuxSession
from pyapp.core.mux import ChannelStats, Reliability
from pyapp.exceptions import (
    ChannelResetError,
    ConnectionClosedError,
    LocalProtocolError,
    OperationTimeout,
)

UNRELIABLE = Reliability(ordered=False, max_retransmits=0)


def _stats(channel: MultiplexedChannel) -> ChannelStats:
    stats = channel.stats
    assert stats is not None, f"no counters for {channel!r}"
    return stats


def _text(message: bytes | str) -> str:
    return message if isinstance(message, str) else message.decode()


def _session(session: MuxSession | None) -> MuxSession:
    assert session is not None, "no multiplexer on this connection"
    return session


async def _sessions() -> tuple[Any, Any, MuxSession, MuxSession]:
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb


async def _two_readers(receiver: DataChannel | MultiplexedChannel,
                       send: Any, close: Any) -> dict[str, Any]:
    """Two concurrent receive() calls get one message each, in call order; then two
    more are pending when the channel closes, and both end with ConnectionClosedError."""
    first = asyncio.ensure_future(receiver.receive())
    second = asyncio.ensure_future(receiver.receive())
    await asyncio.sleep(0.05)
    await send("one")
    await send("two")
    got = [await asyncio.wait_for(first, 5), await asyncio.wait_for(second, 5)]
    third = asyncio.ensure_future(receiver.receive())
    fourth = asyncio.ensure_future(receiver.receive())
    await asyncio.sleep(0.05)
    close()
    ends = []
    for pending in (third, fourth):
        try:
            ends.append(repr(await asyncio.wait_for(pending, 5)))
        except ConnectionClosedError as exc:
            ends.append(type(exc).__name__)
        except TimeoutError:
            ends.append("still waiting 5 s after the close")
    return {"got": got, "ends": ends}


async def concurrent_receive() -> dict[str, Any]:
    a, b, ma, mb = await _sessions()
    local = ma.create_multiplexed_channel(label="orders")
    await local.send("hello")
    peer = await mb.accept(5)
    assert await peer.receive() == "hello"
    mux = await _two_readers(peer, local.send, local.close)

    raw_a = a.create_data_channel("raw", negotiated=True, id=7)
    raw_b = b.create_data_channel("raw", negotiated=True, id=7)
    await asyncio.gather(raw_a.wait_open(5), raw_b.wait_open(5))
    raw = await _two_readers(raw_b, raw_a.send, raw_b.close)
    a.close()
    b.close()
    return {"mux": mux, "raw": raw}


async def unreliable_close_drains(rounds: int = 3, count: int = 60) -> list[dict[str, Any]]:
    """``count`` messages on an unreliable channel, then close(): what arrives."""
    a, b, ma, mb = await _sessions()
    out = []
    for r in range(rounds):
        sender = ma.create_multiplexed_channel(label=f"ticks-{r}", reliability=UNRELIABLE)
        for i in range(count):
            await sender.send(f"{r}:{i}")
        sender.close()
        receiver = await mb.accept(5)
        got = [m async for m in receiver]
        stats = receiver.stats
        out.append({"received": len(got), "distinct": len(set(got)),
                    "lost": stats.messages_lost if stats else None,
                    "state": receiver.state, "error": repr(receiver.error),
                    "protocol_errors": [str(e) for e in mb.protocol_errors]})
    a.close()
    b.close()
    return out


async def reserved_channels_never_reach_accept() -> dict[str, Any]:
    a, b, ma, mb = await _sessions()
    # The probe channel arrives before the application channel and before anyone
    # serves it (the dashboard installs its responder a tick later).
    ma.create_multiplexed_channel(label="pyapp-probe", reliability=UNRELIABLE)
    ma.create_multiplexed_channel(label="app")
    first = await mb.accept(5)
    try:
        second: str | None = (await mb.accept(0.5)).label
    except OperationTimeout:
        second = None
    served: list[str] = []
    mb.serve_reserved("pyapp-probe", lambda channel: served.append(channel.label))
    ma.create_multiplexed_channel(label="pyapp-probe")  # a later one goes to the handler too
    # Two concurrent accept() calls get one channel each.
    waiters = [asyncio.ensure_future(mb.accept(5)) for _ in range(2)]
    await asyncio.sleep(0.05)
    ma.create_multiplexed_channel(label="x")
    ma.create_multiplexed_channel(label="y")
    labels = sorted([(await w).label for w in waiters])
    out = {"first": first.label, "second": second, "served": served, "labels": labels}
    a.close()
    b.close()
    return out


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def protocol_errors_are_logged() -> dict[str, Any]:
    """A bad frame for a channel resets it and is logged once, in the page too."""
    from pyapp.core.framing import FrameType, encode_frame

    capture = _Capture()
    logger = logging.getLogger("pyapp.mux")
    logger.addHandler(capture)
    try:
        a, b, ma, mb = await _sessions()
        victim = ma.create_multiplexed_channel(label="victim")
        await victim.send(b"x")
        peer = await mb.accept(5)
        bad = encode_frame(FrameType.ACK, peer.channel_id, 0, 77)  # ACK for nothing sent
        for _ in range(3):
            ma.reliable.send_nowait(bad)
        await asyncio.sleep(0.5)
        out = {"logged": list(capture.messages), "state": victim.state}
        a.close()
        b.close()
        return out
    finally:
        logger.removeHandler(capture)


# ------------------------------------------------------------------ moved from strings


async def open_send_receive_both_ways_and_id_parity() -> Any:
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
           "got_a": _text(got_a), "parity_error": parity_error,
           "stats": [_stats(ca).messages_sent, _stats(cb).messages_received],
           "states": [ca.state, cb.state]}
    a.close()
    b.close()
    return out



async def eight_channels_256_mib_mixed_priorities_and_reliabilities() -> Any:
    import js
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    specs = [(p, r) for p in (P.VERY_LOW, P.LOW, P.MEDIUM, P.HIGH) for r in ("reliable", "unreliable")]
    TOTAL = 256 * 1024 * 1024
    reliable_share = TOTAL // 6          # the reliable channels carry most of the bytes
    unreliable_share = TOTAL // 12
    sent_hash, recv_hash, recv_counts, corrupt = {}, {}, {}, {}
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
    expected_msgs: dict[str, int] = {}
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
    for (ch, kind), n in zip(channels, counts, strict=True):
        stats = _stats(ch)
        out["channels"][ch.label] = {
            "kind": kind, "sent": n, "received": recv_counts[ch.label], "corrupt": corrupt[ch.label],
            "hash_ok": kind != "reliable" or sent_hash[ch.label] == recv_hash[ch.label].hexdigest(),
            "dropped": (stats.messages_dropped + _stats(peers[ch.label]).messages_incomplete
                        + _stats(peers[ch.label]).messages_lost),
            "bytes": stats.bytes_sent}
    out["errors"] = [str(e) for e in ma.protocol_errors + mb.protocol_errors]
    a.close()
    b.close()
    return out



async def garbage_frames_reset_one_channel_others_keep_flowing() -> Any:
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
    ma.reliable.send_nowait(b"\xff" * 3)
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
    a.close()
    b.close()
    return out



async def priority_hint_is_feature_detected() -> Any:
    from pyapp.browser import PeerConnection
    from pyapp.browser.mux import supports_priority_hint
    pc = PeerConnection(signal=lambda m: None)
    ch = pc.create_data_channel("hinted", priority="high")
    import js
    has = bool(js.Reflect.has(ch.js_channel, "priority"))
    pc.close()
    return ({"detected": supports_priority_hint(), "has": has})



async def reliable_channels_resume_on_a_fresh_connection_without_loss_or_duplicates(
        priority: str = "MEDIUM") -> Any:
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    ch = a.create_multiplexed_channel(label="orders", priority=P.__members__[priority])
    transport = ma.mux.transport_of(ch.channel_id).name
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
    sa, sb = _session(a.detach_multiplexer()), _session(b.detach_multiplexer())
    unacked_at_loss = sa.stats().replay_bytes
    a.close()
    b.close()
    await asyncio.sleep(0.2)
    got_during_outage = len(seqs)
    a2, b2 = await connected_pair()
    a2.adopt_multiplexer(sa)
    b2.adopt_multiplexer(sb)
    await producer
    await asyncio.wait_for(all_in, 60)
    await asyncio.sleep(0.2)
    out = {"count": len(seqs), "unique": len(set(seqs)), "in_order": seqs == sorted(seqs),
           "sha_ok": sent.hexdigest() == received.hexdigest(), "unacked_at_loss": unacked_at_loss,
           "duplicates_dropped": _stats(peer).duplicates_ignored,
           "state": ch.state, "got_during_outage": got_during_outage, "transport": transport}
    a2.close()
    b2.close()
    return out



async def peer_gone_for_good_fails_unacknowledged_sends_loudly() -> Any:
    from pyapp.exceptions import PyAppError
    a, b = await connected_pair()
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    ch = a.create_multiplexed_channel(label="orders")
    await ch.wait_accepted(5)
    sa = _session(a.detach_multiplexer())
    b.close()
    a.close()  # the peer is gone; our session waits for a resume that never comes
    for i in range(5):
        await ch.send(f"order {i}".encode())   # queued for replay
    failures = sa.fail("peer gone for good")
    try:
        await ch.send(b"late")
        late = None
    except PyAppError as exc:
        late = type(exc).__name__
    return ({"undelivered": [_text(m) for f in failures for m in f.messages],
                "error": type(failures[0].error).__name__ if failures else None, "late": late,
                "state": ch.state})



async def power_saving_pauses_bulk_and_unreliable_low_priority() -> Any:
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
    out = {"urgent": _text(urgent_got), "was_blocked": was_blocked, "bulk": _text(bulk_got),
           "tick": _text(tick_got), "paused_drops": ma.paused_drops}
    a.close()
    b.close()
    return out



async def peer_creating_its_session_late_loses_nothing() -> Any:
    a, b = await connected_pair()
    a.multiplexer()  # only a creates its session now
    ch = a.create_multiplexed_channel(label="early")
    sends = [asyncio.ensure_future(ch.send(f"m{i}".encode())) for i in range(5)]
    await asyncio.sleep(1.0)          # a's negotiated channels are open; b has none yet
    mb = b.multiplexer()
    peer = await mb.accept(10)
    got = [_text(await peer.receive()) for _ in range(5)]
    await asyncio.gather(*sends)
    out = {"got": got, "label": peer.label}
    a.close()
    b.close()
    return out


async def _bulk_and_urgent(**options: Any) -> tuple[Any, Any, MuxSession, MuxSession,
                                      MultiplexedChannel, MultiplexedChannel, dict[str, MultiplexedChannel]]:
    a, b = await connected_pair()
    ma, mb = a.multiplexer(**options), b.multiplexer(**options)
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    bulk = ma.create_data_channel_with_priority("bulk", P.VERY_LOW)
    urgent = ma.create_data_channel_with_priority("urgent", P.HIGH)
    await asyncio.gather(bulk.wait_accepted(10), urgent.wait_accepted(10))
    peers = {}
    for _ in range(2):
        ch = await mb.accept(5)
        peers[ch.label] = ch
    return a, b, ma, mb, bulk, urgent, peers


async def urgent_frame_overtakes_a_full_send_buffer() -> dict[str, Any]:
    """With the reliable transport's buffer full of bulk data (and more bulk queued in
    the multiplexer), a HIGH message still leaves at the next pump, as a message of its
    own; then everything arrives intact. Without the urgent transport (as with a peer
    that has no pyapp-mux-h), so the HIGH message shares the reliable one."""
    a, b, ma, mb, bulk, urgent, peers = await _bulk_and_urgent(urgent_transport=False)
    got: dict[str, list[bytes | str]] = {"bulk": [], "urgent": []}
    for label, ch in peers.items():
        ch.events.on("message", got[label].append)
    # All synchronous: nothing drains the browser's buffer meanwhile.
    for i in range(16):
        bulk.send_nowait(bytes([i]) * 65536)
    ma._pump()
    transport = ma.reliable
    out: dict[str, Any] = {"high": transport.high_water, "buffered": transport.buffered_amount}
    messages, sent = transport.messages_sent, transport.bytes_sent
    urgent.send_nowait(b"ping")
    ma._pump()
    out.update(urgent_sent=_stats(urgent).messages_sent, bulk_queued=_stats(bulk).queued_bytes,
               messages=transport.messages_sent - messages, bytes=transport.bytes_sent - sent)
    for _ in range(500):
        if len(got["bulk"]) == 16 and got["urgent"]:
            break
        await asyncio.sleep(0.02)
    out.update(urgent_got=[_text(m) for m in got["urgent"]],
               bulk_ok=[m == bytes([i]) * 65536 for i, m in enumerate(got["bulk"])],
               errors=[str(e) for e in ma.protocol_errors + mb.protocol_errors])
    a.close()
    b.close()
    return out


async def received_batch_is_worked_through_high_first() -> dict[str, Any]:
    """What a busy page finds waiting: bulk messages, then a HIGH one, in one batch. The
    HIGH message is delivered first and its echo leaves before the bulk is processed;
    each channel keeps its order, and the session goes on normally."""
    from pyapp.browser.timer import now

    # Without the urgent transport: the HIGH frames arrive in the same batch as the bulk.
    a, b, ma, mb, bulk, urgent, peers = await _bulk_and_urgent(urgent_transport=False)
    order: list[str] = []
    at_first_bulk: list[int] = []
    sends_before = mb.reliable.messages_sent

    def on_bulk(message: bytes | str) -> None:
        if not at_first_bulk:
            at_first_bulk.append(mb.reliable.messages_sent - sends_before)
        assert isinstance(message, bytes)
        order.append(f"bulk {message[:1].hex()} {len(message)}")

    def on_urgent(message: bytes | str) -> None:
        order.append(f"urgent {_text(message)}")
        peers["urgent"].send_nowait(message)  # the echo

    peers["bulk"].events.on("message", on_bulk)
    peers["urgent"].events.on("message", on_urgent)
    echoes: list[bytes | str] = []
    urgent.events.on("message", echoes.append)
    # Frames straight from a's multiplexer, as its transmitter would pack them (one
    # message per transport run, at most 64 KiB), bulk sent before the HIGH message.
    t = now()
    for i in range(4):
        ma.mux.send(bulk.channel_id, bytes([i]) * 40_000, t)
    frames = list(iter(lambda: ma.mux.next_frame(t), None))
    ma.mux.send(urgent.channel_id, "ping", t)
    frames += list(iter(lambda: ma.mux.next_frame(t), None))
    messages: list[bytes | memoryview | str] = []
    current = b""
    for frame in frames:
        if current and len(current) + len(frame.data) > 65536:
            messages.append(current)
            current = b""
        current += frame.data
    messages.append(current)
    mb._on_frames(messages)
    for _ in range(250):
        if echoes and not _stats(bulk).unacked_messages:
            break
        await asyncio.sleep(0.02)
    out = {"messages": len(messages), "order": order, "sent_before_bulk": at_first_bulk,
           "echoes": [_text(m) for m in echoes], "unacked": _stats(bulk).unacked_messages,
           "errors": [str(e) for e in ma.protocol_errors + mb.protocol_errors]}
    a.close()
    b.close()
    return out
