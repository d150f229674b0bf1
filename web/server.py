"""pyapp's dev server: serves static/ (and the docs at /docs) and relays signaling at /ws.

Run it through ``python3 build.py serve``; the flags are::

    --host 127.0.0.1   --port 8000   (0 picks a free port; the URL is printed)
    --tls / --no-tls   (default: TLS when --host is not a loopback address, since
                        phones need https for crypto.subtle, getUserMedia, getBattery)
    --cert FILE --key FILE   (otherwise a self-signed pair in .certs/, made again
                              whenever it does not name the addresses served)
    --trust-proxy [N]  (behind N reverse proxies: client address from X-Forwarded-For)
    limits: --connections-per-address, --joins-per-minute, --rooms-per-minute,
            --address-messages-per-second, --messages-per-second, --max-message-bytes ...
            (0 switches a per-address limit off; docs/signaling.md has them all)

Every bad input from one client (malformed or non-finite JSON, unknown types,
unknown targets, oversize messages, floods, not reading) is answered with an
``error`` message with a code, and, when the server closes, a close whose reason
names that code. Delivery never waits for another client, so none of this
affects the other clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import mimetypes
import signal
import ssl
import sys
from dataclasses import fields
from pathlib import Path

from aiohttp import WSCloseCode, web

from web.broker import Broker, BrokerUnavailable, InMemoryBroker
from web.certs import lan_addresses, self_signed_cert
from web.client import ClientSession, SignalingSocket, throttled_log, track_lingers
from web.limits import InMemoryLimitStore, Limits, LimitStore, client_address
from web.turn import TurnIssuer, add_turn_flags, turn_from_args

__all__ = ["Limits", "make_app", "main", "lan_addresses", "self_signed_cert"]

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("pyapp.server")

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")

BROKER = web.AppKey("broker", Broker)
LIMITS = web.AppKey("limits", Limits)
STORE = web.AppKey("limit_store", LimitStore)
SESSIONS = web.AppKey("sessions", dict[ClientSession, None])
TURN = web.AppKey("turn", TurnIssuer)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    limits = app[LIMITS]
    store = app[STORE]
    address = client_address(request, limits.trust_proxy)
    ws = SignalingSocket(limits)
    await ws.prepare(request)
    session = ClientSession(ws, app[BROKER], store, limits, address, turn=app.get(TURN))
    counted = await store.open_connection(address, limits.connections_per_address)
    if not counted:
        throttled_log.info("too-many-connections", "refusing a connection from %s: %d open",
                           address, limits.connections_per_address)
        session.refuse("too-many-connections",
                       f"more than {limits.connections_per_address} connections from your "
                       "address; close some and retry", WSCloseCode.POLICY_VIOLATION)
    app[SESSIONS][session] = None
    try:
        await session.run()
    finally:
        app[SESSIONS].pop(session, None)
        if counted:
            await store.close_connection(address)
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
             broker: Broker | None = None, limits: Limits | None = None,
             limit_store: LimitStore | None = None,
             turn: TurnIssuer | None = None) -> web.Application:
    """Build the aiohttp application (used by ``main`` and by the tests)."""
    limits = limits or Limits()
    app = web.Application()
    app[BROKER] = broker if broker is not None else InMemoryBroker(limits.max_peers_per_room)
    app[LIMITS] = limits
    app[STORE] = limit_store if limit_store is not None else InMemoryLimitStore()
    app[SESSIONS] = {}
    track_lingers(app)  # closes still lingering are awaited on cleanup
    if turn is not None:
        app[TURN] = turn  # TURN credentials in every welcome (web/turn.py)

    async def start_broker(app: web.Application) -> None:
        await app[BROKER].start()

    async def stop(app: web.Application) -> None:
        # Clients first (each is told why), then what they used.
        sessions = app[SESSIONS]
        for session in list(sessions):
            session.refuse("shutting-down", "the server is stopping; reconnect shortly",
                           WSCloseCode.GOING_AWAY)
        await app[BROKER].close()
        await app[STORE].aclose()

    app.on_startup.append(start_broker)
    app.on_shutdown.append(stop)

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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _freeze_startup_objects() -> None:
    """Keep what exists before the first client (modules, the app) out of every collection.

    Clients churn through objects that form cycles (tasks, futures, exceptions
    with their tracebacks), so the cyclic collector runs often, and now and then
    a full collection walks every tracked object: with aiohttp and the app
    loaded that is some 40,000 objects and 20-40 ms of this one thread, a pause
    every client on the server feels (profiled under bench_signaling's abuse, it
    set the well-behaved pair's p99). Frozen objects are never scanned, so a
    full collection walks only what clients created since.
    """
    gc.collect()
    gc.freeze()


async def serve(host: str, port: int, ssl_context: ssl.SSLContext | None,
                app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    _freeze_startup_objects()
    server = site._server
    assert isinstance(server, asyncio.Server)
    actual_port = server.sockets[0].getsockname()[1]
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


_LIMIT_FLAGS = {
    # dataclass field: help text (the default is appended)
    "connections_per_address": "simultaneous connections from one address (0: no limit)",
    "joins_per_minute": "joins per minute from one address (0: no limit)",
    "rooms_per_minute": "rooms one address may create per minute (0: no limit)",
    "address_messages_per_second": "messages/s across all connections of one address (0: no limit)",
    "address_burst": "messages one address may send at once before its rate applies",
    "messages_per_second": "messages/s of one connection",
    "burst": "messages one connection may send at once before its rate applies",
    "flood_strikes": "rate-limited messages in a row before the connection is closed",
    "max_message_bytes": "largest message accepted (bytes)",
    "max_peers_per_room": "peers in one room",
    "queue_messages": "messages queued towards one client before it is dropped",
    "queue_bytes": "bytes queued towards one client before it is dropped",
    "close_timeout": "seconds a close may take before the socket is aborted",
    "heartbeat": "seconds between WebSocket pings (0: none)",
}


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (docs/signaling.md)")
    defaults = Limits()
    types = {f.name: f.type for f in fields(Limits)}
    for name, text in _LIMIT_FLAGS.items():
        default = getattr(defaults, name)
        kind = float if types[name] in (float, "float") else int
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=default,
                           metavar="N", help=f"{text} (default {default:g})")


def limits_from_args(args: argparse.Namespace) -> Limits:
    values = {name: getattr(args, name) for name in _LIMIT_FLAGS}
    return Limits(trust_proxy=args.trust_proxy, **values)


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard one (each client is one socket)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


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
    parser.add_argument("--cert-dir", type=Path, default=ROOT / ".certs",
                        help="where the self-signed pair is kept (without --cert/--key)")
    parser.add_argument("--trust-proxy", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="behind N reverse proxies (default 1 when given): take the client "
                             "address from X-Forwarded-For; never set it without a proxy")
    _add_limit_flags(parser)
    parser.add_argument("--redis", metavar="redis://HOST:PORT/DB",
                        help="share rooms, presence and per-address limits with every instance "
                             "using this Redis (default: in memory, this process only)")
    parser.add_argument("--presence-ttl", type=float, default=15.0, metavar="SECONDS",
                        help="with --redis: members of an instance that died leave their rooms "
                             "after this long (heartbeats every SECONDS/3; default 15)")
    add_turn_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise_open_file_limit()
    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    use_tls = args.tls if args.tls is not None else (bool(args.cert) or not _is_loopback(args.host))
    ssl_context = None
    if use_tls:
        if bool(args.cert) != bool(args.key):
            parser.error("--cert and --key go together")
        if args.cert:
            cert, key = args.cert, args.key  # the operator's pair: used as given, never rewritten
        else:
            hosts = [args.host, *lan_addresses()] if args.host in ("0.0.0.0", "::") else [args.host]
            cert, key = self_signed_cert(args.cert_dir, hosts)
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cert, key)
    broker, store = None, None
    if args.redis:
        from web.redis_broker import RedisBroker
        from web.redis_limits import RedisLimitStore
        broker = RedisBroker(args.redis, limits.max_peers_per_room, presence_ttl=args.presence_ttl)
        store = RedisLimitStore(args.redis, ttl=args.presence_ttl, instance_id=broker.instance_id)
    turn, local_turn = turn_from_args(parser, args)
    app = make_app(static_dir=args.static, limits=limits, broker=broker, limit_store=store, turn=turn)
    async def serve_until_terminated() -> None:
        # SIGTERM (systemd, docker stop, a load balancer draining) cancels serve(), whose
        # cleanup tells every client why and, with --redis, takes this process's peers out
        # of their rooms at once instead of after the presence TTL.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(args.host, args.port, ssl_context, app)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_until_terminated())
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if local_turn is not None:
            local_turn.stop()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
