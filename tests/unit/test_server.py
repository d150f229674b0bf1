"""The signaling server in-process (aiohttp test server on loopback)."""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import socket
import ssl
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import web.server as server_module
from pyapp.core.signaling import RelayedSignal, TokenBucket, encode
from tests.server_cases import CASES, Client, assert_refused, bystanders, fresh_address, room
from web.certs import cert_covers, cert_names, self_signed_cert
from web.limits import InMemoryLimitStore, ThrottledLog, client_address
from web.server import SESSIONS, Limits, make_app

pytestmark = pytest.mark.unit


def _static(tmp: Path) -> Path:
    (tmp / "pyodide").mkdir()
    (tmp / "index.html").write_text('<script type="module" src="loader.js"></script>')
    (tmp / "loader.js").write_text("// loader")
    (tmp / "pyodide" / "pyodide.asm.wasm").write_bytes(b"\0asm")
    return tmp


@pytest.mark.parametrize("name", sorted(CASES))
def test_server_case(name: str, tmp_path: Path) -> None:
    async def main() -> None:
        app = make_app(static_dir=_static(tmp_path), limits=Limits())
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await asyncio.wait_for(CASES[name](str(server.make_url("")).rstrip("/")), 60)
        finally:
            await server.close()

    asyncio.run(main())


# ---------------------------------------------------------------- in-process specifics

def _run(app_limits: Limits, body, tmp_path: Path, **app_kwargs) -> None:
    async def main() -> None:
        app = make_app(static_dir=_static(tmp_path), limits=app_limits, **app_kwargs)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await asyncio.wait_for(body(str(server.make_url("")).rstrip("/"), app), 60)
        finally:
            await server.close()

    asyncio.run(main())


def _small_rcvbuf(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def _slow_client(base_url: str) -> Client:
    """A client that reads nothing: its receive buffer is tiny and aiohttp stops reading
    from the socket once its own queue holds 64 KiB."""
    connector = aiohttp.TCPConnector(local_addr=(fresh_address(), 0), socket_factory=_small_rcvbuf)
    session = aiohttp.ClientSession(connector=connector)
    ws = await session.ws_connect(base_url.replace("http", "ws", 1) + "/ws", max_msg_size=0)
    return Client(session, ws)


def test_slow_reader_is_dropped_without_stalling_its_sender(tmp_path: Path) -> None:
    # The sender's own rate limits are lifted so it can fill the slow reader's buffers fast.
    limits = Limits(queue_bytes=128 * 1024, queue_messages=64, close_timeout=1.0,
                    messages_per_second=10_000, burst=10_000, address_messages_per_second=0)

    async def body(url: str, app) -> None:
        r = room()
        sender = await Client.connect(url)
        await sender.join(r)
        slow = await _slow_client(url)
        await slow.send({"type": "join", "room": r})
        slow_id = (await sender.recv_type("peer-joined"))["peer_id"]
        blob = "x" * 30_000
        loop = asyncio.get_running_loop()
        left = False
        worst_pong = 0.0
        for i in range(1000):  # up to 30 MB offered; the queue holds 128 KiB
            await sender.send({"type": "signal", "to": slow_id, "data": {"i": i, "blob": blob}})
            sent = loop.time()
            await sender.send({"type": "ping", "id": i})
            while True:
                msg = await sender.recv(timeout=5)
                if msg["type"] == "peer-left":
                    assert msg["peer_id"] == slow_id
                    left = True
                elif msg["type"] == "pong" and msg["id"] == i:
                    worst_pong = max(worst_pong, loop.time() - sent)
                    break
                elif msg["type"] == "error":
                    assert msg["code"] in ("unknown-peer", "rate-limited"), msg
            if left:
                break
        assert left, "the slow reader was never dropped"
        # The sender never waited on the slow reader: every pong came within recv's 5 s
        # (the old server stalled it for ~22 s, then reset it).
        print(f"worst pong while feeding the slow reader: {worst_pong * 1000:.0f} ms")
        # It is out of the room at once: a newcomer does not see it.
        newcomer = await Client.connect(url)
        welcome = await newcomer.join(r)
        assert welcome["peers"] == [sender.peer_id], welcome
        # Its socket is gone: once it reads, it finds the end (a close or a reset) soon.
        deadline = loop.time() + 10
        while loop.time() < deadline:
            msg = await slow.ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        else:
            raise AssertionError("the slow reader's socket was not closed")
        # And the server let go of it (its close is bounded by close_timeout).
        for _ in range(100):
            if len(app[SESSIONS]) == 2:  # sender and newcomer
                break
            await asyncio.sleep(0.05)
        assert len(app[SESSIONS]) == 2, list(app[SESSIONS])
        for c in (sender, slow, newcomer):
            await c.close()

    _run(limits, body, tmp_path)


def test_relays_of_every_frame_length_arrive_whole_and_in_order(tmp_path: Path) -> None:
    # Relays are written as frames built here (web.client._text_frame), not by aiohttp:
    # the three RFC 6455 length forms (7-bit up to 125, 16-bit up to 65535, 64-bit),
    # at their edges, in one burst and one at a time, must reach a standard client
    # intact and in order.
    frame_lengths = [70, 125, 126, 127, 1000, 65_535, 65_536, 150_000]

    async def body(base_url: str, app: web.Application) -> None:
        a, b = await bystanders(base_url)
        assert a.peer_id is not None

        def data(i: int, length: int) -> dict[str, object]:
            # The relayed message is exactly ``length`` bytes (the server's own encoding).
            empty = encode(RelayedSignal(sender=a.peer_id, data={"i": i, "s": ""}))
            return {"i": i, "s": "x" * (length - len(empty))}

        for burst in (False, True):
            for i, length in enumerate(frame_lengths):
                await a.send({"type": "signal", "to": b.peer_id, "data": data(i, length)})
                if not burst:
                    assert (await b.recv_type("signal"))["data"] == data(i, length)
            if burst:
                for i, length in enumerate(frame_lengths):
                    msg = await b.recv_type("signal")
                    assert msg["data"] == data(i, length), (i, len(msg["data"]["s"]))
        await a.close()
        await b.close()

    # Room for the largest relay; the sender's rate limits are far above 16 messages.
    _run(Limits(max_message_bytes=400_000), body, tmp_path)


@pytest.mark.parametrize("ending", ["client-closes", "refused", "too-large"])
def test_a_finished_connection_leaves_no_cycles(ending: str, tmp_path: Path) -> None:
    # A finished socket lets go of aiohttp's connection (web.client.SignalingSocket._let_go):
    # connections by the hundred per second must be freed by reference counting, not left
    # for the cyclic collector's full passes (those were the server's longest pauses).
    from web.client import ClientSession, SignalingSocket

    async def one(base_url: str) -> None:
        c = await Client.connect(base_url)
        if ending == "client-closes":
            await c.send({"type": "ping", "id": 1})
            assert (await c.recv())["type"] == "pong"
        elif ending == "refused":
            for i in range(200):
                await c.send({"type": "ping", "id": i})
            await c.refusal()
        else:
            await c.send("x" * 100_000)
            await c.refusal()
        await c.close()

    async def body(base_url: str, app: web.Application) -> None:
        await one(base_url)  # warm up: first-use caches are not garbage
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await one(base_url)
            await asyncio.sleep(0.3)  # the linger ends on the client's FIN
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage if isinstance(o, (SignalingSocket, ClientSession))
                    or type(o).__name__ in ("RequestHandler", "Request")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not left, f"{ending}: freed only by the cyclic collector: {left}"

    _run(Limits(), body, tmp_path)


def test_trust_proxy_keys_limits_by_forwarded_address(tmp_path: Path) -> None:
    limits = Limits(connections_per_address=2, trust_proxy=1)

    async def body(url: str, app) -> None:
        proxy = fresh_address()  # every connection comes through "the proxy"
        via = [await Client.connect(url, address=proxy,
                                    headers={"X-Forwarded-For": "10.0.0.1, 203.0.113.9"})
               for _ in range(2)]
        for c in via:
            await c.send({"type": "ping", "id": 1})
            assert (await c.recv_type("pong"))["id"] == 1
        # A third client with the same forwarded address is over the limit, whatever it
        # claims on the left of the header: only the proxy's own entry counts.
        third = await Client.connect(url, address=proxy,
                                     headers={"X-Forwarded-For": "198.51.100.4, 203.0.113.9"})
        assert_refused(*await third.refusal(), "too-many-connections", 1008)
        # Another forwarded client through the same proxy is counted apart.
        other = await Client.connect(url, address=proxy, headers={"X-Forwarded-For": "203.0.113.10"})
        await other.send({"type": "ping", "id": 2})
        assert (await other.recv_type("pong"))["id"] == 2
        for c in [*via, third, other]:
            await c.close()

    _run(limits, body, tmp_path)


def test_forwarded_for_is_ignored_without_trust_proxy(tmp_path: Path) -> None:
    limits = Limits(connections_per_address=1)

    async def body(url: str, app) -> None:
        addr = fresh_address()
        first = await Client.connect(url, address=addr, headers={"X-Forwarded-For": "203.0.113.1"})
        await first.send({"type": "ping", "id": 1})
        assert (await first.recv_type("pong"))["id"] == 1
        spoof = await Client.connect(url, address=addr, headers={"X-Forwarded-For": "203.0.113.2"})
        assert_refused(*await spoof.refusal(), "too-many-connections", 1008)
        for c in (first, spoof):
            await c.close()

    _run(limits, body, tmp_path)


def test_address_bucket_survives_reconnects(tmp_path: Path) -> None:
    # The per-connection limit is generous here; the address's bucket is what must hold.
    limits = Limits(messages_per_second=10_000, burst=10_000, address_messages_per_second=20,
                    address_burst=40, flood_strikes=10_000)

    async def body(url: str, app) -> None:
        r = room()
        receiver = await Client.connect(url)
        await receiver.join(r)
        addr = fresh_address()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(10):  # reconnect ten times, each time sending 30 signals at once
            flooder = await Client.connect(url, address=addr)
            while True:  # the join itself spends a token of the address, and may wait for one
                await flooder.send({"type": "join", "room": r})
                msg = await flooder.recv()
                if msg["type"] == "welcome":
                    break
                assert msg["code"] == "rate-limited", msg
                await asyncio.sleep(0.1)
            for i in range(30):
                await flooder.send({"type": "signal", "to": receiver.peer_id, "data": {"i": i}})
            await flooder.close()  # the server handles all 30 before the close frame
        elapsed = loop.time() - start
        relayed = 0
        while True:
            try:
                msg = await receiver.recv(timeout=0.5)
            except TimeoutError:
                break
            relayed += msg["type"] == "signal"
        # At most the burst plus the refill over the run (the joins spent tokens too);
        # a per-connection limit alone would have let all 300 through.
        allowed = 40 + 20 * elapsed
        assert 30 <= relayed <= allowed, (relayed, allowed, elapsed)
        await receiver.close()

    _run(limits, body, tmp_path)


# ---------------------------------------------------------------- the limit store

def test_in_memory_store_counts_connections_and_buckets() -> None:
    now = [0.0]
    store = InMemoryLimitStore(clock=lambda: now[0], sweep_every=3)

    async def main() -> None:
        assert await store.open_connection("a", 2) and await store.open_connection("a", 2)
        assert not await store.open_connection("a", 2)
        assert await store.open_connection("b", 2)
        await store.close_connection("a")
        assert store.connections("a") == 1
        assert await store.open_connection("a", 2)
        assert await store.open_connection("a", 0)  # 0: no limit
        for _ in range(3):
            await store.close_connection("a")
        assert store.connections("a") == 0
        # Bucket: burst 3, 2 tokens/s.
        assert [await store.take("k", 2.0, 3.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert await store.take("k", 2.0, 3.0) == pytest.approx(0.5)
        now[0] = 0.5
        assert await store.take("k", 2.0, 3.0) == 0.0
        assert await store.take("k", 2.0, 3.0, cost=2.0) == pytest.approx(1.0)
        # Full buckets are forgotten on a sweep; the one in use is kept.
        now[0] = 100.0
        for _ in range(3):  # the third take since the last sweep sweeps (sweep_every=3)
            await store.take("k2", 2.0, 3.0)
        assert store.bucket_count() == 1
        await store.aclose()

    asyncio.run(main())


def test_store_buckets_are_the_core_token_bucket() -> None:
    # One token-bucket implementation: the per-connection limit (web.client) and the
    # per-address store both use pyapp.core.signaling.TokenBucket.
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.wait(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait(0.0) == pytest.approx(0.5)  # a refused take spends nothing
    assert bucket.wait(0.0, cost=2.0) == pytest.approx(1.0)
    assert not bucket.take(0.25) and bucket.take(0.5)
    assert not bucket.full(1.0) and bucket.full(2.0)
    assert not bucket.take(2.0, cost=4.0)  # more than the burst: never
    store = InMemoryLimitStore(clock=lambda: 0.0)
    assert store.take_now("k", 2.0, 3.0) == 0.0
    assert all(isinstance(b, TokenBucket) for b in store._buckets.values())


def test_throttled_log_keeps_one_line_per_kind_and_counts_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("pyapp.test-throttle"), every=10.0,
                             clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="pyapp.test-throttle")
    for i in range(50):  # a client repeating what gets refused
        throttled.info("too-large", "refused %s", i)
    throttled.warning("slow-consumer", "dropped %s", "x")  # another kind is not held back
    now[0] = 12.0
    throttled.info("too-large", "refused %s", 50)
    lines = [r.getMessage() for r in caplog.records if r.name == "pyapp.test-throttle"]
    assert lines == ["refused 0", "dropped x", "refused 50 (and 49 more like it in the last 12 s)"]


def test_limits_reject_negative_values() -> None:
    with pytest.raises(ValueError, match="connections_per_address"):
        Limits(connections_per_address=-1)
    with pytest.raises(ValueError, match="queue_bytes"):
        Limits(queue_bytes=0)


def test_address_keys() -> None:
    from aiohttp.test_utils import make_mocked_request

    def key(remote: str, xff: str | None = None, trust: int = 0) -> str:
        headers = {"X-Forwarded-For": xff} if xff else {}
        req = make_mocked_request("GET", "/ws", headers=headers)
        req = req.clone(remote=remote)
        return client_address(req, trust)

    assert key("192.0.2.1") == "192.0.2.1"
    assert key("192.0.2.1", "203.0.113.5") == "192.0.2.1"
    assert key("192.0.2.1", "203.0.113.5", trust=1) == "203.0.113.5"
    assert key("192.0.2.1", "1.1.1.1, 203.0.113.5, 10.0.0.2", trust=2) == "203.0.113.5"
    assert key("192.0.2.1", "203.0.113.5", trust=3) == "203.0.113.5"  # fewer hops than trusted
    assert key("2001:db8::1") == key("2001:db8::ffff") == "2001:db8::/64"
    assert key("::ffff:192.0.2.9") == "192.0.2.9"


# ---------------------------------------------------------------- certificates

def _names(cert: Path) -> set[str]:
    info = cert_names(cert)
    assert info is not None
    return info[0]


def test_self_signed_cert_is_remade_when_it_does_not_cover_the_hosts(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, ["192.0.2.10"])
    assert {"localhost", "127.0.0.1", "192.0.2.10"} <= _names(cert)
    first = cert.read_bytes()
    # Same addresses: reused as is.
    assert self_signed_cert(tmp_path, ["192.0.2.10"]) == (cert, key)
    assert cert.read_bytes() == first
    # The LAN address changed: a new pair that names it.
    self_signed_cert(tmp_path, ["192.0.2.77"])
    assert cert.read_bytes() != first
    assert "192.0.2.77" in _names(cert)
    assert cert_covers(cert, ["localhost", "127.0.0.1", "192.0.2.77"])
    assert not cert_covers(cert, ["192.0.2.10"])
    # A wildcard bind names no address of its own.
    assert "0.0.0.0" not in _names(self_signed_cert(tmp_path, ["0.0.0.0", "192.0.2.77"])[0])
    # The key matches the new certificate (TLS would refuse a mismatched pair).
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)


def test_self_signed_cert_is_remade_when_unreadable_or_expiring(tmp_path: Path) -> None:
    cert, _ = self_signed_cert(tmp_path, [])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=823)
    assert cert_covers(cert, ["localhost"])
    assert not cert_covers(cert, ["localhost"], now=later)  # within a week of expiry
    cert.write_text("not a certificate")
    assert not cert_covers(cert, ["localhost"])
    self_signed_cert(tmp_path, [])
    assert "localhost" in _names(cert)


def test_unicode_host_is_named_as_its_a_label_and_the_cert_is_kept(tmp_path: Path) -> None:
    cert, _ = self_signed_cert(tmp_path, ["bücher.example"])
    assert "xn--bcher-kva.example" in _names(cert)  # the form the browser checks
    assert cert_covers(cert, ["bücher.example", "XN--BCHER-KVA.example"])
    first = cert.read_bytes()
    self_signed_cert(tmp_path, ["bücher.example"])
    assert cert.read_bytes() == first, "a covered host must not remake the pair at every start"


def test_unnamable_host_is_logged_left_out_and_does_not_remake_the_cert(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = "a" * 64 + ".example"  # a DNS label is at most 63 characters
    with caplog.at_level("WARNING", logger="pyapp.server"):
        cert, _ = self_signed_cert(tmp_path, [bad, "192.0.2.5"])
    warned = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert warned and "cannot be put in a certificate" in warned[0]
    assert bad not in _names(cert) and "192.0.2.5" in _names(cert)
    assert cert_covers(cert, ["localhost", bad, "192.0.2.5"])
    first = cert.read_bytes()
    self_signed_cert(tmp_path, [bad, "192.0.2.5"])
    assert cert.read_bytes() == first


def test_private_key_is_never_readable_by_others(tmp_path: Path) -> None:
    # Watch the key's mode at every audited step while the pair is written: with a
    # permissive umask, a key written first and chmod-ed after is briefly 0644.
    import os
    import stat
    import sys

    tmp_key = tmp_path / "key.tmp"
    modes: list[int] = []
    watching = [True]

    def hook(event: str, _args: object) -> None:
        if not watching[0]:
            return
        watching[0] = False  # no re-entry from the stat below
        try:
            modes.append(stat.S_IMODE(tmp_key.stat().st_mode))
        except FileNotFoundError:
            pass
        finally:
            watching[0] = True

    old_umask = os.umask(0o022)
    sys.addaudithook(hook)  # cannot be removed: disarmed below
    try:
        _, key = self_signed_cert(tmp_path, [])
    finally:
        watching[0] = False  # disarmed for the rest of the session
        os.umask(old_umask)
    assert modes, "the key's temporary file was never seen"
    assert set(modes) == {0o600}, [oct(m) for m in modes]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A stale temporary file from a crashed run keeps no wider mode.
    tmp_key.write_bytes(b"stale")
    tmp_key.chmod(0o644)
    (tmp_path / "cert.pem").unlink()
    _, key = self_signed_cert(tmp_path, [])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_given_cert_and_key_are_never_touched(tmp_path: Path) -> None:
    # A pair that does not name the served host: the operator's choice, used as given.
    own = tmp_path / "own"
    cert, key = self_signed_cert(own, ["192.0.2.200"])
    before = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns)
    seen: list[tuple[str, int, ssl.SSLContext | None]] = []

    async def fake_serve(host, port, ssl_context, app) -> None:
        seen.append((host, port, ssl_context))

    cert_dir = tmp_path / "auto"
    with mock.patch.object(server_module, "serve", fake_serve):
        assert server_module.main(["--host", "192.0.2.1", "--port", "0", "--cert", str(cert),
                                   "--key", str(key), "--cert-dir", str(cert_dir)]) == 0
    assert seen and seen[0][2] is not None
    assert (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns) == before
    assert not cert_dir.exists(), "no self-signed pair is made when --cert/--key are given"
    # Without them, the automatic pair is made for the served host.
    with mock.patch.object(server_module, "serve", fake_serve):
        assert server_module.main(["--host", "192.0.2.1", "--port", "0", "--tls",
                                   "--cert-dir", str(cert_dir)]) == 0
    assert "192.0.2.1" in _names(cert_dir / "cert.pem")


def test_docs_list_every_limit_flag_and_error_code() -> None:
    from pyapp.core.signaling import ERROR_CODES

    text = (Path(__file__).resolve().parents[2] / "docs" / "signaling.md").read_text()
    for code in ERROR_CODES:
        assert f"`{code}`" in text, f"docs/signaling.md does not list error code {code!r}"
    for name in server_module._LIMIT_FLAGS:
        flag = "--" + name.replace("_", "-")
        assert f"`{flag}`" in text, f"docs/signaling.md does not list {flag}"
    defaults = Limits()
    for name in ("connections_per_address", "joins_per_minute", "rooms_per_minute",
                 "address_messages_per_second", "max_message_bytes", "queue_bytes"):
        flag = "--" + name.replace("_", "-")
        row = next(line for line in text.splitlines() if f"`{flag}`" in line)
        value = getattr(defaults, name)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"| {shown} |" in row, (flag, row)
