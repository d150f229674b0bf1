"""Signaling-server scenarios, run in-process (unit) and against the real server process (e2e).

Each scenario is ``async def case(base_url: str) -> None`` and asserts on what the
server sends. Every bad-input case also checks that a bystander client in
another conversation keeps working.

Every client connects from its own loopback address (127.x.y.z: Linux routes the
whole 127/8 to lo), so the server's per-address limits see each test client as a
separate host, and a case that exercises a per-address limit shares one address
on purpose (``Client.connect(url, address=addr)``). The cases assume the
server's default limits (web.limits.Limits).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from web.limits import Limits

Case = Callable[[str], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


class Client:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.peer_id: str | None = None

    @classmethod
    async def connect(cls, base_url: str, address: str | None = None,
                      headers: dict[str, str] | None = None) -> Client:
        """Connect from ``address`` (default: a fresh loopback address of its own)."""
        connector = aiohttp.TCPConnector(local_addr=(address or fresh_address(), 0))
        session = aiohttp.ClientSession(connector=connector)
        try:
            ws = await session.ws_connect(base_url.replace("http", "ws", 1) + "/ws",
                                          max_msg_size=0, headers=headers)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text message, got {msg.type} {msg.data!r} {msg.extra!r}"
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """Skip other messages (e.g. peer-joined) until one of type ``kind``."""
        while True:
            msg = await self.recv(timeout)
            if msg["type"] == kind:
                return msg

    async def join(self, room: str, peer_id: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "join", "room": room}
        if peer_id:
            msg["peer_id"] = peer_id
        await self.send(msg)
        welcome = await self.recv_type("welcome")
        self.peer_id = welcome["peer_id"]
        return welcome

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close us; returns (code, reason). A reset fails the test."""
        code, reason, _ = await self.refusal(timeout)
        return code, reason

    async def refusal(self, timeout: float = 5.0) -> tuple[int | None, str, list[dict[str, Any]]]:
        """Read until the server's close: (close code, reason, messages received before it).

        The close frame must arrive intact: a reset or a transport error instead
        (what a socket closed with unread data produces) fails the test.
        """
        before: list[dict[str, Any]] = []
        while True:
            msg = await self.ws.receive(timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                before.append(json.loads(msg.data))
                continue
            assert msg.type == aiohttp.WSMsgType.CLOSE, (
                f"expected the server's close frame, got {msg.type} {msg.data!r} {msg.extra!r}")
            return msg.data, str(msg.extra or ""), before

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def room() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def fresh_address() -> str:
    """A loopback address other than 127.0.0.1, unlikely to be in use by another client."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def assert_refused(code: int | None, reason: str, before: list[dict[str, Any]],
                   error_code: str, close_code: int) -> None:
    """The refusal arrived whole: the error message (with a text), then the close naming it."""
    errors = [m for m in before if m.get("type") == "error"]
    assert errors and errors[-1]["code"] == error_code and errors[-1]["message"], before
    assert code == close_code, (code, reason)
    assert reason.startswith(error_code + ": ") and len(reason) > len(error_code) + 2, reason


async def bystanders(base_url: str) -> tuple[Client, Client]:
    """Two clients in their own room, to show bad input elsewhere does not affect them."""
    r = room()
    a, b = await Client.connect(base_url), await Client.connect(base_url)
    await a.join(r)
    await b.join(r)
    await a.recv_type("peer-joined")
    return a, b


async def still_relaying(a: Client, b: Client) -> None:
    token = uuid.uuid4().hex
    await a.send({"type": "signal", "to": b.peer_id, "data": {"token": token}})
    msg = await b.recv_type("signal")
    assert msg == {"type": "signal", "from": a.peer_id, "data": {"token": token}}


@case
async def join_relay_leave(base_url: str) -> None:
    r = room()
    a, b = await Client.connect(base_url), await Client.connect(base_url)
    wa = await a.join(r)
    assert wa["peers"] == [] and wa["room"] == r
    wb = await b.join(r)
    assert wb["peers"] == [a.peer_id]
    assert await a.recv_type("peer-joined") == {"type": "peer-joined", "peer_id": b.peer_id}
    await still_relaying(a, b)
    await still_relaying(b, a)
    await b.send({"type": "ping", "id": 42})
    assert await b.recv_type("pong") == {"type": "pong", "id": 42}
    await b.send({"type": "leave"})
    assert await a.recv_type("peer-left") == {"type": "peer-left", "peer_id": b.peer_id}
    await b.close()
    await a.close()


@case
async def disconnect_notifies_and_id_is_reused(base_url: str) -> None:
    r = room()
    a, b = await Client.connect(base_url), await Client.connect(base_url)
    await a.join(r)
    await b.join(r)
    old_id = b.peer_id
    await b.close()
    assert (await a.recv_type("peer-left"))["peer_id"] == old_id
    c = await Client.connect(base_url)
    welcome = await c.join(r, peer_id=old_id)
    assert welcome["peer_id"] == old_id, "a reconnecting client keeps its id when it is free"
    await c.close()
    await a.close()


async def expect_error(base_url: str, payload: Any, code: str, join_first: bool = True) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    if join_first:
        await bad.join(room())
    await bad.send(payload)
    err = await bad.recv_type("error")
    assert err["code"] == code, err
    assert err["message"]
    # The offender's connection still works after an error...
    await bad.send({"type": "ping", "id": 1})
    assert (await bad.recv_type("pong"))["id"] == 1
    # ...and nobody else noticed.
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def malformed_json(base_url: str) -> None:
    await expect_error(base_url, "{not json", "bad-json")


@case
async def non_finite_numbers_are_refused_not_relayed(base_url: str) -> None:
    r = room()
    a, b = await Client.connect(base_url), await Client.connect(base_url)
    await a.join(r)
    await b.join(r)
    for constant in ("NaN", "Infinity", "-Infinity"):
        await a.send(f'{{"type":"signal","to":"{b.peer_id}","data":{{"x":{constant}}}}}')
        err = await a.recv_type("error")
        assert err["code"] == "non-finite-number" and constant.lstrip("-") in err["message"], err
    # b got none of them: the next signal it sees is this one.
    await still_relaying(a, b)
    for c in (a, b):
        await c.close()


@case
async def too_deep_nesting(base_url: str) -> None:
    deep: Any = {}
    for _ in range(40):
        deep = {"d": deep}
    await expect_error(base_url, {"type": "signal", "to": "abcdef", "data": deep}, "too-deep")
    await expect_error(base_url, "[" * 20_000 + "]" * 20_000, "too-deep")


@case
async def not_an_object(base_url: str) -> None:
    await expect_error(base_url, "[1, 2, 3]", "bad-message")


@case
async def unknown_type(base_url: str) -> None:
    await expect_error(base_url, {"type": "teleport"}, "bad-message")


@case
async def bad_room_name(base_url: str) -> None:
    await expect_error(base_url, {"type": "join", "room": "../../etc"}, "bad-message", join_first=False)


@case
async def signal_without_data(base_url: str) -> None:
    await expect_error(base_url, {"type": "signal", "to": "abcdef", "data": "x"}, "bad-message")


@case
async def unknown_target(base_url: str) -> None:
    await expect_error(base_url, {"type": "signal", "to": "nobody-here", "data": {}}, "unknown-peer")


@case
async def signal_before_join(base_url: str) -> None:
    await expect_error(base_url, {"type": "signal", "to": "abcdef", "data": {}}, "not-joined",
                       join_first=False)


@case
async def double_join(base_url: str) -> None:
    await expect_error(base_url, {"type": "join", "room": "elsewhere"}, "already-joined")


@case
async def binary_message(base_url: str) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    await bad.ws.send_bytes(b"\x00\x01")
    assert (await bad.recv_type("error"))["code"] == "bad-message"
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def oversize_message_closes_with_reason(base_url: str) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    await bad.join(room())
    await bad.send({"type": "signal", "to": "abcdef", "data": {"sdp": "x" * (70 * 1024)}})
    assert_refused(*await bad.refusal(), "too-large", 1009)
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def invalid_utf8_closes_with_reason(base_url: str) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    # A text frame that is not UTF-8 (the public API only sends valid text).
    await bad.ws._writer.send_frame(b'{"type":"ping","id":"\xff"}', aiohttp.WSMsgType.TEXT)
    assert_refused(*await bad.refusal(), "bad-utf8", 1007)
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def flooding_client_is_limited_then_closed(base_url: str) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    await bad.join(room())
    # Far past the burst (100) plus the strikes (20), sent without waiting: the
    # server is still receiving when it decides to close, and must not reset the
    # socket under unread data (that would discard the error and the close).
    for i in range(2000):
        await bad.send({"type": "ping", "id": i})
    code, reason, before = await bad.refusal()
    assert "rate-limited" in {m.get("code") for m in before}, before
    assert_refused(code, reason, before, "flooding", 1008)
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def room_full(base_url: str) -> None:
    r = room()
    clients = []
    for _ in range(16):
        c = await Client.connect(base_url)
        await c.join(r)
        clients.append(c)
    extra = await Client.connect(base_url)
    await extra.send({"type": "join", "room": r})
    err = await extra.recv_type("error")
    assert err["code"] == "room-full" and err["ref"] == "join"
    await still_relaying(clients[0], clients[1])
    for c in [*clients, extra]:
        await c.close()


@case
async def connections_per_address(base_url: str) -> None:
    limit = Limits().connections_per_address
    addr = fresh_address()
    held = [await Client.connect(base_url, address=addr) for _ in range(limit)]
    for c in held[:3]:  # they work
        await c.send({"type": "ping", "id": 5})
        assert (await c.recv_type("pong"))["id"] == 5
    extra = await Client.connect(base_url, address=addr)
    assert_refused(*await extra.refusal(), "too-many-connections", 1008)
    await extra.close()
    other = await Client.connect(base_url)  # another address is not affected
    await other.send({"type": "ping", "id": 6})
    assert (await other.recv_type("pong"))["id"] == 6
    await held.pop().close()
    for _ in range(100):  # the server counts the close once it has processed it
        again = await Client.connect(base_url, address=addr)
        await again.send({"type": "ping", "id": 7})
        msg = await again.recv()
        if msg["type"] == "pong":
            break
        assert msg["code"] == "too-many-connections", msg
        await again.close()
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a freed connection slot was never given back")
    for c in [*held, again, other]:
        await c.close()


@case
async def joins_per_minute_per_address(base_url: str) -> None:
    limit = Limits().joins_per_minute
    r = room()
    host = await Client.connect(base_url)
    await host.join(r)  # the room exists: these joins create none
    addr = fresh_address()
    # Spread over connections so no connection's own message rate is what stops them.
    clients = [await Client.connect(base_url, address=addr) for _ in range(8)]
    joins = 0
    refused = None
    loop = asyncio.get_running_loop()
    start = loop.time()
    while refused is None and joins <= 2 * limit:
        for c in clients:
            await c.send({"type": "join", "room": r})
            msg = await c.recv()
            if msg["type"] == "error":
                refused = msg
                break
            assert msg["type"] == "welcome", msg
            joins += 1
            await c.send({"type": "leave"})
    # The bucket holds `limit` joins and refills limit/60 per second while this runs.
    allowed = limit + (loop.time() - start) * limit / 60 + 1
    assert refused is not None and limit <= joins <= allowed, (joins, allowed, refused)
    assert refused["code"] == "join-rate-limited" and refused["ref"] == "join", refused
    # Another address still joins.
    other = await Client.connect(base_url)
    await other.join(r)
    for c in [*clients, host, other]:
        await c.close()


@case
async def rooms_per_minute_per_address(base_url: str) -> None:
    limit = Limits().rooms_per_minute
    addr = fresh_address()
    clients = [await Client.connect(base_url, address=addr) for _ in range(4)]
    made = 0
    refused = None
    loop = asyncio.get_running_loop()
    start = loop.time()
    while refused is None and made <= 2 * limit:
        for c in clients:
            await c.send({"type": "join", "room": room()})
            msg = await c.recv()
            while msg["type"] not in ("welcome", "error"):
                msg = await c.recv()
            if msg["type"] == "error":
                refused = msg
                break
            made += 1
            await c.send({"type": "leave"})
    allowed = limit + (loop.time() - start) * limit / 60 + 1  # the refill while this runs
    assert refused is not None and limit <= made <= allowed, (made, allowed, refused)
    assert refused["code"] == "room-rate-limited" and refused["ref"] == "join", refused
    # Joining a room that exists creates nothing, so it is still allowed.
    r = room()
    host = await Client.connect(base_url)
    await host.join(r)
    welcome = await clients[0].join(r)
    assert welcome["peers"] == [host.peer_id]
    # And the refused join left no trace: nobody sees a member in the refused room.
    for c in [*clients, host]:
        await c.close()


@case
async def static_files_and_traversal(base_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base_url + "/") as r:
            assert r.status == 200
            assert "loader.js" in await r.text()
        async with s.get(base_url + "/pyodide/pyodide.asm.wasm") as r:
            assert r.status == 200 and r.content_type == "application/wasm"
        async with s.get(base_url + "/loader.js") as r:
            assert r.content_type in ("text/javascript", "application/javascript")
        async with s.get(base_url + "/%2e%2e/pyproject.toml") as r:
            assert r.status == 404
        async with s.get(base_url + "/../build.py") as r:
            assert r.status == 404


def run_case(name: str, base_url: str) -> None:
    """Run a case on its own thread (sync Playwright may own this thread's event loop)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(CASES[name](base_url), 60))
        except BaseException as exc:  # re-raised on the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"server-case-{name}")
    thread.start()
    thread.join(90)
    assert not thread.is_alive(), f"server case {name} hung"
    if errors:
        raise errors[0]
