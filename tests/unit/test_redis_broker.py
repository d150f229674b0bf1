"""RedisBroker against a real redis-server: two brokers in one process act as two instances."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from pyapp.core.signaling import ErrorMessage, PeerJoined, PeerLeft, RelayedSignal, ServerMessage
from tests.conftest import missing_prerequisite
from tests.redis_server import RedisServer
from web.broker import BrokerUnavailable, RoomFull, UnknownPeer
from web.redis_broker import RedisBroker

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        missing_prerequisite("redis-server is not installed (python3 build.py test installs it)")
    with RedisServer() as server:
        yield server.url


class Inbox:
    """A client's deliver callback that records what it got."""

    def __init__(self) -> None:
        self.got: list[ServerMessage] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: ServerMessage) -> None:
        self.got.append(message)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[ServerMessage], bool], timeout: float = 5) -> Any:
        async def waiter() -> Any:
            while True:
                for message in self.got:
                    if predicate(message):
                        return message
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(waiter(), timeout)


def run(redis_url: str, body: Callable[..., Awaitable[None]], n: int = 2, **options: Any) -> None:
    """Run ``body(*brokers)`` with ``n`` started brokers sharing one fresh key prefix."""

    async def main() -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        brokers = [RedisBroker(redis_url, prefix=prefix, **options) for _ in range(n)]
        for b in brokers:
            await b.start()
        try:
            await asyncio.wait_for(body(*brokers), 30)
        finally:
            for b in brokers:
                if b._tasks:
                    await b.close()

    asyncio.run(main())


async def kill(broker: RedisBroker) -> None:
    """What SIGKILL does to an instance: it stops, and tells Redis nothing."""
    for task in broker._tasks:
        task.cancel()
    await asyncio.gather(*broker._tasks, return_exceptions=True)
    broker._tasks = []
    await broker.redis.aclose()


def test_join_relay_leave_across_instances(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        a, b, c = Inbox(), Inbox(), Inbox()
        a_id, others = await one.join("room", None, a)
        assert others == []
        b_id, others = await two.join("room", None, b)
        assert others == [a_id]
        await a.wait_for(lambda m: m == PeerJoined(peer_id=b_id))
        c_id, others = await one.join("room", None, c)      # same instance as a
        assert sorted(others) == sorted([a_id, b_id])
        await a.wait_for(lambda m: m == PeerJoined(peer_id=c_id))
        await b.wait_for(lambda m: m == PeerJoined(peer_id=c_id))
        assert await one.room_members("room") == {a_id: one.instance_id, b_id: two.instance_id,
                                                  c_id: one.instance_id}

        await one.relay("room", a_id, b_id, {"description": {"type": "offer", "sdp": "x"}, "n": 1.5})
        await b.wait_for(lambda m: m == RelayedSignal(
            sender=a_id, data={"description": {"type": "offer", "sdp": "x"}, "n": 1.5}))
        await two.relay("room", b_id, a_id, {"candidate": None})
        await a.wait_for(lambda m: m == RelayedSignal(sender=b_id, data={"candidate": None}))
        await one.relay("room", a_id, c_id, {"local": True})   # in-process, no Redis
        await c.wait_for(lambda m: m == RelayedSignal(sender=a_id, data={"local": True}))
        # Ordered per sender: 50 signals arrive in the order sent.
        for i in range(50):
            await two.relay("room", b_id, a_id, {"i": i})
        await a.wait_for(lambda m: m == RelayedSignal(sender=b_id, data={"i": 49}))
        seq = [m.data["i"] for m in a.got if isinstance(m, RelayedSignal) and "i" in m.data]
        assert seq == list(range(50))

        with pytest.raises(UnknownPeer, match="not in room"):
            await one.relay("room", a_id, "nobody", {})
        with pytest.raises(UnknownPeer):
            await one.relay("other-room", a_id, b_id, {})   # b is not in that room
        with pytest.raises(UnknownPeer):
            await one.relay("room", a_id, a_id, {})

        await two.leave("room", b_id)
        await a.wait_for(lambda m: m == PeerLeft(peer_id=b_id))
        await c.wait_for(lambda m: m == PeerLeft(peer_id=b_id))
        await two.leave("room", b_id)                        # twice: ignored
        assert sorted(await two.room_members("room")) == sorted([a_id, c_id])
        await one.leave("room", a_id)
        await c.wait_for(lambda m: m == PeerLeft(peer_id=a_id))
        assert PeerLeft(peer_id=a_id) not in a.got           # nobody is told of their own leave

    run(redis_url, body)


def test_room_cap_is_atomic_across_instances(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        async def attempt(broker: RedisBroker) -> str:
            try:
                await broker.join("capped", None, Inbox())
                return "in"
            except RoomFull as exc:
                return str(exc)
        results = await asyncio.gather(*(attempt(one if i % 2 else two) for i in range(12)))
        assert results.count("in") == 3, results
        assert all("is full (3 peers)" in r for r in results if r != "in")
        assert len(await one.room_members("capped")) == 3
        # A place frees up: the next join (on either instance) gets it.
        peer = next(iter(one.rooms().get("capped") or two.rooms()["capped"]))
        holder = one if peer in one.rooms().get("capped", []) else two
        await holder.leave("capped", peer)
        await (two if holder is one else one).join("capped", None, Inbox())

    run(redis_url, body, max_peers_per_room=3)


def test_requested_id_held_on_another_instance_gets_a_fresh_one(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        first, _ = await one.join("ids", "alice-1234", Inbox())
        assert first == "alice-1234"
        second, others = await two.join("ids", "alice-1234", Inbox())
        assert second != "alice-1234" and others == ["alice-1234"]
        await one.leave("ids", "alice-1234")
        again, _ = await two.join("ids", "alice-1234", Inbox())   # free again: reused
        assert again == "alice-1234"

    run(redis_url, body)


def test_killed_instance_members_expire_with_leave_events(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        a, b = Inbox(), Inbox()
        a_id, _ = await one.join("room", None, a)
        b_id, _ = await two.join("room", None, b)
        await asyncio.sleep(1.2)                  # several heartbeats: b stays
        assert b_id in await one.room_members("room")
        assert PeerLeft(peer_id=b_id) not in a.got
        await kill(two)
        # Redis notices the closed subscriber socket a moment later (as after a real SIGKILL).
        while (await one.redis.pubsub_numsub(two.channel))[0][1]:
            await asyncio.sleep(0.01)
        # Before the sweep: relaying to b says its instance is unreachable.
        with pytest.raises(UnknownPeer, match="not reachable"):
            await one.relay("room", a_id, b_id, {"x": 1})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await a.wait_for(lambda m: m == PeerLeft(peer_id=b_id), timeout=5)
        # TTL 0.9 s, sweeps every 0.3 s: gone within TTL + one sweep (+ slack for a busy box).
        assert loop.time() - t0 < 0.9 + 0.3 + 1.0
        assert await one.room_members("room") == {a_id: one.instance_id}
        assert one.swept == 1
        with pytest.raises(UnknownPeer, match="not in room"):
            await one.relay("room", a_id, b_id, {"x": 1})
        assert a.got.count(PeerLeft(peer_id=b_id)) == 1

    run(redis_url, body, presence_ttl=0.9)


def test_members_lost_by_redis_are_restored_and_announced(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        a, b = Inbox(), Inbox()
        a_id, _ = await one.join("room", None, a)
        b_id, _ = await two.join("room", None, b)
        await a.wait_for(lambda m: m == PeerJoined(peer_id=b_id))
        # Redis loses everything (a restart without persistence).
        await one.redis.delete(one._room_key("room"), one._presence_key)
        await a.wait_for(lambda m: a.got.count(PeerJoined(peer_id=b_id)) == 2, timeout=5)
        assert await one.room_members("room") == {a_id: one.instance_id, b_id: two.instance_id}
        assert one.restored + two.restored == 2
        await one.relay("room", a_id, b_id, {"after": "restore"})
        await b.wait_for(lambda m: m == RelayedSignal(sender=a_id, data={"after": "restore"}))

    run(redis_url, body, presence_ttl=0.9)


def test_member_whose_id_was_taken_elsewhere_is_evicted(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        a = Inbox()
        await one.join("room", "dup-peer", a)
        # While `one` was cut off, its member expired and another client got the id on `two`.
        await one.redis.hset(one._room_key("room"), "dup-peer", two.instance_id)
        err = await a.wait_for(lambda m: isinstance(m, ErrorMessage), timeout=5)
        assert err.code == "evicted" and "join room 'room' again" in err.message
        assert "room" not in one.rooms()

    run(redis_url, body, presence_ttl=0.9)


def test_graceful_close_tells_the_other_instances(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        a = Inbox()
        a_id, _ = await one.join("room", None, a)
        b_id, _ = await two.join("room", None, Inbox())
        await two.close()
        await a.wait_for(lambda m: m == PeerLeft(peer_id=b_id), timeout=2)
        assert await one.room_members("room") == {a_id: one.instance_id}

    run(redis_url, body)


def test_unreachable_redis_is_a_clear_error(redis_url: str) -> None:
    async def main() -> None:
        from tests.redis_server import free_port
        broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(BrokerUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:"):
            await broker.start()
        await broker.redis.aclose()

    asyncio.run(main())


def test_redis_going_away_mid_run(redis_url: str) -> None:
    async def main() -> None:
        with RedisServer() as server:
            broker = RedisBroker(server.url, presence_ttl=0.9)
            await broker.start()
            a_id, _ = await broker.join("room", None, Inbox())
            server.stop()
            with pytest.raises(BrokerUnavailable, match="Redis at redis://"):
                await broker.join("room", None, Inbox())
            with pytest.raises(BrokerUnavailable):
                await broker.relay("room", a_id, "someone", {})
            await broker.leave("room", a_id)     # never fails: its presence expires instead
            assert broker.rooms() == {}
            await broker.close()

    asyncio.run(main())


def test_a_big_dead_instance_is_swept_within_one_interval(redis_url: str) -> None:
    async def body(one: RedisBroker, two: RedisBroker) -> None:
        for start in range(0, 2500, 250):  # 2.5 sweep batches of members, in 2500 rooms
            await asyncio.gather(*(two.join(f"r{i}", None, Inbox())
                                   for i in range(start, start + 250)))
        assert await one.redis.zcard(one._presence_key) == 2500
        assert two.restored == 0 and one.swept == 0   # nobody expired while alive
        await kill(two)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while await one.redis.zcard(one._presence_key):
            await asyncio.sleep(0.05)
            assert loop.time() - t0 < 3.0 + 1.0 + 2.0, await one.redis.zcard(one._presence_key)
        assert one.swept == 2500
        assert await one.redis.exists(*(one._room_key(f"r{i}") for i in range(0, 2500, 97))) == 0

    # A TTL long enough that 2500 joins on a loaded machine never outrun the heartbeat.
    run(redis_url, body, presence_ttl=3.0)
