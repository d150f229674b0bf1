"""RedisLimitStore against a real redis-server: two stores in one process act as two instances."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import missing_prerequisite
from tests.redis_server import RedisServer
from web.redis_limits import RedisLimitStore

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        missing_prerequisite("redis-server is not installed (python3 build.py test installs it)")
    with RedisServer() as server:
        yield server.url


def run(redis_url: str, body: Callable[..., Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        stores = [RedisLimitStore(redis_url, prefix=prefix, **options) for _ in range(2)]
        try:
            await asyncio.wait_for(body(*stores), 30)
        finally:
            for s in stores:
                await s.aclose()

    asyncio.run(main())


def test_connection_limit_is_atomic_across_instances(redis_url: str) -> None:
    async def body(one: RedisLimitStore, two: RedisLimitStore) -> None:
        opened = await asyncio.gather(*(
            (one if i % 2 else two).open_connection("192.0.2.7", limit=3) for i in range(10)))
        assert opened.count(True) == 3, opened
        assert one.connections("192.0.2.7") + two.connections("192.0.2.7") == 3
        assert await one.total_connections("192.0.2.7") == 3
        # Other addresses are counted apart; limit 0 means no limit.
        assert await one.open_connection("192.0.2.8", limit=3)
        assert all(await asyncio.gather(*(two.open_connection("192.0.2.9", 0) for _ in range(20))))
        holder = one if one.connections("192.0.2.7") else two
        await holder.close_connection("192.0.2.7")
        assert await one.total_connections("192.0.2.7") == 2
        assert await two.open_connection("192.0.2.7", limit=3)
        assert not await one.open_connection("192.0.2.7", limit=3)

    run(redis_url, body)


def test_dead_instance_connections_stop_counting(redis_url: str) -> None:
    async def body(one: RedisLimitStore, two: RedisLimitStore) -> None:
        for _ in range(2):
            assert await two.open_connection("198.51.100.1", limit=2)
        assert not await one.open_connection("198.51.100.1", limit=2)
        await asyncio.sleep(1.0)      # heartbeats keep them counted past the ttl
        assert not await one.open_connection("198.51.100.1", limit=2)
        # `two` dies without a word (SIGKILL).
        assert two._task is not None
        two._task.cancel()
        await asyncio.gather(two._task, return_exceptions=True)
        two._task = None
        await two.redis.aclose()
        await asyncio.sleep(0.9)
        assert await one.open_connection("198.51.100.1", limit=2)
        assert await one.total_connections("198.51.100.1") == 1

    run(redis_url, body, ttl=0.6)


def test_graceful_close_releases_at_once_and_lost_counts_are_restored(redis_url: str) -> None:
    async def body(one: RedisLimitStore, two: RedisLimitStore) -> None:
        assert await two.open_connection("203.0.113.5", limit=1)
        assert await one.open_connection("203.0.113.6", limit=5)
        await one.redis.delete(one._conns_key)      # Redis lost it (restart)
        await one.heartbeat()
        assert one.restored == 1
        assert await two.total_connections("203.0.113.6") == 1
        await two.aclose()
        assert await one.open_connection("203.0.113.5", limit=1)

    run(redis_url, body)


def test_token_bucket_is_shared_and_expires_when_full(redis_url: str) -> None:
    async def body(one: RedisLimitStore, two: RedisLimitStore) -> None:
        key = "msg:192.0.2.50"
        waits = [await (one if i % 2 else two).take(key, rate=10.0, burst=5.0) for i in range(5)]
        assert waits == [0.0] * 5
        wait = await one.take(key, rate=10.0, burst=5.0)
        assert 0.0 < wait <= 0.1 + 1e-9, wait
        assert await two.take(key, rate=10.0, burst=5.0, cost=3.0) > 0.2   # refused, nothing spent
        await asyncio.sleep(wait + 0.02)
        assert await two.take(key, rate=10.0, burst=5.0) == 0.0
        ttl_ms = await one.redis.pttl(f"{one.prefix}limit:bucket:{key}")
        assert 0 < ttl_ms <= 501, ttl_ms        # refilled to burst in <= 0.5 s: then it is gone
        await asyncio.sleep(0.6)
        assert await one.redis.exists(f"{one.prefix}limit:bucket:{key}") == 0
        assert [await one.take(key, rate=10.0, burst=5.0) for _ in range(5)] == [0.0] * 5

    run(redis_url, body)


def test_without_redis_limits_hold_per_instance_then_are_shared_again(redis_url: str) -> None:
    async def main() -> None:
        server = RedisServer()
        store = RedisLimitStore(server.url, ttl=0.6)
        try:
            assert await store.open_connection("192.0.2.1", 3)
            server.stop()
            # Redis is gone: the clients are not failed; this instance enforces the limits alone.
            assert [await store.take("msg:192.0.2.1", 1.0, 2.0) for _ in range(2)] == [0.0, 0.0]
            assert await store.take("msg:192.0.2.1", 1.0, 2.0) > 0.5
            assert await store.open_connection("192.0.2.1", 3)
            assert await store.open_connection("192.0.2.1", 3)
            assert not await store.open_connection("192.0.2.1", 3)
            await store.close_connection("192.0.2.1")
            assert store.degraded and store.connections("192.0.2.1") == 2
            # Redis is back (empty): the next heartbeat writes this instance's counts back.
            server = RedisServer(port=server.port)
            await asyncio.sleep(0.6)
            assert not store.degraded
            assert await store.total_connections("192.0.2.1") == 2
            assert await store.open_connection("192.0.2.1", 3)
            assert not await store.open_connection("192.0.2.1", 3)
        finally:
            await store.aclose()
            server.stop()

    asyncio.run(main())


def test_a_cancelled_redis_call_stays_cancelled(redis_url: str) -> None:
    """redis-py may swallow a CancelledError mid-command; our calls re-raise it (else close hangs)."""
    async def body(one: RedisLimitStore, _two: RedisLimitStore) -> None:
        assert await one.open_connection("192.0.2.77", 0)
        swallowed = 0
        for i in range(200):
            task = asyncio.ensure_future(one.heartbeat())
            for _ in range(i % 7):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not task.cancelled() and task.cancelling():
                swallowed += 1
        assert swallowed == 0

    run(redis_url, body)
