"""Several real server processes sharing rooms through a real redis-server (``--redis``).

Pages on different instances join one room, connect over WebRTC and exchange
data; an instance killed with SIGKILL leaves no ghost peers; room caps and
per-address limits hold across instances.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, PyPage, missing_prerequisite, new_pypage, wait_until
from tests.redis_server import Instance, RedisServer
from tests.server_cases import CASES, Client, assert_refused, fresh_address, run_case

pytestmark = pytest.mark.e2e

TTL = 2.0
"""Presence TTL of the test instances (heartbeats every TTL/3): bounds every wait below."""


def instance(redis_url: str, *extra: str) -> Instance:
    return Instance(redis_url, *extra, ttl=TTL)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        missing_prerequisite("redis-server is not installed (python3 build.py test installs it)")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[tuple[Instance, Instance]]:
    one, two = instance(redis_server.url), instance(redis_server.url)
    yield one, two
    one.stop()
    two.stop()


def members(redis_server: RedisServer, room: str) -> set[str]:
    import redis

    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        return set(r.hkeys(f"pyapp:room:{room}"))


def run_async(body: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    """Run CPython clients on their own thread (sync Playwright owns this thread's loop)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(body(), timeout))
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout + 30)
    assert not thread.is_alive(), "the clients hung"
    if errors:
        raise errors[0]


PAGE = "tests.pyodide.multi_instance_cases"
"""The page side: a signaling client and one peer connection per remote peer (a real module)."""


def join(page: PyPage, room: str) -> dict[str, Any]:
    result: dict[str, Any] = page.call(f"{PAGE}:join", room=room, timeout=30)
    return result


def received(page: PyPage) -> list[list[str]]:
    inbox: list[list[str]] = page.call(f"{PAGE}:inbox")
    return inbox


def events(page: PyPage) -> list[list[str]]:
    seen: list[list[str]] = page.call(f"{PAGE}:events")
    return seen


def chat(dialler: PyPage, answerer: PyPage, dialler_id: str, answerer_id: str) -> None:
    """The dialler connects to the answerer over WebRTC; one message each way."""
    dialler.call(f"{PAGE}:dial", peer=answerer_id, text=f"hello from {dialler_id}", timeout=40)
    wait_until(lambda: [dialler_id, f"hello from {dialler_id}"] in received(answerer), timeout=10)
    answerer.call(f"{PAGE}:reply", peer=dialler_id, text=f"hello back from {answerer_id}")
    wait_until(lambda: [answerer_id, f"hello back from {answerer_id}"] in received(dialler),
               timeout=10)
    for page in (dialler, answerer):
        assert page.call(f"{PAGE}:errors") == []
        assert page.call(f"{PAGE}:first_connection_state") == "connected"


def close(*pages: PyPage) -> None:
    for page in pages:
        foreign = page.foreign_requests()
        crashes = [c for c in page.console if c.startswith("pageerror")]
        page.page.context.close()
        assert not foreign, f"requests to other origins: {foreign}"
        assert not crashes, crashes


def test_pages_on_two_instances_connect_and_chat(chromium: Any, pair: tuple[Instance, Instance],
                                                 redis_server: RedisServer) -> None:
    one, two = pair
    room = "multi-" + uuid.uuid4().hex[:8]
    a = new_pypage(chromium, one)
    b = new_pypage(chromium, two)
    try:
        ja = join(a, room)
        jb = join(b, room)
        assert ja["peers"] == [] and jb["peers"] == [ja["id"]]
        wait_until(lambda: events(a) == [["joined", jb["id"]]], timeout=5)
        assert members(redis_server, room) == {ja["id"], jb["id"]}
        # Every offer, answer and ICE candidate crosses from one instance to the other.
        chat(b, a, jb["id"], ja["id"])
        b.call(f"{PAGE}:leave")
        wait_until(lambda: ["left", jb["id"]] in events(a), timeout=5)
        assert members(redis_server, room) == {ja["id"]}
    finally:
        close(a, b)


def test_killed_instance_leaves_no_ghosts_and_a_fresh_page_connects(
        chromium: Any, redis_server: RedisServer) -> None:
    survivor, doomed = instance(redis_server.url), instance(redis_server.url)
    room = "kill-" + uuid.uuid4().hex[:8]
    a = new_pypage(chromium, survivor)
    b = new_pypage(chromium, doomed)
    pages = [a, b]
    try:
        ja = join(a, room)
        jb = join(b, room)
        wait_until(lambda: events(a) == [["joined", jb["id"]]], timeout=5)
        time.sleep(TTL)  # heartbeats keep B present past its TTL while its instance lives
        assert members(redis_server, room) == {ja["id"], jb["id"]}
        assert a.call(f"{PAGE}:room_peers") == [jb["id"]]

        doomed.kill()
        t0 = time.monotonic()
        wait_until(lambda: ["left", jb["id"]] in events(a), timeout=TTL + 10)
        gone_after = time.monotonic() - t0
        # Bounded by the TTL plus one sweep interval (plus slack for a loaded machine).
        assert gone_after < TTL + TTL / 3 + 3, gone_after
        assert a.call(f"{PAGE}:room_peers") == []
        assert members(redis_server, room) == {ja["id"]}
        assert events(a).count(["left", jb["id"]]) == 1

        c = new_pypage(chromium, survivor)
        pages.append(c)
        jc = join(c, room)
        assert jc["peers"] == [ja["id"]]          # no ghost of B
        chat(c, a, jc["id"], ja["id"])
        assert members(redis_server, room) == {ja["id"], jc["id"]}
    finally:
        close(*pages)
        survivor.stop()
        doomed.stop()


def test_stopped_instance_takes_its_peers_out_at_once(redis_server: RedisServer) -> None:
    # A long TTL: only a real leave can explain a quick peer-left.
    x, y = Instance(redis_server.url, ttl=30.0), Instance(redis_server.url, ttl=30.0)
    room = "term-" + uuid.uuid4().hex[:8]

    async def body() -> None:
        a, b = await Client.connect(x.url), await Client.connect(y.url)
        await a.join(room)
        await b.join(room)
        await a.recv_type("peer-joined")
        t0 = time.monotonic()
        y.proc.terminate()                     # SIGTERM, as systemd or docker stop send
        assert (await a.recv_type("peer-left"))["peer_id"] == b.peer_id
        assert time.monotonic() - t0 < 5
        assert_refused(*await b.refusal(), "shutting-down", 1001)
        assert members(redis_server, room) == {a.peer_id}
        await a.close()
        await b.close()

    try:
        run_async(body)
        assert y.proc.wait(5) == 0
    finally:
        x.stop()
        y.stop()


def test_room_cap_and_connection_limit_hold_across_instances(redis_server: RedisServer) -> None:
    flags = ("--max-peers-per-room", "3", "--connections-per-address", "4")
    x, y = instance(redis_server.url, *flags), instance(redis_server.url, *flags)
    room = "cap-" + uuid.uuid4().hex[:8]

    async def body() -> None:
        addr = fresh_address()     # every client below comes from this one address
        c1, c2 = await Client.connect(x.url, addr), await Client.connect(x.url, addr)
        c3, c4 = await Client.connect(y.url, addr), await Client.connect(y.url, addr)
        await c1.join(room)
        await c3.join(room)
        await c2.join(room)          # 3 peers, 2 on X and 1 on Y: the room is full
        for late in (c4,):
            await late.send({"type": "join", "room": room})
            err = await late.recv_type("error")
            assert err["code"] == "room-full" and err["ref"] == "join", err
        # The address has 4 connections open (2 on each instance): a 5th is refused on either.
        for inst in (x, y):
            extra = await Client.connect(inst.url, addr)
            assert_refused(*await extra.refusal(), "too-many-connections", 1008)
            await extra.close()
        # Y frees a connection: a new one there is accepted, and still finds the room full ...
        await c4.close()
        c5 = await wait_accepted(y.url, addr)
        await c5.send({"type": "join", "room": room})
        assert (await c5.recv_type("error"))["code"] == "room-full"
        # ... until a peer on X leaves: then the peer on Y gets the place.
        await c2.send({"type": "leave"})
        assert (await c1.recv_type("peer-left"))["peer_id"] == c2.peer_id
        assert set((await c5.join(room))["peers"]) == {c1.peer_id, c3.peer_id}
        for c in (c1, c2, c3, c5):
            await c.close()

    try:
        run_async(body)
    finally:
        x.stop()
        y.stop()


async def wait_accepted(url: str, addr: str, timeout: float = 5.0) -> Client:
    """Connect until the server stops refusing (a close is counted off a moment after it)."""
    deadline = time.monotonic() + timeout
    while True:
        c = await Client.connect(url, addr)
        await c.send({"type": "ping", "id": 0})
        reply = await c.recv()
        if reply["type"] == "pong":
            return c
        assert reply["code"] == "too-many-connections", reply
        await c.close()
        assert time.monotonic() < deadline, "the server kept refusing connections"
        await asyncio.sleep(0.1)


def test_address_rate_and_dead_instance_connections_across_instances(
        redis_server: RedisServer) -> None:
    flags = ("--connections-per-address", "2", "--address-messages-per-second", "0.5",
             "--address-burst", "6")
    x, y = instance(redis_server.url, *flags), instance(redis_server.url, *flags)

    async def body() -> None:
        addr = fresh_address()
        cx, cy = await Client.connect(x.url, addr), await Client.connect(y.url, addr)
        # Messages per second across the address's connections: one burst of 6 for both.
        order = [cx, cy] * 4
        for c in order:
            await c.send({"type": "ping", "id": 1})
        replies = [await c.recv() for c in order]
        assert [r["type"] for r in replies].count("pong") == 6, replies
        refused = [r for r in replies if r["type"] == "error"]
        assert len(refused) == 2 and all(r["code"] == "rate-limited" for r in refused), refused
        # Two connections, one per instance: a third is refused on X.
        third = await Client.connect(x.url, addr)
        assert_refused(*await third.refusal(), "too-many-connections", 1008)
        await third.close()
        # Y dies: its connection stops counting within the TTL, with no one closing it.
        y.kill()
        await asyncio.sleep(TTL + 0.5)
        again = await Client.connect(x.url, addr)
        await again.send({"type": "ping", "id": 2})   # ~1.25 tokens refilled by now
        assert (await again.recv())["type"] == "pong"
        for c in (cx, cy, again):
            await c.close()

    try:
        run_async(body)
    finally:
        x.stop()
        y.stop()


async def relayed(a: Client, b: Client, n: int) -> bool:
    """Signal ``n`` from a to b: True once b got it, False if the server refused it."""
    await a.send({"type": "signal", "to": b.peer_id, "data": {"n": n}})
    try:
        while True:  # a refusal comes at once; skip join/leave news meanwhile
            reply = await a.recv(0.5)
            if reply["type"] == "error":
                assert reply["code"] in ("unavailable", "unknown-peer"), reply
                return False
    except TimeoutError:
        pass
    while True:
        msg = await b.recv_type("signal")
        if msg["data"] == {"n": n}:
            assert msg["from"] == a.peer_id
            return True


def test_redis_outage_keeps_clients_and_rooms_come_back() -> None:
    if shutil.which("redis-server") is None:
        missing_prerequisite("redis-server is not installed (python3 build.py test installs it)")
    redis_server = RedisServer()
    x, y = instance(redis_server.url), instance(redis_server.url)
    room = "outage-" + uuid.uuid4().hex[:8]

    async def body() -> None:
        nonlocal redis_server
        a, b = await Client.connect(x.url), await Client.connect(y.url)
        await a.join(room)
        await b.join(room)
        await a.recv_type("peer-joined")
        redis_server.stop()
        # Redis is gone. Nobody is disconnected: what needs Redis is refused with a reason,
        # the rest (pings, the per-address limits, new connections) goes on per instance.
        await a.send({"type": "signal", "to": b.peer_id, "data": {"n": 1}})
        err = await a.recv_type("error")
        assert err["code"] == "unavailable" and "Redis" in err["message"], err
        await a.send({"type": "ping", "id": 1})
        assert (await a.recv_type("pong"))["id"] == 1
        c = await Client.connect(x.url)
        await c.send({"type": "join", "room": room})
        assert (await c.recv_type("error"))["code"] == "unavailable"
        await c.send({"type": "ping", "id": 2})
        assert (await c.recv_type("pong"))["id"] == 2
        # Redis is back, empty: the instances write their members back and relay again.
        redis_server = RedisServer(port=redis_server.port)
        deadline = time.monotonic() + 10
        n = 2
        while not await relayed(a, b, n):
            assert time.monotonic() < deadline, "relay did not come back after Redis did"
            n += 1
            await asyncio.sleep(0.2)
        assert members(redis_server, room) == {a.peer_id, b.peer_id}
        for cl in (a, b, c):
            await cl.close()

    try:
        run_async(body)
    finally:
        x.stop()
        y.stop()
        redis_server.stop()


def test_many_clients_across_instances_lose_nothing_silently(redis_server: RedisServer) -> None:
    """200 clients in 50 rooms split over two instances, every one signalling every peer:
    each signal arrives once and in order, or its sender is told it was refused."""
    flags = ("--address-messages-per-second", "0", "--joins-per-minute", "0",
             "--rooms-per-minute", "0", "--connections-per-address", "0")
    x, y = instance(redis_server.url, *flags), instance(redis_server.url, *flags)
    rounds = 10

    async def body() -> None:
        rooms: dict[str, list[Client]] = {}
        for r in range(50):
            name = f"load-{uuid.uuid4().hex[:6]}-{r}"
            rooms[name] = [await Client.connect((x if (r + k) % 2 else y).url) for k in range(4)]
        await asyncio.gather(*(c.join(name) for name, cs in rooms.items() for c in cs))
        everyone = [c for cs in rooms.values() for c in cs]
        got: dict[int, list[tuple[str, int]]] = {id(c): [] for c in everyone}
        refused: dict[int, int] = {id(c): 0 for c in everyone}
        expected = sum(len(cs) * (len(cs) - 1) for cs in rooms.values()) * rounds

        async def read(c: Client) -> None:
            while True:
                msg = await c.recv(timeout=30)
                if msg["type"] == "signal":
                    got[id(c)].append((msg["from"], msg["data"]["i"]))
                elif msg["type"] == "error":
                    refused[id(c)] += 1

        readers = [asyncio.ensure_future(read(c)) for c in everyone]

        async def send(c: Client, peers: list[Client]) -> None:
            for i in range(rounds):
                for p in peers:
                    await c.send({"type": "signal", "to": p.peer_id, "data": {"i": i}})

        await asyncio.gather(*(send(c, [p for p in cs if p is not c])
                               for cs in rooms.values() for c in cs))
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) + sum(refused.values()) < expected:
            assert time.monotonic() < deadline, (sum(map(len, got.values())), expected)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)   # nothing extra may follow
        for t in readers:
            t.cancel()
        assert sum(map(len, got.values())) + sum(refused.values()) == expected
        for c in everyone:
            by_sender: dict[str, list[int]] = {}
            for sender, i in got[id(c)]:
                by_sender.setdefault(sender, []).append(i)
            for seq in by_sender.values():   # once each, in the order sent
                assert seq == sorted(set(seq)), seq
        for c in everyone:
            await c.close()

    try:
        run_async(body, timeout=120)
    finally:
        x.stop()
        y.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_protocol_cases_through_redis(pair: tuple[Instance, Instance], name: str) -> None:
    """The single-server protocol suite, on an instance whose rooms live in Redis."""
    run_case(name, pair[0].url)


def test_unreachable_redis_is_a_clear_startup_error() -> None:
    from tests.redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run([sys.executable, "-m", "web.server", "--port", "0", "--no-tls",
                           "--redis", url], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert f"error: cannot reach Redis at {url}" in proc.stderr, proc.stderr
