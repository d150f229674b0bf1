"""The Python WebRTC layer in real Pyodide in headless Chromium."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_page_loads_only_from_its_own_origin(pypage):
    assert pypage.py("import pyapp; pyapp.__version__") == "0.1.0"
    assert pypage.requests, "no requests were recorded"
    assert pypage.foreign_requests() == []
    # The runtime really came from our server, not a CDN.
    assert any(u.endswith("/pyodide/pyodide.asm.wasm") for u in pypage.requests)


def test_connect_and_exchange_both_ways(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser.loopback import loopback_pair
        a, b = loopback_pair()
        got = asyncio.get_event_loop().create_future()
        b.events.on("datachannel", lambda ch: got.set_result(ch))
        ca = a.create_data_channel("chat")
        await a.wait_connected(10)
        cb = await asyncio.wait_for(got, 10)
        await ca.wait_open(5)
        await ca.send("hi from a")
        await ca.send(b"\\x00\\x01bytes")
        await cb.send("hi from b")
        msgs_b = [await cb.receive(), await cb.receive()]
        msg_a = await ca.receive()
        out = {"b": [m if isinstance(m, str) else list(m) for m in msgs_b], "a": msg_a,
               "states": [a.connection_state, b.connection_state],
               "label": cb.label, "mms": a.max_message_size}
        a.close(); b.close()
        json.dumps(out)
    """)
    assert result["b"] == ["hi from a", [0, 1, *b"bytes"]]
    assert result["a"] == "hi from b"
    assert result["states"] == ["connected", "connected"]
    assert result["label"] == "chat"
    assert result["mms"] >= 65536


def test_in_order_delivery_of_1000_messages(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser.loopback import loopback_pair
        a, b = loopback_pair()
        got = asyncio.get_event_loop().create_future()
        b.events.on("datachannel", lambda ch: got.set_result(ch))
        ca = a.create_data_channel("seq")
        cb = await asyncio.wait_for(got, 10)
        for i in range(1000):
            await ca.send(i.to_bytes(4, "big") * 25)
        received = [int.from_bytes((await cb.receive())[:4], "big") for _ in range(1000)]
        a.close(); b.close()
        json.dumps(received == list(range(1000)))
    """)
    assert result is True


def test_glare_both_sides_open_channels_at_once(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser.loopback import loopback_pair
        a, b = loopback_pair()
        seen = {"a": [], "b": []}
        a.events.on("datachannel", lambda ch: seen["a"].append(ch.label))
        b.events.on("datachannel", lambda ch: seen["b"].append(ch.label))
        ca = a.create_data_channel("from-a")   # both sides negotiate at the same time
        cb = b.create_data_channel("from-b")
        await asyncio.gather(ca.wait_open(10), cb.wait_open(10))
        await asyncio.gather(a.wait_connected(10), b.wait_connected(10))
        for _ in range(50):
            if seen["a"] and seen["b"]:
                break
            await asyncio.sleep(0.05)
        out = {"seen": seen, "state": [a.connection_state, b.connection_state],
               "errors": [str(e) for e in a.events.errors + b.events.errors]}
        a.close(); b.close()
        json.dumps(out)
    """)
    assert result["seen"] == {"a": ["from-b"], "b": ["from-a"]}
    assert result["state"] == ["connected", "connected"]
    assert result["errors"] == []


def test_backpressure_bounds_buffered_amount(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser.loopback import loopback_pair
        a, b = loopback_pair()
        got = asyncio.get_event_loop().create_future()
        b.events.on("datachannel", lambda ch: got.set_result(ch))
        ca = a.create_data_channel("bulk")
        ca.high_water = 256 * 1024
        cb = await asyncio.wait_for(got, 10)
        chunk = bytes(64 * 1024)
        peak = 0
        received = 0
        async def consume():
            global received
            while received < 8 * 1024 * 1024:
                received += len(await cb.receive())
        consumer = asyncio.ensure_future(consume())
        for _ in range(128):
            await ca.send(chunk)
            peak = max(peak, ca.buffered_amount)
        await asyncio.wait_for(consumer, 60)
        a.close(); b.close()
        json.dumps({"peak": peak, "received": received})
    """, timeout=90)
    assert result["received"] == 8 * 1024 * 1024
    # Never more than one message above the high-water mark.
    assert result["peak"] <= 256 * 1024 + 64 * 1024


def test_oversize_send_raises_and_channel_survives(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser.loopback import loopback_pair
        from pyapp.exceptions import MessageTooLargeError
        a, b = loopback_pair()
        got = asyncio.get_event_loop().create_future()
        b.events.on("datachannel", lambda ch: got.set_result(ch))
        ca = a.create_data_channel("big")
        cb = await asyncio.wait_for(got, 10)
        await ca.wait_open(5)
        limit = ca.max_message_size
        try:
            await ca.send(bytes(limit + 1))
            error = None
        except MessageTooLargeError as exc:
            error = [exc.size, exc.limit]
        await ca.send(b"still alive")
        after = await cb.receive()
        out = {"error": error, "limit": limit, "after": after.decode(), "state": ca.ready_state}
        a.close(); b.close()
        json.dumps(out)
    """)
    assert result["error"] == [result["limit"] + 1, result["limit"]]
    assert result["after"] == "still alive"
    assert result["state"] == "open"


def test_js_errors_become_pyapp_exceptions(pypage):
    result = pypage.pyjson("""
        import json
        from pyapp.browser import PeerConnection
        from pyapp.exceptions import BrowserError, LocalProtocolError
        pc = PeerConnection(signal=lambda m: None)
        out = {}
        try:
            await pc.handle_signal({"description": {"type": "answer", "sdp": "garbage"}})
        except BrowserError as exc:
            out["browser"] = exc.name
        try:
            pc.create_data_channel("x", max_retransmits=1, max_packet_life_time=5)
        except LocalProtocolError as exc:
            out["local"] = str(exc)
        pc.close()
        try:
            pc.create_data_channel("late")
        except LocalProtocolError as exc:
            out["closed"] = type(exc).__name__
        json.dumps(out)
    """)
    assert result["browser"] in ("InvalidStateError", "OperationError")
    assert "exclusive" in result["local"]
    assert result["closed"] == "ConnectionClosedError"


def test_close_releases_every_proxy(pypage):
    result = pypage.pyjson("""
        import asyncio, json
        from pyapp.browser._ffi import live_proxies
        from pyapp.browser.loopback import connected_pair
        before = live_proxies()
        for _ in range(5):
            a, b = await connected_pair()
            ch = a.create_data_channel("x")
            await ch.wait_open(10)
            during = live_proxies()
            a.close(); b.close()
        await asyncio.sleep(0.1)
        json.dumps({"before": before, "during": during, "after": live_proxies()})
    """, timeout=60)
    assert result["during"] > result["before"]
    assert result["after"] == result["before"]
