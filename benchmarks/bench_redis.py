"""Signaling relay latency through two instances sharing Redis, against one instance.

Three setups run side by side on one redis-server, measured in interleaved rounds
so machine noise hits them alike:

- ``single``: one instance with the embedded (in-memory) broker, both clients on it;
- ``same``: one ``--redis`` instance, both clients on it (relay stays in-process,
  but every message still takes the per-address token bucket in Redis);
- ``cross``: two ``--redis`` instances, sender on one, receiver on the other.

A relay is timed one way, from the sender's ``send_str`` to the receiver's read,
both clients in this process (one clock), one signal in flight at a time.

Figures: ``redis_relay_p99_ratio`` = cross p99 ÷ single p99 (and the same for the
p50, steadier on a noisy machine), and the p50/p99 of each setup in ms. Run alone: ``python3 -m benchmarks.bench_redis``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import uuid
from typing import Any

import aiohttp

from tests.redis_server import Instance, RedisServer

ROUNDS = 20
PER_ROUND = 100
# The per-address limits would throttle a benchmark that sends thousands of signals from one
# address; relax them equally for every setup (the Redis bucket is still taken per message).
FLAGS = ("--messages-per-second", "100000", "--burst", "100000", "--flood-strikes", "100000",
         "--address-messages-per-second", "100000", "--address-burst", "100000")


class Pair:
    """A sender and a receiver in one room (possibly on two instances)."""

    def __init__(self, sender_url: str, receiver_url: str) -> None:
        self.urls = (sender_url, receiver_url)
        self.samples: list[float] = []

    async def open(self, session: aiohttp.ClientSession) -> None:
        room = "bench-" + uuid.uuid4().hex[:8]
        self.tx = await session.ws_connect(self.urls[0].replace("http", "ws", 1) + "/ws")
        self.rx = await session.ws_connect(self.urls[1].replace("http", "ws", 1) + "/ws")
        await self.tx.send_str(json.dumps({"type": "join", "room": room}))
        await self._expect(self.tx, "welcome")
        await self.rx.send_str(json.dumps({"type": "join", "room": room}))
        self.rx_id = (await self._expect(self.rx, "welcome"))["peer_id"]
        await self._expect(self.tx, "peer-joined")

    @staticmethod
    async def _expect(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
        while True:
            msg = json.loads((await ws.receive(10)).data)
            if msg["type"] == kind:
                return msg
            if msg["type"] == "error":
                raise RuntimeError(f"server refused: {msg}")

    async def round(self, n: int) -> None:
        payload = {"candidate": {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ "
                                              "host", "sdpMid": "0", "sdpMLineIndex": 0}}
        for i in range(n):
            text = json.dumps({"type": "signal", "to": self.rx_id, "data": {**payload, "i": i}})
            t0 = time.perf_counter()
            await self.tx.send_str(text)
            msg = await self._expect(self.rx, "signal")
            self.samples.append(time.perf_counter() - t0)
            if msg["data"]["i"] != i:
                raise RuntimeError(f"relay out of order: {msg['data']['i']} != {i}")


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] * 1000


async def measure(single: str, one: str, two: str) -> dict[str, list[float]]:
    pairs = {"single": Pair(single, single), "same": Pair(one, one), "cross": Pair(one, two)}
    async with aiohttp.ClientSession() as session:
        for pair in pairs.values():
            await pair.open(session)
            await pair.round(50)  # warm-up (connections, scripts loaded)
            pair.samples.clear()
        for r in range(ROUNDS):
            order = list(pairs.values())
            if r % 2:
                order.reverse()
            for pair in order:
                await pair.round(PER_ROUND)
    return {name: pair.samples for name, pair in pairs.items()}


def run(ctx: Any = None) -> dict[str, float]:
    with RedisServer() as redis_server:
        single = Instance(None, *FLAGS)
        one = Instance(redis_server.url, *FLAGS, ttl=15.0)
        two = Instance(redis_server.url, *FLAGS, ttl=15.0)
        try:
            result: dict[str, list[float]] = {}
            errors: list[BaseException] = []

            def target() -> None:  # own thread: sync Playwright may own this thread's loop
                try:
                    result.update(asyncio.run(measure(single.url, one.url, two.url)))
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=target)
            thread.start()
            thread.join(600)
            if errors:
                raise errors[0]
            if thread.is_alive():
                raise RuntimeError("the Redis relay benchmark hung")
        finally:
            for inst in (single, one, two):
                inst.stop()
    figures = {"redis_relay_p99_ratio": p(result["cross"], 99) / p(result["single"], 99),
               "redis_relay_p50_ratio": p(result["cross"], 50) / p(result["single"], 50)}
    for name, samples in result.items():
        figures[f"redis_relay_{name}_p50_ms"] = p(samples, 50)
        figures[f"redis_relay_{name}_p99_ms"] = p(samples, 99)
    note = (f"{len(result['cross'])} relays per setup, one in flight, interleaved; "
            "loopback redis-server 7 and server instances on this machine")
    if ctx is not None:
        ctx.note(note)
    else:
        print(note)
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<32} {value:10.3f}")
