"""Page side of tests/browser/test_webrtc.py: the PeerConnection / DataChannel wrappers."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser import Connection, DataChannel, PeerConnection
from pyapp.browser._ffi import live_proxies
from pyapp.browser.loopback import connected_pair, loopback_pair
from pyapp.exceptions import BrowserError, LocalProtocolError, MessageTooLargeError


def _first_channel(pc: PeerConnection | Connection) -> asyncio.Future[DataChannel]:
    got: asyncio.Future[DataChannel] = asyncio.get_event_loop().create_future()

    def arrived(channel: DataChannel) -> None:
        if not got.done():
            got.set_result(channel)

    pc.events.on("datachannel", arrived)
    return got


def version() -> str:
    import pyapp

    return pyapp.__version__


async def exchange_both_ways() -> dict[str, Any]:
    a, b = loopback_pair()
    got = _first_channel(b)
    ca = a.create_data_channel("chat")
    await a.wait_connected(10)
    cb = await asyncio.wait_for(got, 10)
    await ca.wait_open(5)
    await ca.send("hi from a")
    await ca.send(b"\x00\x01bytes")
    await cb.send("hi from b")
    msgs_b = [await cb.receive(), await cb.receive()]
    msg_a = await ca.receive()
    out = {"b": [m if isinstance(m, str) else list(m) for m in msgs_b], "a": msg_a,
           "states": [a.connection_state, b.connection_state],
           "label": cb.label, "mms": a.max_message_size}
    a.close()
    b.close()
    return out


async def in_order(count: int) -> bool:
    a, b = loopback_pair()
    got = _first_channel(b)
    ca = a.create_data_channel("seq")
    cb = await asyncio.wait_for(got, 10)
    for i in range(count):
        await ca.send(i.to_bytes(4, "big") * 25)
    received = []
    for _ in range(count):
        message = await cb.receive()
        assert isinstance(message, bytes)
        received.append(int.from_bytes(message[:4], "big"))
    a.close()
    b.close()
    return received == list(range(count))


async def glare() -> dict[str, Any]:
    a, b = loopback_pair()
    seen: dict[str, list[str]] = {"a": [], "b": []}
    a.events.on("datachannel", lambda ch: seen["a"].append(ch.label))
    b.events.on("datachannel", lambda ch: seen["b"].append(ch.label))
    errors: list[str] = []
    story: list[str] = []   # what each side did, for the assertion message
    for name, pc in (("a", a), ("b", b)):
        pc.peer.events.on("error", lambda e, name=name: errors.append(f"{name}: {e!r}"[:300]))
        pc.peer.events.on("signalingstatechange", lambda s, name=name: story.append(f"{name} {s}"))
        pc.peer.events.on("iceconnectionstatechange", lambda s, name=name: story.append(f"{name} ice {s}"))
        original = pc.peer.handle_signal

        async def logged(message: dict[str, Any], name: str = name, original: Any = original) -> None:
            kind = message["description"]["type"] if "description" in message else "candidate"
            story.append(f"{name} <- {kind}")
            try:
                await original(message)
            except Exception as exc:
                story.append(f"{name} failed {kind}: {exc!r}"[:200])
                raise

        pc.peer.handle_signal = logged  # type: ignore[method-assign]
    ca = a.create_data_channel("from-a")  # both sides negotiate at the same time
    cb = b.create_data_channel("from-b")
    try:
        await asyncio.gather(ca.wait_open(10), cb.wait_open(10))
        await asyncio.gather(a.wait_connected(10), b.wait_connected(10))
    except TimeoutError:
        # what each side got to, for the assertion message
        out = {"timeout": True, "errors": errors, "story": story,
               "signaling": [a.peer.signaling_state, b.peer.signaling_state],
               "state": [a.connection_state, b.connection_state],
               "channels": [ca.ready_state, cb.ready_state],
               "gathering": [str(a.peer.js_pc.iceGatheringState), str(b.peer.js_pc.iceGatheringState)],
               "local_candidates": [str(pc.peer.js_pc.localDescription.sdp).count("a=candidate")
                                    for pc in (a, b)]}
        a.close()
        b.close()
        return out
    for _ in range(50):
        if seen["a"] and seen["b"]:
            break
        await asyncio.sleep(0.05)
    out = {"seen": seen, "state": [a.connection_state, b.connection_state],
           "errors": errors + [str(e) for e in [*a.events.recent_errors, *b.events.recent_errors]]}
    a.close()
    b.close()
    return out


async def backpressure(high_water: int, chunk_size: int, chunks: int) -> dict[str, int]:
    a, b = loopback_pair()
    got = _first_channel(b)
    ca = a.create_data_channel("bulk")
    ca.high_water = high_water
    cb = await asyncio.wait_for(got, 10)
    total = chunk_size * chunks
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < total:
            received += len(await cb.receive())

    consumer = asyncio.ensure_future(consume())
    chunk = bytes(chunk_size)
    peak = 0
    for _ in range(chunks):
        await ca.send(chunk)
        peak = max(peak, ca.buffered_amount)
    await asyncio.wait_for(consumer, 60)
    a.close()
    b.close()
    return {"peak": peak, "received": received}


async def oversize_send() -> dict[str, Any]:
    a, b = loopback_pair()
    got = _first_channel(b)
    ca = a.create_data_channel("big")
    cb = await asyncio.wait_for(got, 10)
    await ca.wait_open(5)
    limit = ca.max_message_size
    error = None
    try:
        await ca.send(bytes(limit + 1))
    except MessageTooLargeError as exc:
        error = [exc.size, exc.limit]
    await ca.send(b"still alive")
    after = await cb.receive()
    assert isinstance(after, bytes)
    out = {"error": error, "limit": limit, "after": after.decode(), "state": ca.ready_state}
    a.close()
    b.close()
    return out


async def js_errors() -> dict[str, str]:
    pc = PeerConnection(signal=lambda m: None)
    out = {}
    try:
        await pc.handle_signal({"description": {"type": "answer", "sdp": "garbage"}})
    except BrowserError as exc:
        out["browser"] = exc.name
    try:
        pc.create_data_channel("x", max_retransmits=1, max_packet_life_time=5)
    except ValueError as exc:  # InvalidArgumentError is a ValueError and a LocalProtocolError
        out["local"] = f"{type(exc).__name__}: {exc}"
        out["is_local"] = str(isinstance(exc, LocalProtocolError))
    pc.close()
    try:
        pc.create_data_channel("late")
    except LocalProtocolError as exc:
        out["closed"] = type(exc).__name__
    return out


async def close_releases_proxies(rounds: int) -> dict[str, int]:
    before = live_proxies()
    during = before
    for _ in range(rounds):
        a, b = await connected_pair()
        ch = a.create_data_channel("x")
        await ch.wait_open(10)
        during = live_proxies()
        a.close()
        b.close()
    await asyncio.sleep(0.1)
    return {"before": before, "during": during, "after": live_proxies()}


async def glare_on_ice_restart() -> dict[str, Any]:
    """Connected; both sides restart ICE at the same moment, so both offer at once and
    the polite side rolls its offer back (perfect negotiation's glare path)."""
    a, b = await connected_pair()
    errors: list[str] = []
    story: list[str] = []
    for name, pc in (("a", a), ("b", b)):
        pc.peer.events.on("error", lambda e, name=name: errors.append(f"{name}: {e!r}"[:300]))
        pc.peer.events.on("signalingstatechange", lambda s, name=name: story.append(f"{name} {s}"))
    ca = a.create_data_channel("after")
    got: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
    b.events.on("datachannel", lambda ch: None if got.done() else got.set_result(ch))
    await ca.wait_open(10)
    cb = await asyncio.wait_for(got, 10)
    a.restart_ice()
    b.restart_ice()
    await asyncio.sleep(0)
    for _ in range(200):
        if "b have-local-offer" in story and a.signaling_state == b.signaling_state == "stable" \
                and a.ice_connection_state in ("connected", "completed") \
                and b.ice_connection_state in ("connected", "completed"):
            break
        await asyncio.sleep(0.05)
    await ca.send(b"still there")
    reply = await asyncio.wait_for(cb.receive(), 10)
    out = {"errors": errors, "story": story, "reply": reply == b"still there",
           "signaling": [a.signaling_state, b.signaling_state],
           "ice": [a.ice_connection_state, b.ice_connection_state]}
    a.close()
    b.close()
    return out
