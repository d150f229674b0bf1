"""Page side of the urgent-transport tests in tests/browser/test_mux.py: HIGH reliable
channels on ``pyapp-mux-h`` (SCTP stream 1002), and a peer that has no such stream."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import DataChannelPriority as P
from pyapp.browser.mux import MultiplexedChannel, MuxSession
from pyapp.core.mux import Reliability
from tests.pyodide.mux_cases import _bulk_and_urgent

UNRELIABLE = Reliability(ordered=False, max_retransmits=0)


async def _sessions(a_options: dict[str, Any], b_options: dict[str, Any]
                    ) -> tuple[Any, Any, MuxSession, MuxSession]:
    a, b = await connected_pair()
    ma, mb = a.multiplexer(**a_options), b.multiplexer(**b_options)
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    return a, b, ma, mb


def _sent(session: MuxSession) -> dict[str, int]:
    """Messages sent so far on each underlying data channel."""
    out = {"reliable": session.reliable.messages_sent, "unreliable": session.unreliable.messages_sent}
    if session.urgent is not None:
        out["urgent"] = session.urgent.messages_sent
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


async def _round_trip(ma: MuxSession, mb: MuxSession, label: str, priority: P,
                      reliability: Reliability = Reliability.RELIABLE) -> dict[str, Any]:
    """Open a channel from a, send 3 messages each way, close it; what went where."""
    before_a, before_b = _sent(ma), _sent(mb)
    ch: MultiplexedChannel = ma.create_data_channel_with_priority(label, priority, reliability)
    peer = await mb.accept(5)
    for i in range(3):
        await ch.send(f"{label} {i}")
    got_b = [await asyncio.wait_for(peer.receive(), 5) for _ in range(3)]
    for i in range(3):
        await peer.send(f"re {i}")
    got_a = [await asyncio.wait_for(ch.receive(), 5) for _ in range(3)]
    transport = ma.mux.transport_of(ch.channel_id).name
    peer_transport = mb.mux.transport_of(peer.channel_id).name
    ch.close()
    for _ in range(250):  # the two-way CLOSE
        if ch.state == peer.state == "closed":
            break
        await asyncio.sleep(0.02)
    return {"transport": transport, "peer_transport": peer_transport, "got_b": got_b,
            "got_a": got_a, "state": [ch.state, peer.state],
            "a_sent": _delta(before_a, _sent(ma)), "b_sent": _delta(before_b, _sent(mb))}


async def high_channels_ride_the_urgent_transport() -> dict[str, Any]:
    """Both sides have pyapp-mux-h: a HIGH reliable channel's every frame (OPEN, DATA,
    ACCEPT, ACKs, CLOSEs) rides it; MEDIUM and unreliable HIGH channels do not."""
    a, b, ma, mb = await _sessions({}, {})
    for _ in range(100):  # normally already true when wait_open returns
        if ma.urgent_transport and mb.urgent_transport:
            break
        await asyncio.sleep(0.01)
    out: dict[str, Any] = {"up": [ma.urgent_transport, mb.urgent_transport]}
    out["high"] = await _round_trip(ma, mb, "orders", P.HIGH)
    out["medium"] = await _round_trip(ma, mb, "bulk", P.MEDIUM)
    out["unreliable_high"] = await _round_trip(ma, mb, "game", P.HIGH, UNRELIABLE)
    out["errors"] = [str(e) for e in ma.protocol_errors + mb.protocol_errors]
    a.close()
    b.close()
    return out


async def a_peer_without_the_urgent_transport(old_side: str) -> dict[str, Any]:
    """One side acts as an older pyapp (``urgent_transport=False``: no pyapp-mux-h, so its
    browser drops what arrives on stream 1002). Nothing changes for it: HIGH channels
    opened by either side ride the reliable transport, and the hellos on the urgent
    stream cost nothing else."""
    old = {"urgent_transport": False}
    a, b, ma, mb = await _sessions(old if old_side == "a" else {}, old if old_side == "b" else {})
    await asyncio.sleep(0.5)  # time for urgent hellos that must go unanswered
    out: dict[str, Any] = {"up": [ma.urgent_transport, mb.urgent_transport]}
    out["a_opens"] = await _round_trip(ma, mb, "orders", P.HIGH)
    out["b_opens"] = await _round_trip(mb, ma, "fills", P.HIGH)
    out["errors"] = [str(e) for e in ma.protocol_errors + mb.protocol_errors]
    a.close()
    b.close()
    return out


async def urgent_message_skips_the_queued_bulk() -> dict[str, Any]:
    """The reliable transport's buffer is full of bulk data and more bulk waits in the
    multiplexer: a HIGH message leaves on pyapp-mux-h at the next pump and arrives
    while the bulk (sent before it) is still on its way."""
    a, b, ma, mb, bulk, urgent, peers = await _bulk_and_urgent()
    got: list[tuple[str, int]] = []
    peers["bulk"].events.on("message", lambda m: got.append(("bulk", len(m))))
    peers["urgent"].events.on("message", lambda m: got.append(("urgent", len(m))))
    for i in range(16):  # the send queue's limit (1 MiB)
        bulk.send_nowait(bytes([i]) * 65536)
    ma._pump()
    before = _sent(ma)
    buffered, high = ma.reliable.buffered_amount, ma.reliable.high_water
    urgent.send_nowait(b"ping")
    ma._pump()
    sent = _delta(before, _sent(ma))
    for _ in range(500):
        if len(got) == 17:
            break
        await asyncio.sleep(0.02)
    position = [kind for kind, _ in got].index("urgent") if ("urgent", 4) in got else -1
    out = {"buffered": buffered, "high": high, "sent": sent, "position": position, "count": len(got),
           "bulk_sizes": sorted({size for kind, size in got if kind == "bulk"}),
           "errors": [str(e) for e in ma.protocol_errors + mb.protocol_errors]}
    a.close()
    b.close()
    return out


async def urgent_inbox_is_taken_before_a_bulk_batch() -> dict[str, Any]:
    """A HIGH message waiting in pyapp-mux-h's JS inbox when a batch of bulk arrives on
    pyapp-mux is delivered first, and its echo leaves before the bulk is worked through
    (the two inboxes are handed over by separate tasks, so triage alone cannot)."""
    from pyapp.browser.timer import now

    a, b, ma, mb, bulk, urgent, peers = await _bulk_and_urgent()
    order: list[str] = []
    assert mb.urgent is not None
    echoes_before_bulk: list[int] = []
    urgent_sent = mb.urgent.messages_sent

    def on_bulk(message: bytes | str) -> None:
        if not echoes_before_bulk:
            echoes_before_bulk.append(mb.urgent.messages_sent - urgent_sent)  # type: ignore[union-attr]
        order.append(f"bulk {len(message)}")

    def on_urgent(message: bytes | str) -> None:
        order.append(f"urgent {message!r}")
        peers["urgent"].send_nowait(message)

    peers["bulk"].events.on("message", on_bulk)
    peers["urgent"].events.on("message", on_urgent)
    t = now()
    for i in range(3):
        ma.mux.send(bulk.channel_id, bytes([i]) * 40_000, t)
    bulk_frames = [f.data for f in iter(lambda: ma.mux.next_frame(t), None)]
    ma.mux.send(urgent.channel_id, "ping", t)
    urgent_frames = [f.data for f in iter(lambda: ma.mux.next_frame(t), None)]
    waiting: list[bytes | memoryview | str] = [b"".join(urgent_frames)]

    def flush_received() -> None:  # what pyapp-mux-h's JS inbox hands over when flushed
        batch = waiting.copy()
        waiting.clear()
        if batch:
            mb._on_urgent_frames(batch)

    mb.urgent.flush_received = flush_received  # type: ignore[method-assign]
    mb._on_shared_frames([bytes(f) for f in bulk_frames])
    out = {"order": order, "echoes_before_bulk": echoes_before_bulk,
           "transport": ma.mux.transport_of(urgent.channel_id).name,
           "errors": [str(e) for e in ma.protocol_errors + mb.protocol_errors]}
    a.close()
    b.close()
    return out
