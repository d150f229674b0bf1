"""Page side of tests/browser/test_mux_batch.py: many small messages through the multiplexer
(``send_many``, packed frames, the ``messages`` event) over real RTCDataChannels."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser.loopback import connected_pair
from pyapp.exceptions import MessageTooLargeError


def _messages(n: int) -> list[bytes | str]:
    """Small binary and text messages, with a few larger than one 16 KiB fragment."""
    out: list[bytes | str] = []
    for i in range(n):
        if i % 997 == 0:
            out.append(bytes([i % 256]) * 40_000)
        elif i % 3 == 0:
            out.append(f"text {i}")
        else:
            out.append(i.to_bytes(4, "big") * (1 + i % 25))
    return out


async def send_many_delivers_everything_in_order_in_few_messages() -> dict[str, Any]:
    a, b = await connected_pair()
    # A small send queue: send_many must wait for the window several times.
    ma, mb = a.multiplexer(send_queue_limit=64 * 1024), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    sent = _messages(6000)
    results: dict[str, Any] = {}
    for mode in ("messages", "message", "inbox"):
        local = ma.create_multiplexed_channel(label=mode)
        peer = await mb.accept(10)
        got: list[bytes | str] = []
        batches: list[int] = []
        done = asyncio.get_event_loop().create_future()

        def on_batch(batch: list[bytes | str], got: list[bytes | str] = got,
                     batches: list[int] = batches, done: Any = done) -> None:
            batches.append(len(batch))
            got.extend(batch)
            if len(got) >= len(sent) and not done.done():
                done.set_result(None)

        def on_message(message: bytes | str, got: list[bytes | str] = got, done: Any = done) -> None:
            got.append(message)
            if len(got) >= len(sent) and not done.done():
                done.set_result(None)

        if mode == "messages":
            peer.events.on("messages", on_batch)
        elif mode == "message":
            peer.events.on("message", on_message)
        frames_before = ma.reliable.messages_sent
        await local.send_many(iter(sent))  # any iterable
        if mode == "inbox":
            got.extend([await asyncio.wait_for(peer.receive(), 10) for _ in sent])
        else:
            await asyncio.wait_for(done, 20)
        results[mode] = {
            "same": got == sent,
            "count": len(got),
            "batches": len(batches),
            "largest_batch": max(batches, default=0),
            "transport_messages": ma.reliable.messages_sent - frames_before,
            "stats_sent": local.stats.messages_sent if local.stats else None,
        }
    big = ma.create_multiplexed_channel(label="limit")
    peer = await mb.accept(10)
    error = None
    try:
        await big.send_many([b"before", bytes(200 << 20), b"never"])
    except MessageTooLargeError as exc:
        error = str(exc)
    results["too_large"] = {"error": error, "first": repr(await asyncio.wait_for(peer.receive(), 10))}
    a.close()
    b.close()
    return results
