"""pyapp's dev server: serves static/ (and the docs at /docs) and relays signaling at /ws.

Run it through ``python3 build.py serve``; the flags are::

    --host 127.0.0.1   --port 8000   (0 picks a free port; the URL is printed)
    --tls / --no-tls   (default: TLS when --host is not a loopback address, since
                        phones need https for crypto.subtle, getUserMedia, getBattery)
    --cert FILE --key FILE   (otherwise a self-signed pair is made in .certs/)

Every bad input from one client (malformed JSON, unknown types, unknown targets,
oversize messages, floods) is answered with an ``error`` message or a close with
a reason, and never affects the other clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import mimetypes
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from pyapp.core.signaling import (
    Join,
    Leave,
    Ping,
    Pong,
    ServerError,
    ServerMessage,
    Signal,
    TokenBucket,
    Welcome,
    encode,
    parse_client_message,
)
from pyapp.exceptions import SignalingError
from web.broker import Broker, InMemoryBroker, RoomFull, UnknownPeer

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("pyapp.server")

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")


@dataclass
class Limits:
    """Per-client limits of the signaling endpoint."""

    max_message_bytes: int = 64 * 1024
    """Largest WebSocket message accepted; larger ones close the socket with 1009."""
    max_peers_per_room: int = 16
    """Joining a full room is refused with ``room-full``."""
    messages_per_second: float = 50.0
    """Sustained rate per client (token bucket)."""
    burst: int = 100
    """Messages a client may send at once before the rate applies."""
    flood_strikes: int = 20
    """Rate-limited messages in a row after which the client is disconnected."""
    send_queue: int = 256
    """Messages queued towards one slow client before it is disconnected."""
    heartbeat: float = 15.0
    """Seconds between WebSocket pings; a client that misses a pong is closed."""


class ClientSession:
    """One WebSocket client: validates, rate-limits and relays its messages."""

    def __init__(self, ws: web.WebSocketResponse, broker: Broker, limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ws = ws
        self.broker = broker
        self.limits = limits
        self.clock = clock
        self.room: str | None = None
        self.peer_id: str | None = None
        self.bucket = TokenBucket(limits.messages_per_second, limits.burst, clock())
        self.strikes = 0
        # None stops the writer; a (code, reason) tuple closes the socket after what came before.
        self.outbox: asyncio.Queue[ServerMessage | tuple[int, str] | None] = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write_loop())

    async def deliver(self, message: ServerMessage) -> None:
        """Queue a message to this client; a client that cannot keep up is dropped."""
        if self.outbox.qsize() >= self.limits.send_queue:
            log.warning("client %s is not reading; closing it", self.peer_id)
            await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"send queue full")
            return
        self.outbox.put_nowait(message)

    async def _write_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None or self.ws.closed:
                return
            if isinstance(message, tuple):
                await self.ws.close(code=message[0], message=message[1].encode())
                return
            try:
                await self.ws.send_str(encode(message))
            except (ConnectionError, RuntimeError):
                return

    async def error(self, code: str, message: str, ref: str | None = None) -> None:
        await self.deliver(ServerError(code=code, message=message, ref=ref))

    async def handle_text(self, text: str) -> None:
        if self.strikes >= self.limits.flood_strikes:
            return  # closing: ignore whatever is still in flight
        if not self.bucket.take(self.clock()):
            self.strikes += 1
            if self.strikes >= self.limits.flood_strikes:
                # Errors already queued are sent first, then the close with its reason.
                self.outbox.put_nowait((WSCloseCode.POLICY_VIOLATION,
                                        "flooding: too many messages per second"))
                return
            await self.error("rate-limited",
                             f"more than {self.limits.messages_per_second:g} messages/s; message dropped")
            return
        self.strikes = 0
        try:
            msg = parse_client_message(text)
        except SignalingError as exc:
            await self.error("bad-message", exc.reason)
            return
        if isinstance(msg, Ping):
            await self.deliver(Pong(id=msg.id))
        elif isinstance(msg, Join):
            await self._join(msg)
        elif isinstance(msg, Leave):
            await self.leave()
        elif isinstance(msg, Signal):
            if self.room is None or self.peer_id is None:
                await self.error("not-joined", "join a room before sending signals", "signal")
                return
            try:
                await self.broker.relay(self.room, self.peer_id, msg.to, msg.data)
            except UnknownPeer as exc:
                await self.error("unknown-peer", str(exc), "signal")

    async def _join(self, msg: Join) -> None:
        if self.room is not None:
            await self.error("already-joined", f"already in room {self.room!r}; leave first", "join")
            return
        try:
            peer_id, others = await self.broker.join(msg.room, msg.peer_id, self.deliver)
        except RoomFull as exc:
            await self.error("room-full", str(exc), "join")
            return
        self.room, self.peer_id = msg.room, peer_id
        await self.deliver(Welcome(room=msg.room, peer_id=peer_id, peers=tuple(others)))

    async def leave(self) -> None:
        if self.room is not None and self.peer_id is not None:
            room, peer_id = self.room, self.peer_id
            self.room = self.peer_id = None
            await self.broker.leave(room, peer_id)

    async def close(self) -> None:
        await self.leave()
        self.outbox.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self.writer


BROKER = web.AppKey("broker", Broker)
LIMITS = web.AppKey("limits", Limits)
SESSIONS = web.AppKey("sessions", set[ClientSession])


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    limits: Limits = request.app[LIMITS]
    ws = web.WebSocketResponse(heartbeat=limits.heartbeat, max_msg_size=limits.max_message_bytes)
    await ws.prepare(request)
    session = ClientSession(ws, request.app[BROKER], limits)
    request.app[SESSIONS].add(session)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.error("bad-message", "binary messages are not part of the protocol")
            elif msg.type == WSMsgType.ERROR:
                # aiohttp closes oversize messages with 1009 and a reason itself.
                log.info("websocket error from %s: %s", session.peer_id, ws.exception())
    finally:
        request.app[SESSIONS].discard(session)
        await session.close()
    return ws


def _safe_file(base: Path, rel: str) -> Path | None:
    """Resolve `rel` inside `base` (directories mean their index.html); None if outside or missing."""
    try:
        path = (base / rel).resolve()
        path.relative_to(base.resolve())
    except (ValueError, OSError):
        return None
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


def make_app(static_dir: Path = ROOT / "static", docs_dir: Path = ROOT / "site",
             broker: Broker | None = None, limits: Limits | None = None) -> web.Application:
    """Build the aiohttp application (used by ``main`` and by the tests)."""
    app = web.Application()
    app[BROKER] = broker if broker is not None else InMemoryBroker(
        (limits or Limits()).max_peers_per_room)
    app[LIMITS] = limits or Limits()
    app[SESSIONS] = set()

    async def static_handler(request: web.Request) -> web.StreamResponse:
        path = _safe_file(static_dir, request.match_info["path"] or "index.html")
        if path is None:
            raise web.HTTPNotFound(text="not found (run `python3 build.py build`?)")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def docs_handler(request: web.Request) -> web.StreamResponse:
        path = _safe_file(docs_dir, request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound(text="docs not built: run `python3 build.py docs`")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def docs_redirect(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/docs/")

    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/docs", docs_redirect)
    app.router.add_get("/docs/{path:.*}", docs_handler)
    app.router.add_get("/{path:.*}", static_handler)
    return app


# --------------------------------------------------------------------------- TLS

def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (for the URLs to print)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(addr).is_loopback:
                addrs.append(addr)
    return addrs


def self_signed_cert(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Make (once) a self-signed certificate for localhost and the LAN addresses."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in ["127.0.0.1", *hosts]:
        with contextlib.suppress(ValueError):
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyapp dev server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(host: str, port: int, ssl_context: ssl.SSLContext | None,
                app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    actual_port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    shown = ["127.0.0.1"] if host in ("0.0.0.0", "::") else [host]
    if host in ("0.0.0.0", "::"):
        shown += lan_addresses()
    print(f"pyapp serving on {scheme}://{host}:{actual_port}/", flush=True)
    for addr in shown:
        print(f"  open {scheme}://{addr}:{actual_port}/?room=lobby", flush=True)
    if ssl_context:
        print("  (self-signed certificate: accept the browser's warning once per device)", flush=True)
    elif not _is_loopback(host):
        print("  warning: without TLS phones get no crypto.subtle, camera or battery API", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", dest="tls", action="store_true", default=None)
    tls.add_argument("--no-tls", dest="tls", action="store_false")
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--static", type=Path, default=ROOT / "static")
    parser.add_argument("--max-peers-per-room", type=int, default=Limits.max_peers_per_room)
    parser.add_argument("--messages-per-second", type=float, default=Limits.messages_per_second)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    use_tls = args.tls if args.tls is not None else (bool(args.cert) or not _is_loopback(args.host))
    ssl_context = None
    if use_tls:
        if bool(args.cert) != bool(args.key):
            parser.error("--cert and --key go together")
        cert, key = (args.cert, args.key) if args.cert else self_signed_cert(
            ROOT / ".certs", lan_addresses())
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cert, key)
    limits = Limits(max_peers_per_room=args.max_peers_per_room,
                    messages_per_second=args.messages_per_second)
    app = make_app(static_dir=args.static, limits=limits)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, ssl_context, app))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
