"""Per-address limits shared by every instance using one Redis (``serve --redis URL``).

:class:`RedisLimitStore` implements :class:`web.limits.LimitStore`, so an address
that spreads its connections, joins or messages over several instances meets the
same limits as on one.

Keys (``prefix`` defaults to ``pyapp:``)::

    {prefix}limit:instances       ZSET  instance id -> deadline (ms, Redis clock)
    {prefix}limit:conns:{id}      HASH  address -> open connections on that instance (TTL)
    {prefix}limit:bucket:{key}    HASH  tokens, last (ms): a token bucket (TTL)

- **Connections** are counted per instance. Opening one sums the address's count
  over the live instances and adds ours in one Lua script, so two instances
  cannot both admit the 64th. An instance refreshes its deadline and its hash's
  TTL every ``ttl / 3`` seconds; when it dies, its counts stop counting at its
  deadline and the hash expires by itself. If Redis loses the hash (a restart),
  the next heartbeat writes it back from this process's own counts.
- **Token buckets** live in Redis and are dated by Redis's clock. A bucket
  expires when it would have refilled (``burst / rate`` seconds): a full bucket
  and no bucket mean the same, so memory follows the active addresses.
- **Redis unreachable:** the limits do not fail the clients; each instance
  enforces them on its own (its own connections, a local bucket) until Redis
  answers again, then writes its counts back at the next heartbeat. A deployment
  of N instances then allows up to N times a per-address limit for that while.

Example::

    store = RedisLimitStore("redis://127.0.0.1:6379/0")
    assert await store.open_connection("192.0.2.7", limit=2)
    assert await store.take("msg:192.0.2.7", rate=100.0, burst=200.0) == 0.0
    await store.close_connection("192.0.2.7")
    await store.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from web.limits import InMemoryLimitStore
from web.redis_broker import connect, raise_if_cancelled

log = logging.getLogger("pyapp.redis")

__all__ = ["RedisLimitStore"]

_NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: instances zset. ARGV: instance, address, limit, ttl ms, prefix. Returns 1 if counted.
_OPEN = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
local mine = ARGV[5] .. 'limit:conns:' .. ARGV[1]
local limit = tonumber(ARGV[3])
if limit > 0 then
  local total = 0
  local live = redis.call('ZRANGE', KEYS[1], 0, -1)
  for i = 1, #live do
    total = total + tonumber(redis.call('HGET', ARGV[5] .. 'limit:conns:' .. live[i], ARGV[2]) or 0)
  end
  if total >= limit then return 0 end
end
redis.call('HINCRBY', mine, ARGV[2], 1)
redis.call('PEXPIRE', mine, tonumber(ARGV[4]))
return 1
"""

# KEYS: our conns hash. ARGV: address.
_CLOSE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: instances zset, our conns hash. ARGV: instance, ttl ms, rewrite (0/1), then address,
# count pairs: this process's counts, written over the hash when `rewrite` (a write failed
# while Redis was away) or when Redis lost the hash. Returns 1 if it wrote them.
_BEAT = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local restored = 0
if ARGV[3] == '1' or (#ARGV > 3 and redis.call('EXISTS', KEYS[2]) == 0) then
  redis.call('DEL', KEYS[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  restored = 1
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return restored
"""

# KEYS: bucket. ARGV: rate (tokens/s), burst, cost. Returns "0" or the seconds to wait, as text
# (Redis turns Lua numbers into integers).
_TAKE = _NOW + """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = burst
if state[1] then
  tokens = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate / 1000)
end
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1)
return tostring(wait)
"""


class RedisLimitStore:
    """A :class:`web.limits.LimitStore` in Redis; ``ttl`` is how long a dead instance's
    connections keep counting."""

    def __init__(self, url: str, *, ttl: float = 15.0, prefix: str = "pyapp:",
                 instance_id: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self.instance_id = instance_id or secrets.token_hex(8)
        self.redis: aioredis.Redis = connect(url)
        self._open = self.redis.register_script(_OPEN)
        self._close = self.redis.register_script(_CLOSE)
        self._beat = self.redis.register_script(_BEAT)
        self._take = self.redis.register_script(_TAKE)
        self._counts: dict[str, int] = {}  # this instance's open connections per address
        self._task: asyncio.Task[None] | None = None
        self._local = InMemoryLimitStore()  # buckets while Redis is unreachable
        self._dirty = False  # a count change did not reach Redis: rewrite at the next beat
        self.degraded = False
        """True while Redis is unreachable and limits are enforced per instance."""
        self.restored = 0
        """Times the heartbeat had to write this instance's counts back into Redis."""

    @property
    def _instances_key(self) -> str:
        return f"{self.prefix}limit:instances"

    @property
    def _conns_key(self) -> str:
        return f"{self.prefix}limit:conns:{self.instance_id}"

    def connections(self, address: str) -> int:
        """Connections of ``address`` open on this instance."""
        return self._counts.get(address, 0)

    async def total_connections(self, address: str) -> int:
        """Connections of ``address`` counted across the live instances."""
        live = await self.redis.zrangebyscore(
            self._instances_key, "(" + str(await self._now()), "+inf")
        total = 0
        for inst in live:
            total += int(await self.redis.hget(f"{self.prefix}limit:conns:{inst!s}", address) or 0)
        return total

    async def _now(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def open_connection(self, address: str, limit: int) -> bool:
        if self._task is None:
            self._task = asyncio.ensure_future(self._heartbeat_loop())
        try:
            counted = await self._open(keys=[self._instances_key], args=[
                self.instance_id, address, limit, int(self.ttl * 1000), self.prefix])
            raise_if_cancelled()
            self._recovered()
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            self._degrade(exc)
            counted = limit <= 0 or self._counts.get(address, 0) < limit
            self._dirty = self._dirty or bool(counted)
        if counted:
            self._counts[address] = self._counts.get(address, 0) + 1
        return bool(counted)

    async def close_connection(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count < 0:
            return
        if count:
            self._counts[address] = count
        else:
            del self._counts[address]
        try:
            await self._close(keys=[self._conns_key], args=[address])
            raise_if_cancelled()
            self._recovered()
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            self._degrade(exc)
            self._dirty = True

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        try:
            wait = await self._take(keys=[f"{self.prefix}limit:bucket:{key}"],
                                    args=[repr(float(rate)), repr(float(burst)), repr(float(cost))])
            raise_if_cancelled()
            self._recovered()
            return float(wait)
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            self._degrade(exc)
            return self._local.take_now(key, rate, burst, cost)

    def _degrade(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            log.warning("redis at %s unreachable (%s): per-address limits now hold per instance",
                        self.url, exc)

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("redis at %s answers again: per-address limits shared again", self.url)

    async def heartbeat(self) -> None:
        """Refresh this instance's deadline (done every ``ttl / 3`` s once a connection opened)."""
        rewrite, self._dirty = self._dirty, False
        args: list[Any] = [self.instance_id, int(self.ttl * 1000), int(rewrite)]
        for address, count in self._counts.items():
            args += [address, count]
        try:
            restored = await self._beat(keys=[self._instances_key, self._conns_key], args=args)
            raise_if_cancelled()
        except BaseException:
            self._dirty = self._dirty or rewrite
            raise
        self._recovered()
        if restored and not rewrite:
            self.restored += 1
            log.warning("redis had lost this instance's connection counts; restored")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                raise_if_cancelled()
                log.warning("redis limit heartbeat failed: %s", exc)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            # This instance's connections stop counting now, not at its deadline.
            await self.redis.zrem(self._instances_key, self.instance_id)
            await self.redis.delete(self._conns_key)
        self._counts.clear()
        await self.redis.aclose()
