"""The real server process against abusive and slow clients: each way it used to fall short.

Loopback only, bounded in count (a few hundred sockets) and time (each test has
a deadline). Every client has its own 127.x.y.z address unless a test shares one
on purpose.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.load.abusers import READY
from tests.load.conftest import ROOT, RealServer
from tests.server_cases import Client, assert_refused, fresh_address, room
from web.certs import cert_names, self_signed_cert
from web.limits import Limits

pytestmark = pytest.mark.load

DEFAULTS = Limits()


def run(body: Callable[[], Awaitable[None]], timeout: float = 40.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def _small_rcvbuf(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def drain_signals(client: Client, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every signal ``client`` receives until nothing comes for ``quiet`` seconds."""
    got = []
    while True:
        try:
            msg = await client.recv(timeout=quiet)
        except TimeoutError:
            return got
        if msg["type"] == "signal":
            got.append(msg)


# 1 ------------------------------------------------------------------------------------------

def test_a_client_that_never_reads_stalls_nobody(real_server: RealServer) -> None:
    async def body() -> None:
        url = real_server.url
        r = room()
        sender = await Client.connect(url)
        await sender.join(r)
        connector = aiohttp.TCPConnector(local_addr=(fresh_address(), 0),
                                         socket_factory=_small_rcvbuf)
        slow_session = aiohttp.ClientSession(connector=connector)
        slow = Client(slow_session, await slow_session.ws_connect(url.replace("http", "ws") + "/ws"))
        await slow.send({"type": "join", "room": r})
        slow_id = (await sender.recv_type("peer-joined"))["peer_id"]
        # The sender stays within its limits (50/s, burst 100) and sends 60 KB signals:
        # the slow reader's buffers and its 256 KiB queue fill within ~100 of them.
        blob = "x" * 60_000
        loop = asyncio.get_running_loop()
        worst_pong = 0.0
        left_at = None
        for i in range(150):
            if left_at is None:
                await sender.send({"type": "signal", "to": slow_id, "data": {"blob": blob}})
            sent = loop.time()
            await sender.send({"type": "ping", "id": i})
            while True:
                msg = await sender.recv(timeout=5)  # the old server stalled this for ~22 s
                if msg["type"] == "peer-left":
                    assert msg["peer_id"] == slow_id
                    left_at = i
                elif msg["type"] == "pong" and msg["id"] == i:
                    worst_pong = max(worst_pong, loop.time() - sent)
                    break
                else:
                    assert msg["type"] == "error" and msg["code"] == "unknown-peer", msg
            if left_at is not None and i >= left_at + 5:
                break
            await asyncio.sleep(0.045)  # ~44 messages/s: under the sender's own limit
        assert left_at is not None, "the slow reader was never dropped"
        # (Each pong arrived within recv's 5 s; the old server stalled the sender ~22 s.)
        print(f"worst pong while feeding the slow reader: {worst_pong * 1000:.0f} ms")
        newcomer = await Client.connect(url)
        assert (await newcomer.join(r))["peers"] == [sender.peer_id], "the slow reader is still listed"
        # The slow reader's connection is over: reading finds its end (close or reset).
        while True:
            msg = await slow.ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        for c in (sender, slow, newcomer):
            await c.close()

    run(body)


# 2 ------------------------------------------------------------------------------------------

def test_one_address_cannot_open_a_thousand_connections_or_rooms(real_server: RealServer) -> None:
    attempts = 300

    async def body() -> None:
        url = real_server.url.replace("http", "ws") + "/ws"
        connector = aiohttp.TCPConnector(local_addr=(fresh_address(), 0), limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            sockets = await asyncio.gather(*(session.ws_connect(url) for _ in range(attempts)))

            async def probe(ws: aiohttp.ClientWebSocketResponse) -> str:
                await ws.send_json({"type": "ping", "id": 1})
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                data = json.loads(msg.data)
                if data["type"] == "pong":
                    return "accepted"
                # Refused: the error, then the close with its reason (no reset).
                close = await ws.receive(timeout=10)
                assert close.type == aiohttp.WSMsgType.CLOSE, (close.type, close.data)
                assert_refused(close.data, str(close.extra), [data], "too-many-connections", 1008)
                return "refused"

            results = await asyncio.gather(*(probe(ws) for ws in sockets))
            accepted = [ws for ws, res in zip(sockets, results, strict=True) if res == "accepted"]
            assert len(accepted) == DEFAULTS.connections_per_address, results.count("accepted")
            assert results.count("refused") == attempts - DEFAULTS.connections_per_address

            # Each accepted socket tries to create a room: only rooms_per_minute succeed.
            async def create(ws: aiohttp.ClientWebSocketResponse) -> str:
                await ws.send_json({"type": "join", "room": room()})
                data = json.loads((await ws.receive(timeout=10)).data)
                return data["type"] if data["type"] == "welcome" else data["code"]

            loop = asyncio.get_running_loop()
            start = loop.time()
            made = await asyncio.gather(*(create(ws) for ws in accepted))
            limit = DEFAULTS.rooms_per_minute
            allowed = limit + (loop.time() - start) * limit / 60 + 1  # the refill meanwhile
            assert limit <= made.count("welcome") <= allowed, (made, allowed)
            assert made.count("welcome") + made.count("room-rate-limited") == len(accepted), made
            for ws in sockets:
                await ws.close()

    run(body)


# 3 ------------------------------------------------------------------------------------------

def test_a_reconnecting_flooder_is_held_to_its_address_rate(real_server: RealServer) -> None:
    async def body() -> None:
        url = real_server.url
        r = room()
        receiver = await Client.connect(url)
        await receiver.join(r)
        addr = fresh_address()
        loop = asyncio.get_running_loop()
        start = loop.time()
        offered = 0
        while True:
            flooder = await Client.connect(url, address=addr)
            await flooder.send({"type": "join", "room": r})
            for i in range(150):  # every connection starts with a full per-connection bucket
                await flooder.send({"type": "signal", "to": receiver.peer_id, "data": {"i": i}})
            offered += 150
            await flooder.close()
            elapsed = loop.time() - start
            ceiling = DEFAULTS.address_burst + DEFAULTS.address_messages_per_second * elapsed
            if elapsed >= 3.0 and offered > 2 * ceiling:
                break  # a real flood: twice what the address may relay
            assert elapsed < 25, f"could not offer a flood: {offered} in {elapsed:.1f} s"
        relayed = len(await drain_signals(receiver))
        # Messages still in flight were admitted later: count the refill until now.
        ceiling = (DEFAULTS.address_burst
                   + DEFAULTS.address_messages_per_second * (loop.time() - start))
        assert relayed <= ceiling, (relayed, ceiling, offered)
        await receiver.close()

    run(body)


# 4 ------------------------------------------------------------------------------------------

def test_every_flooder_reads_its_refusal(real_server: RealServer) -> None:
    flooders = 40

    async def flood() -> None:
        bad = await Client.connect(real_server.url)
        # Written without reading, far past the limits: the server decides to close
        # while it still has unread data from this client.
        for i in range(1500):
            await bad.send({"type": "ping", "id": i})
        code, reason, before = await bad.refusal(timeout=10)
        assert "rate-limited" in {m.get("code") for m in before}
        assert_refused(code, reason, before, "flooding", 1008)
        await bad.close()

    async def body() -> None:
        await asyncio.gather(*(flood() for _ in range(flooders)))

    run(body)


# 5 ------------------------------------------------------------------------------------------

def test_1009_and_1007_closes_carry_their_reason(real_server: RealServer) -> None:
    async def big() -> None:
        bad = await Client.connect(real_server.url)
        await bad.send({"type": "signal", "to": "abcdef", "data": {"sdp": "x" * 10_000_000}})
        assert_refused(*await bad.refusal(timeout=10), "too-large", 1009)
        await bad.close()

    async def not_utf8() -> None:
        bad = await Client.connect(real_server.url)
        await bad.ws._writer.send_frame(b'{"type":"ping","id":"\xc3\x28"}', aiohttp.WSMsgType.TEXT)
        assert_refused(*await bad.refusal(timeout=10), "bad-utf8", 1007)
        await bad.close()

    async def body() -> None:
        await asyncio.gather(*(big() for _ in range(5)), *(not_utf8() for _ in range(5)))

    run(body)


# 6 ------------------------------------------------------------------------------------------

def test_non_finite_numbers_are_not_relayed(real_server: RealServer) -> None:
    async def body() -> None:
        r = room()
        a, b = await Client.connect(real_server.url), await Client.connect(real_server.url)
        await a.join(r)
        await b.join(r)
        for value in ("NaN", "Infinity", "-Infinity", "[1, NaN]"):
            await a.send('{"type":"signal","to":"' + str(b.peer_id) + '","data":{"v":' + value + "}}")
            assert (await a.recv_type("error"))["code"] == "non-finite-number"
        await a.send({"type": "signal", "to": b.peer_id, "data": {"v": 1.5}})
        assert [m["data"] for m in await drain_signals(b)] == [{"v": 1.5}]
        for c in (a, b):
            await c.close()

    run(body)


# 7 ------------------------------------------------------------------------------------------

def test_abuse_does_not_disturb_a_well_behaved_pair(real_server: RealServer) -> None:
    # The abusers are their own process, as they would be other machines.
    abusers = subprocess.Popen([sys.executable, "-m", "tests.load.abusers", real_server.url,
                                "--seconds", "7"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert abusers.stdout is not None
    assert abusers.stdout.readline().strip() == READY

    async def body() -> None:
        url = real_server.url
        r = room()
        a, b = await Client.connect(url), await Client.connect(url)
        await a.join(r)
        await b.join(r)
        await a.recv_type("peer-joined")
        await asyncio.sleep(0.5)  # let the abuse get going
        # 200 signals at ~40/s (under the per-connection limit): none lost, none reordered.
        for i in range(200):
            await a.send({"type": "signal", "to": b.peer_id, "data": {"i": i}})
            msg = await b.recv_type("signal", timeout=5)
            assert msg["data"] == {"i": i}, msg
            await asyncio.sleep(0.025)
        await a.send({"type": "ping", "id": 9})
        assert (await a.recv_type("pong"))["id"] == 9
        for c in (a, b):
            await c.close()

    try:
        run(body, timeout=40)
        out, _ = abusers.communicate(timeout=30)
    finally:
        if abusers.poll() is None:
            abusers.kill()
    assert abusers.returncode == 0
    rounds = json.loads(out.strip().splitlines()[-1])
    # The abuse did happen: every kind ran, and the slow reader was dropped.
    for kind in ("flooder", "reconnect", "10MB-frame", "malformed", "slow-reader-dropped"):
        assert rounds.get(kind, 0) >= 1, rounds


# 8 ------------------------------------------------------------------------------------------

def test_a_stale_self_signed_certificate_is_replaced(tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    cert, _ = self_signed_cert(cert_dir, ["192.0.2.50"])  # made for another address
    # It names localhost and 127.0.0.1 already; serve it on an address it does not name.
    stale = cert.read_bytes()
    host = "127.0.0.2"
    assert host not in cert_names(cert)[0]  # type: ignore[index]
    server = _start_tls(host, "--cert-dir", str(cert_dir))
    try:
        assert cert.read_bytes() != stale
        assert host in cert_names(cert)[0]  # type: ignore[index]
        ctx = ssl.create_default_context(cafile=str(cert))
        run(lambda: _tls_ping(host, server.port, ctx))
    finally:
        server.stop()


def test_a_given_cert_and_key_are_used_as_they_are(tmp_path: Path) -> None:
    own_dir = tmp_path / "own"
    cert, key = self_signed_cert(own_dir, [])  # localhost and 127.0.0.1 only
    shutil.copy(cert, tmp_path / "cert.copy")
    before = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    host = "127.0.0.3"
    auto_dir = tmp_path / "auto"
    server = _start_tls(host, "--cert", str(cert), "--key", str(key), "--cert-dir", str(auto_dir))
    try:
        after = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
        assert after == before and not auto_dir.exists()
        # It serves exactly that pair: the certificate does not name 127.0.0.3, so a
        # checking client refuses it, and one that skips the name check gets it.
        ctx = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            run(lambda: _tls_ping(host, server.port, ctx))
        ctx.check_hostname = False
        run(lambda: _tls_ping(host, server.port, ctx))
    finally:
        server.stop()


def _start_tls(host: str, *flags: str) -> RealServer:
    return RealServer(*flags, host=host, tls=True)


async def _tls_ping(host: str, port: int, ctx: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"wss://{host}:{port}/ws", ssl=ctx) as ws:
            await ws.send_json({"type": "ping", "id": 3})
            msg = await ws.receive(timeout=10)
            assert json.loads(msg.data) == {"type": "pong", "id": 3}
