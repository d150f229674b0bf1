"""Abusive signaling clients, run as their own process (so they do not slow the measuring one).

Flooders, a reconnect flood from one address, 10 MB frames, a slow reader and
malformed input, all at once, for ``--seconds``; then it prints a summary line
of JSON with how many rounds each kind made. Used by the load test and by
``benchmarks/bench_signaling.py``.

    python -m tests.load.abusers http://127.0.0.1:8000 --seconds 8
    python -m tests.load.abusers http://127.0.0.1:8000 --kinds flooder,reconnect   # a subset

A subset is for profiling one kind at a time; the load test and the benchmark run
all five.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.server_cases import Client, fresh_address, room

READY = "abusers running"


def small_rcvbuf(addr_info: Any) -> socket.socket:
    """A client socket with a 4 KB receive buffer (a reader that barely reads)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


KINDS = ("flooder", "reconnect", "10MB-frame", "malformed", "slow-reader")


async def abuse(url: str, stop: asyncio.Event, rounds: Counter[str],
                kinds: tuple[str, ...] = KINDS) -> None:
    """Run the ``kinds`` of abuse (default: all of them) against ``url`` until ``stop`` is set."""

    async def looping(name: str, fn: Callable[[], Awaitable[None]]) -> None:
        while not stop.is_set():
            try:
                await fn()
                rounds[name] += 1
            except (aiohttp.ClientError, ConnectionError, TimeoutError, AssertionError):
                rounds[name + "-failed"] += 1  # refused, reset or closed under us: expected
                await asyncio.sleep(0.05)

    async def flooder() -> None:
        c = await Client.connect(url)
        for i in range(400):
            await c.send({"type": "ping", "id": i})
        await c.refusal(timeout=5)
        await c.close()

    async def reconnector() -> None:
        c = await Client.connect(url, address="127.99.99.99")
        await c.send({"type": "join", "room": "abuse-" + room()})
        await c.close()

    async def big_frame() -> None:
        c = await Client.connect(url)
        await c.send("x" * 10_000_000)
        await c.refusal(timeout=5)
        await c.close()

    async def malformed() -> None:
        c = await Client.connect(url)
        for text in ("{", "[]", '{"type":"x"}', '{"a":NaN}', "[" * 20_000):
            await c.send(text)
        await c.close()

    async def slow_reader() -> None:
        r = room()
        connector = aiohttp.TCPConnector(local_addr=(fresh_address(), 0), socket_factory=small_rcvbuf)
        async with aiohttp.ClientSession(connector=connector) as s:
            feeder = await Client.connect(url)
            await feeder.join(r)
            slow = await s.ws_connect(url.replace("http", "ws", 1) + "/ws")
            await slow.send_json({"type": "join", "room": r})
            target = (await feeder.recv_type("peer-joined"))["peer_id"]
            blob = "y" * 60_000
            dropped = False
            while not stop.is_set() and not dropped:
                for _ in range(40):  # 2.4 MB at once: within the feeder's burst of 100
                    await feeder.send({"type": "signal", "to": target, "data": {"b": blob}})
                deadline = asyncio.get_running_loop().time() + 1.0  # ~40 signals/s on average
                while not dropped:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    try:
                        msg = await feeder.recv(timeout=left)
                    except TimeoutError:
                        break
                    dropped = msg["type"] == "peer-left"
            rounds["slow-reader-dropped"] += dropped
            await feeder.close()
            await slow.close()

    workers = {"flooder": (flooder, 4), "reconnect": (reconnector, 1), "10MB-frame": (big_frame, 2),
               "malformed": (malformed, 1), "slow-reader": (slow_reader, 1)}
    await asyncio.gather(*(looping(kind, workers[kind][0])
                           for kind in kinds for _ in range(workers[kind][1])))


async def _main(url: str, seconds: float, kinds: tuple[str, ...] = KINDS) -> Counter[str]:
    stop = asyncio.Event()
    rounds: Counter[str] = Counter()
    task = asyncio.ensure_future(abuse(url, stop, rounds, kinds))
    print(READY, flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 20)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated kinds of abuse (default: all of {', '.join(KINDS)})")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    rounds = asyncio.run(_main(args.url, args.seconds, kinds))
    print(json.dumps(dict(rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
