"""TURN for the signaling server: credentials in the welcome, refreshed before they expire.

The server and coturn share one secret. Each peer that joins a room gets, in
its ``welcome``, ICE servers with REST credentials (username
``<expiry>:<peer id>``, password ``base64(HMAC-SHA1(secret, username))``, see
:mod:`pyapp.core.turn`) valid for ``ttl`` seconds. Halfway through that
lifetime the server pushes an ``ice-servers`` message with fresh ones, for as
long as the peer stays joined; a peer that was disconnected gets fresh ones in
the welcome of its rejoin. coturn checks credentials when an allocation starts,
so allocations made earlier outlive the credentials they were made with.

:class:`Coturn` runs Debian's ``turnserver`` on free ports with a generated
secret (``build.py serve --turn-local``, the tests and the benchmark).

Example::

    config = TurnConfig(urls=("turn:203.0.113.5:3478?transport=udp",), secret="...", ttl=3600)
    issuer = TurnIssuer(config)
    grant = issuer.grant("peer-1")       # grant.ice_servers, grant.expires
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyapp.core.signaling import IceServers
from pyapp.core.turn import check_turn_url, ice_server_entry, refresh_time, rest_credentials

__all__ = ["TurnConfig", "IceGrant", "TurnIssuer", "Coturn", "free_port", "SECRET_ENV",
           "add_turn_flags", "turn_from_args"]

log = logging.getLogger("pyapp.turn")

SECRET_ENV = "PYAPP_TURN_SECRET"
"""Environment variable the server reads the shared secret from (instead of ``--turn-secret``)."""
MIN_TTL = 1


@dataclass(frozen=True)
class TurnConfig:
    """Where the relay is and how to sign for it."""

    urls: tuple[str, ...]
    """``turn:HOST:PORT[?transport=udp|tcp]`` (and ``turns:``/``stun:``) URLs, in order of preference."""
    secret: str
    """coturn's ``--static-auth-secret``."""
    ttl: int = 3600
    """Lifetime of each credential in seconds."""

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("TURN needs at least one --turn-url")
        for url in self.urls:
            check_turn_url(url)
        if not self.secret:
            raise ValueError(f"--turn-url needs a shared secret: --turn-secret or ${SECRET_ENV}")
        if self.ttl < MIN_TTL:
            raise ValueError(f"--turn-ttl must be at least {MIN_TTL} second(s), not {self.ttl}")


@dataclass(frozen=True)
class IceGrant:
    """The ICE servers one peer gets, and until when they work."""

    ice_servers: tuple[dict[str, Any], ...]
    """RTCIceServer dictionaries, ready for ``RTCPeerConnection``."""
    expires: int
    """Unix time after which the relay refuses new allocations with them."""
    issued: float
    """Unix time they were made."""


@dataclass
class TurnIssuer:
    """Signs credentials for peers and keeps joined peers supplied with fresh ones."""

    config: TurnConfig
    clock: Callable[[], float] = time.time
    """Wall-clock time (coturn compares the expiry with its own wall clock)."""
    issued: int = field(default=0, init=False)
    """How many grants were made (for logs and tests)."""

    def grant(self, peer_id: str) -> IceGrant:
        now = self.clock()
        expires = math.ceil(now) + self.config.ttl  # at least ttl seconds from now
        creds = rest_credentials(self.config.secret, peer_id, expires)
        self.issued += 1
        return IceGrant((ice_server_entry(self.config.urls, creds),), expires, now)

    def keep_fresh(self, peer_id: str, first: IceGrant,
                   push: Callable[[IceServers], Awaitable[None]]) -> asyncio.Task[None]:
        """Push a fresh grant halfway through each one's lifetime until the task is cancelled.

        ``push`` gets the ``ice-servers`` message to send (a session's ``deliver``).
        """

        async def loop() -> None:
            grant = first
            while True:
                await asyncio.sleep(max(0.05, refresh_time(grant.issued, grant.expires) - self.clock()))
                grant = self.grant(peer_id)
                await push(refresh_message(grant))

        return asyncio.ensure_future(loop())


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port that is free for UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


class Coturn:
    """Debian's coturn (``turnserver``) with REST authentication, on free ports.

    ``listen`` are the addresses it listens and relays on; ``prefix`` runs it
    through another command (``["ip", "netns", "exec", NS]`` for a network
    namespace). Its log is kept in a private folder and quoted in errors.
    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",), *, port: int | None = None,
                 secret: str | None = None, realm: str = "pyapp", prefix: tuple[str, ...] = (),
                 relay_ports: tuple[int, int] | None = None, binary: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.listen = listen
        self.extra = extra
        """More turnserver flags (``("--no-udp",)`` makes it TCP-only)."""
        self.port = port or free_port(host=listen[0] if not prefix else "127.0.0.1")
        self.secret = secret or secrets.token_urlsafe(24)
        self.realm = realm
        self.prefix = prefix
        self.relay_ports = relay_ports or _relay_range(self.port)
        self.binary = binary or shutil.which("turnserver") or "/usr/bin/turnserver"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="pyapp-coturn-"))
        self.log_path = self.dir / "turn.log"

    def urls(self, host: str | None = None, transports: tuple[str, ...] = ("udp",)) -> list[str]:
        """``turn:`` URLs for ``host`` (default: the first listening address)."""
        host = host or self.listen[0]
        return [f"turn:{host}:{self.port}?transport={t}" for t in transports]

    def command(self) -> list[str]:
        cmd = [*self.prefix, self.binary, "-n", "-v",
               "--listening-port", str(self.port), "--realm", self.realm,
               "--use-auth-secret", "--static-auth-secret", self.secret,
               "--min-port", str(self.relay_ports[0]), "--max-port", str(self.relay_ports[1]),
               "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--no-multicast-peers",
               "--log-file", str(self.log_path), "--simple-log", "--no-stdout-log",
               "--pidfile", str(self.dir / "turn.pid"), "--userdb", str(self.dir / "turndb")]
        for addr in self.listen:
            cmd += ["--listening-ip", addr]
        cmd += self.extra
        if any(addr.startswith("127.") for addr in self.listen):
            # Relaying between loopback addresses (one machine, dev and tests only).
            cmd.append("--allow-loopback-peers")
        return cmd

    def start(self, timeout: float = 10.0) -> Coturn:
        if not Path(self.binary).exists():
            raise FileNotFoundError(
                "coturn's turnserver is not installed: `apt-get install coturn` "
                "(python3 build.py serve --turn-local / test install it as root)")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        wanted = {f"UDP listener opened on: {addr}:{self.port}" if "--no-udp" not in self.extra
                  else f"TCP listener opened on : {addr}:{self.port}" for addr in self.listen}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coturn exited with {self.proc.returncode}: {self.log_tail()}")
            text = self.log_text()
            if all(w in text for w in wanted):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"coturn did not open its listeners within {timeout}s: {self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def count(self, pattern: str) -> int:
        """How many log lines match ``pattern`` (a regex), e.g. refused allocations."""
        rx = re.compile(pattern)
        return sum(1 for line in self.log_text().splitlines() if rx.search(line))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Coturn:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started coturn dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG; kept across exec (ip netns exec)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still stops it


def _relay_range(port: int) -> tuple[int, int]:
    """A 200-port relay range derived from the listening port, so two coturns rarely overlap."""
    base = 20000 + (port * 7 + os.getpid()) % 30000
    return base, base + 199


def refresh_message(grant: IceGrant) -> IceServers:
    """The ``ice-servers`` message carrying ``grant`` (the server's push)."""
    return IceServers(ice_servers=grant.ice_servers, expires=grant.expires)


# --------------------------------------------------------------------------- serve flags

def add_turn_flags(parser: argparse.ArgumentParser) -> None:
    """``--turn-url`` (repeatable), ``--turn-secret``, ``--turn-ttl``, ``--turn-local``."""
    group = parser.add_argument_group("TURN relay (docs/deployment.md)")
    group.add_argument("--turn-url", action="append", default=[], metavar="turn:HOST:PORT[?transport=udp|tcp]",
                       help="a TURN server the pages may relay through (repeatable)")
    group.add_argument("--turn-secret", metavar="SECRET",
                       help=f"coturn's --static-auth-secret (default: ${SECRET_ENV})")
    group.add_argument("--turn-ttl", type=int, default=3600, metavar="SECONDS",
                       help="lifetime of each peer's TURN credentials; fresh ones are pushed "
                            "halfway through (default 3600)")
    group.add_argument("--turn-local", action="store_true",
                       help="start a local coturn (free ports, generated secret) and use it")


def _local_addresses(host: str) -> tuple[str, ...]:
    """Where a ``--turn-local`` coturn listens: loopback, plus the served address(es)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ("127.0.0.1",)
    if host in ("0.0.0.0", "::"):
        from web.certs import lan_addresses

        return ("127.0.0.1", *[a for a in lan_addresses() if ":" not in a])
    return ("127.0.0.1", host)


def turn_from_args(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> tuple[TurnIssuer | None, Coturn | None]:
    """The issuer the flags ask for (None without TURN), and the local coturn if one was started."""
    secret = args.turn_secret or os.environ.get(SECRET_ENV, "")
    urls = list(args.turn_url)
    local = None
    if args.turn_local:
        local = Coturn(listen=_local_addresses(args.host), secret=secret or None)
        try:
            local.start()
        except (OSError, RuntimeError) as exc:
            parser.error(f"--turn-local: {exc}")
        secret = local.secret
        urls += [url for addr in local.listen for url in local.urls(addr)]
    if not urls:
        if args.turn_secret:
            parser.error("--turn-secret without --turn-url (or --turn-local): no relay to use it for")
        return None, None
    try:
        config = TurnConfig(tuple(urls), secret, args.turn_ttl)
    except ValueError as exc:
        if local is not None:
            local.stop()
        parser.error(str(exc))
    return TurnIssuer(config), local
