"""Signaling-server scenarios, run in-process (unit) and against the real server process (e2e).

Each scenario is ``async def case(base_url: str) -> None`` and asserts on what the
server sends. Every bad-input case also checks that a bystander client in
another conversation keeps working.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

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
    async def connect(cls, base_url: str) -> Client:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(base_url.replace("http", "ws", 1) + "/ws", max_msg_size=0)
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
        """Wait for the server to close us; returns (code, reason)."""
        while True:
            msg = await self.ws.receive(timeout)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return self.ws.close_code, str(msg.extra or "")
            if msg.type == aiohttp.WSMsgType.ERROR:
                return self.ws.close_code, str(msg.data)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def room() -> str:
    return "t-" + uuid.uuid4().hex[:12]


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
    await expect_error(base_url, "{not json", "bad-message")


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
    code, reason = await bad.closed()
    assert code == 1009, (code, reason)
    await still_relaying(a, b)
    for c in (bad, a, b):
        await c.close()


@case
async def flooding_client_is_limited_then_closed(base_url: str) -> None:
    a, b = await bystanders(base_url)
    bad = await Client.connect(base_url)
    await bad.join(room())
    # 160 is past the burst (100) plus the strikes (20), and few enough that the
    # server has read everything before it closes (unread data would make the
    # kernel reset the connection and discard the server's last messages).
    for i in range(160):
        if bad.ws.closed:
            break
        try:
            await bad.send({"type": "ping", "id": i})
        except (ConnectionError, RuntimeError):
            break
    kinds: set[str] = set()
    code = None
    while True:
        msg = await bad.ws.receive(5)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            kinds.add(data.get("code") or data["type"])
        else:
            code = bad.ws.close_code
            break
    assert "rate-limited" in kinds, kinds
    assert code == 1008, code
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
