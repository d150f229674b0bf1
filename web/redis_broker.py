"""Rooms shared by several server instances through Redis (``serve --redis URL``).

Every instance holds its own WebSocket clients; Redis holds who is where, and
carries what one instance must tell another. Nothing is kept only in one
process's memory except the sockets themselves.

Keys (``prefix`` defaults to ``pyapp:``)::

    {prefix}room:{room}   HASH   peer id -> id of the instance holding its socket
    {prefix}presence      ZSET   "{room}\\n{peer id}" -> deadline (ms, Redis clock)
    {prefix}inst:{id}     pub/sub channel: one per instance, it subscribes to its own

Design:

- **One channel per instance.** A relay looks the target up in the room hash and
  PUBLISHes to the instance holding it, in one Lua script (one round trip).
  PUBLISH answers how many subscribers got it: 0 means the target's instance is
  gone, and the sender gets ``unknown-peer`` at once instead of silence. A
  target on the sender's own instance is delivered in-process, Redis is not
  asked. Join and leave events go once to every *other* instance that has
  members in the room (the instance itself delivers to its local members
  directly), from inside the same script that changes the room, so an event is
  never published for a change that did not happen, and per-channel ordering
  keeps "joined" before that peer's first signal.
- **Atomic room caps.** The join script checks the cap and adds the member in
  one step, so two instances cannot both admit the 16th peer.
- **Presence is per member, with a TTL.** Each instance refreshes the deadline
  of each of its members every ``presence_ttl / 3`` seconds (one script call per
  500 members). Every instance also sweeps: a script removes the members whose
  deadline passed and publishes their ``peer-left`` to the instances still in
  the room; the script runs atomically, so several sweepers never report one
  departure twice. An instance killed with SIGKILL stops refreshing and its
  members vanish from every room within ``presence_ttl`` plus one sweep
  interval (15 s + 5 s by default). A member whose leave never reached Redis
  (a network blip) expires the same way.
- **Self-healing.** If a live instance finds one of its members missing from
  Redis (it was swept during a stall, or Redis restarted empty), the heartbeat
  puts it back and announces it with ``peer-joined``; if another instance took
  the id meanwhile, the local client is told (``error`` code ``evicted``) and
  dropped from the room here.
- Redis's clock (``TIME`` inside scripts) dates presence, so instances need no
  synchronised clocks.

Messages published while an instance's subscription is reconnecting are lost
(pub/sub has no backlog); signaling peers recover through their own
retransmission and ICE restarts. A Redis error during a client's request
raises :class:`~pyapp.exceptions.BrokerUnavailable` from join and relay; a leave
never fails (the member is dropped here and its presence expires in Redis).

Example::

    broker = RedisBroker("redis://127.0.0.1:6379/0", max_peers_per_room=8)
    await broker.start()
    peer_id, others = await broker.join("lobby", None, deliver)
    await broker.relay("lobby", peer_id, others[0], {"description": ...})
    await broker.leave("lobby", peer_id)
    await broker.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pyapp.core.signaling import ErrorMessage, PeerJoined, PeerLeft, RelayedSignal
from pyapp.exceptions import BrokerUnavailable, RoomFull, UnknownPeer
from web.broker import Deliver

log = logging.getLogger("pyapp.redis")

__all__ = ["RedisBroker", "connect", "raise_if_cancelled"]

# Milliseconds on Redis's own clock (scripts may call TIME since Redis 5's effect replication).
_NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# Publish `msg` once to each distinct instance found in the room hash `key`, except `skip`.
_FANOUT = """
local function fanout(key, prefix, skip, msg)
  local owners = redis.call('HVALS', key)
  local done = {}
  for i = 1, #owners do
    local inst = owners[i]
    if inst ~= skip and not done[inst] then
      done[inst] = true
      redis.call('PUBLISH', prefix .. 'inst:' .. inst, msg)
    end
  end
end
"""

# KEYS: room hash, presence zset. ARGV: room, peer, instance, cap, ttl ms, prefix.
# Returns {"taken"} | {"full", n} | {"ok", other peer ids...}.
_JOIN = _NOW + _FANOUT + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {'taken'} end
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[4]) then return {'full', n} end
local others = redis.call('HKEYS', KEYS[1])
fanout(KEYS[1], ARGV[6], ARGV[3], cjson.encode({t = 'joined', room = ARGV[1], peer = ARGV[2]}))
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1] .. '\\n' .. ARGV[2])
table.insert(others, 1, 'ok')
return others
"""

# KEYS: room hash, presence zset. ARGV: room, peer, instance, prefix. Returns 1 if removed.
_LEAVE = _FANOUT + """
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1] .. '\\n' .. ARGV[2])
fanout(KEYS[1], ARGV[4], ARGV[3], cjson.encode({t = 'left', room = ARGV[1], peer = ARGV[2]}))
return 1
"""

# KEYS: room hash. ARGV: target peer, message, prefix.
# Returns -1 if the target is not in the room, else PUBLISH's receiver count.
_RELAY = """
local inst = redis.call('HGET', KEYS[1], ARGV[1])
if not inst then return -1 end
return redis.call('PUBLISH', ARGV[3] .. 'inst:' .. inst, ARGV[2])
"""

# KEYS: presence zset. ARGV: instance, ttl ms, prefix, then room, peer pairs.
# Refreshes our members; re-adds (and announces) those Redis lost.
# Returns {restored count, "room\\npeer" entries now owned by another instance...}.
_HEARTBEAT = _NOW + _FANOUT + """
local inst, deadline, prefix = ARGV[1], now + tonumber(ARGV[2]), ARGV[3]
local restored, lost = 0, {}
for i = 4, #ARGV, 2 do
  local room, peer = ARGV[i], ARGV[i + 1]
  local key = prefix .. 'room:' .. room
  local owner = redis.call('HGET', key, peer)
  if owner == inst then
    redis.call('ZADD', KEYS[1], deadline, room .. '\\n' .. peer)
  elseif not owner then
    fanout(key, prefix, inst, cjson.encode({t = 'joined', room = room, peer = peer}))
    redis.call('HSET', key, peer, inst)
    redis.call('ZADD', KEYS[1], deadline, room .. '\\n' .. peer)
    restored = restored + 1
  else
    lost[#lost + 1] = room .. '\\n' .. peer
  end
end
table.insert(lost, 1, restored)
return lost
"""

# KEYS: presence zset. ARGV: prefix, batch size. Removes expired members, announces
# their departure to every instance in their room (their own included).
# Returns {expired entries handled, members removed}.
_SWEEP = _NOW + _FANOUT + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
for i = 1, #expired do
  local entry = expired[i]
  redis.call('ZREM', KEYS[1], entry)
  local cut = string.find(entry, '\\n', 1, true)
  local room, peer = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
  local key = ARGV[1] .. 'room:' .. room
  if redis.call('HDEL', key, peer) == 1 then
    removed = removed + 1
    fanout(key, ARGV[1], '', cjson.encode({t = 'left', room = room, peer = peer, expired = true}))
  end
end
return {#expired, removed}
"""

_HEARTBEAT_BATCH = 500
_SWEEP_BATCH = 1000  # members per sweep script (one script blocks Redis while it runs)
_SWEEP_ROUNDS = 50  # batches per interval at most: 50,000 members of a dead instance


def connect(url: str) -> aioredis.Redis:
    """A client whose pool makes a burst of requests wait for a connection (up to 10 s)
    instead of failing with "Too many connections" past its size. 256 requests in
    flight per pool (an instance has two: rooms and limits; mind Redis's ``maxclients``)."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=256, timeout=10,
                                                    decode_responses=True)
    return aioredis.Redis.from_pool(pool)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py swallowed.

    redis-py (8.1) may catch a CancelledError that lands mid-command and finish or
    retry the command, returning normally; the task's cancel request stays pending
    (``Task.cancelling()``). Without this check a cancelled loop would keep going
    and ``close()`` would wait for it forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisBroker:
    """A :class:`~web.broker.Broker` whose rooms span every instance using the same Redis.

    ``presence_ttl`` is how long a member survives without a heartbeat from its
    instance; heartbeats and sweeps run every ``presence_ttl / 3`` seconds.
    """

    def __init__(self, url: str, max_peers_per_room: int = 16, *, presence_ttl: float = 15.0,
                 prefix: str = "pyapp:", instance_id: str | None = None) -> None:
        if presence_ttl <= 0:
            raise ValueError("presence_ttl must be positive")
        self.url = url
        self.max_peers_per_room = max_peers_per_room
        self.presence_ttl = presence_ttl
        self.interval = presence_ttl / 3
        self.prefix = prefix
        self.instance_id = instance_id or secrets.token_hex(8)
        self.channel = f"{prefix}inst:{self.instance_id}"
        self.redis: aioredis.Redis = connect(url)
        self._join = self.redis.register_script(_JOIN)
        self._leave = self.redis.register_script(_LEAVE)
        self._relay = self.redis.register_script(_RELAY)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._sweep = self.redis.register_script(_SWEEP)
        self._rooms: dict[str, dict[str, Deliver]] = {}  # this instance's members only
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._closed = False
        self._wake = asyncio.Event()
        self.swept = 0
        """Members this instance's sweeps removed (any instance's)."""
        self.restored = 0
        """Local members the heartbeat had to put back into Redis."""
        self.undeliverable = 0
        """Signals that reached this instance for a peer no longer here."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, subscribe to this instance's channel, start heartbeats and sweeps."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"cannot reach Redis at {self.url}: {str(exc).rstrip('.')}") from None
        self._tasks = [asyncio.ensure_future(self._listen()),
                       asyncio.ensure_future(self._presence_loop())]
        try:
            await asyncio.wait_for(self._subscribed.wait(), 10)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable(f"could not subscribe to {self.channel} on {self.url}") from None
        # debug: the first line a server prints is its URL (tests and scripts read it).
        log.debug("redis broker: instance %s on %s (presence ttl %g s)",
                 self.instance_id, self.url, self.presence_ttl)

    async def close(self) -> None:
        """Leave every local member's room (their peers elsewhere get ``peer-left``), stop."""
        self._closed = True
        for room, peers in list(self._rooms.items()):
            for peer_id in list(peers):
                await self.leave(room, peer_id)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.redis.aclose()

    def rooms(self) -> dict[str, list[str]]:
        """A snapshot of this instance's own members: room name -> peer ids."""
        return {room: list(peers) for room, peers in self._rooms.items()}

    async def room_members(self, room: str) -> dict[str, str]:
        """Every member of ``room`` across instances: peer id -> instance id."""
        return await self._call(self.redis.hgetall(self._room_key(room)))

    # ------------------------------------------------------------------ Broker

    async def join(self, room: str, peer_id: str | None, deliver: Deliver) -> tuple[str, list[str]]:
        ttl_ms = int(self.presence_ttl * 1000)
        for _ in range(8):
            candidate = peer_id or secrets.token_urlsafe(6)
            reply = await self._call(self._join(
                keys=[self._room_key(room), self._presence_key],
                args=[room, candidate, self.instance_id, self.max_peers_per_room, ttl_ms,
                      self.prefix]))
            if reply[0] == "full":
                raise RoomFull(f"room {room!r} is full ({self.max_peers_per_room} peers)")
            if reply[0] == "ok":
                break
            peer_id = None  # taken (here or on another instance): pick a fresh id
        else:
            raise BrokerUnavailable("could not find a free peer id")  # 8 random collisions
        others = list(reply[1:])
        local = self._rooms.setdefault(room, {})
        local[candidate] = deliver
        for other, other_deliver in list(local.items()):
            if other != candidate:
                await other_deliver(PeerJoined(peer_id=candidate))
        return candidate, others

    async def leave(self, room: str, peer_id: str) -> None:
        local = self._rooms.get(room)
        if not local or local.pop(peer_id, None) is None:
            return
        if not local:
            del self._rooms[room]
        else:
            for deliver in list(local.values()):
                await deliver(PeerLeft(peer_id=peer_id))
        try:
            await self._leave(keys=[self._room_key(room), self._presence_key],
                              args=[room, peer_id, self.instance_id, self.prefix])
            raise_if_cancelled()
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            # No longer heartbeated here, so its presence expires: the other instances
            # get peer-left within the TTL instead of now. A leave never fails a client.
            log.warning("redis unreachable while %s left %s (%s); it expires within %g s",
                        peer_id, room, exc, self.presence_ttl)

    async def relay(self, room: str, sender: str, to: str, data: dict[str, Any]) -> None:
        if to == sender:
            raise UnknownPeer(f"peer {to!r} is not in room {room!r}")
        target = self._rooms.get(room, {}).get(to)
        if target is not None:
            await target(RelayedSignal(sender=sender, data=data))
            return
        message = json.dumps({"t": "signal", "room": room, "to": to, "from": sender, "data": data})
        receivers = await self._call(self._relay(keys=[self._room_key(room)],
                                                 args=[to, message, self.prefix]))
        if receivers < 0:
            raise UnknownPeer(f"peer {to!r} is not in room {room!r}")
        if receivers == 0:
            raise UnknownPeer(f"peer {to!r} is in room {room!r}, but its server instance is "
                              f"not reachable (it will be removed within {self.presence_ttl:g} s)")

    # ------------------------------------------------------------------ internals

    @property
    def _presence_key(self) -> str:
        return f"{self.prefix}presence"

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    async def _call(self, awaitable: Any) -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            raise BrokerUnavailable(f"Redis at {self.url} failed: {str(exc).rstrip('.')}") from None
        raise_if_cancelled()
        return result

    async def _listen(self) -> None:
        """Read this instance's channel forever; resubscribe after a lost connection."""
        backoff = 0.1
        while not self._closed:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                raise_if_cancelled()
                self._subscribed.set()
                backoff = 0.1
                self._wake.set()  # re-assert presence at once after a reconnect
                async for message in pubsub.listen():
                    raise_if_cancelled()
                    if message.get("type") == "message":
                        await self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                raise_if_cancelled()
                log.warning("redis subscription lost (%s); retrying in %.1f s", exc, backoff)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _dispatch(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
            kind, room, local = msg["t"], msg["room"], self._rooms.get(msg["room"], {})
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed message on %s: %.200r", self.channel, raw)
            return
        if kind == "signal":
            target = local.get(msg["to"])
            if target is None:
                self.undeliverable += 1
                log.info("signal from %s to %s in %s: the target left this instance",
                         msg["from"], msg["to"], room)
                return
            await target(RelayedSignal(sender=msg["from"], data=msg["data"]))
        elif kind in ("joined", "left"):
            peer = msg["peer"]
            if peer in local:
                # Our own member, swept while we were stalled: the heartbeat restores it.
                self._wake.set()
                return
            event = PeerJoined(peer_id=peer) if kind == "joined" else PeerLeft(peer_id=peer)
            for deliver in list(local.values()):
                await deliver(event)

    async def _presence_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self._beat()
                for _ in range(_SWEEP_ROUNDS):  # a big dead instance: several batches at once
                    handled, removed = await self._sweep(keys=[self._presence_key],
                                                         args=[self.prefix, _SWEEP_BATCH])
                    raise_if_cancelled()
                    self.swept += int(removed)
                    if int(handled) < _SWEEP_BATCH:
                        break
            except (RedisError, OSError) as exc:
                raise_if_cancelled()
                log.warning("redis presence heartbeat failed: %s", exc)

    async def _beat(self) -> None:
        members = [(room, peer) for room, peers in self._rooms.items() for peer in peers]
        ttl_ms = int(self.presence_ttl * 1000)
        for start in range(0, len(members), _HEARTBEAT_BATCH):
            args: list[Any] = [self.instance_id, ttl_ms, self.prefix]
            for room, peer in members[start:start + _HEARTBEAT_BATCH]:
                args += [room, peer]
            reply = await self._heartbeat(keys=[self._presence_key], args=args)
            raise_if_cancelled()
            self.restored += int(reply[0])
            if reply[0]:
                log.warning("redis had lost %s of this instance's members; restored", reply[0])
            for entry in reply[1:]:
                await self._evict(*entry.split("\n", 1))

    async def _evict(self, room: str, peer_id: str) -> None:
        """Another instance holds this peer id now: drop our stale member."""
        local = self._rooms.get(room, {})
        deliver = local.pop(peer_id, None)
        if not local:
            self._rooms.pop(room, None)
        if deliver is None:
            return
        log.warning("peer %s in %s now belongs to another instance; dropping it here", peer_id, room)
        await deliver(ErrorMessage(code="evicted", ref="join", message=(
            f"this server lost contact with the others and peer id {peer_id!r} was given to "
            f"another client; join room {room!r} again")))
        for other in list(local.values()):
            await other(PeerLeft(peer_id=peer_id))
