"""Page side of tests/browser/test_mux.py (called with ``pypage.call``): the multiplexer
over real RTCDataChannels."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pyapp.browser.datachannel import DataChannel
from pyapp.browser.loopback import connected_pair
from pyapp.browser.mux import MultiplexedChannel, MuxSession
from pyapp.core.mux import Reliability
from pyapp.exceptions import ConnectionClosedError, OperationTimeout

UNRELIABLE = Reliability(ordered=False, max_retransmits=0)


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
