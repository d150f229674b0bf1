"""Rooms and relay, behind a small interface with two implementations.

The server only talks to a :class:`Broker`. :class:`InMemoryBroker` (the default)
keeps rooms in this process; :class:`web.redis_broker.RedisBroker`
(``serve --redis URL``) shares them between several server processes. Both
deliver ``peer-joined`` / ``peer-left`` to the other members and raise
:class:`RoomFull` / :class:`UnknownPeer` the same way; the Redis one may also
raise :class:`BrokerUnavailable`. ``start()`` runs before the first client and
``close()`` after the last one.

Example::

    broker = InMemoryBroker(max_peers_per_room=8)
    peer_id, others = await broker.join("lobby", None, deliver)
    await broker.relay("lobby", peer_id, others[0], {"description": ...})
    await broker.leave("lobby", peer_id)
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pyapp.core.signaling import PeerJoined, PeerLeft, RelayedSignal, ServerMessage
from pyapp.exceptions import BrokerUnavailable, RoomFull, UnknownPeer

# The error classes live in pyapp.exceptions; re-exported so `from web.broker import RoomFull` works.
__all__ = ["Broker", "Deliver", "InMemoryBroker", "BrokerUnavailable", "RoomFull", "UnknownPeer"]

Deliver = Callable[[ServerMessage], Awaitable[None]]


class Broker(Protocol):
    async def start(self) -> None:
        """Connect whatever the broker needs; raise BrokerUnavailable if it cannot."""

    async def close(self) -> None:
        """Remove this process's members (their peers are told) and disconnect."""

    async def join(self, room: str, peer_id: str | None, deliver: Deliver) -> tuple[str, list[str]]:
        """Add a client to `room`; return its peer id and the ids already there."""

    async def leave(self, room: str, peer_id: str) -> None:
        """Remove a client; the others are told it left. Unknown ids are ignored."""

    async def relay(self, room: str, sender: str, to: str, data: dict[str, Any]) -> None:
        """Deliver `data` from `sender` to `to`; raise UnknownPeer if `to` is not in the room."""


class InMemoryBroker:
    """Rooms held in this process's memory."""

    def __init__(self, max_peers_per_room: int = 16) -> None:
        self.max_peers_per_room = max_peers_per_room
        self._rooms: dict[str, dict[str, Deliver]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._rooms.clear()

    def rooms(self) -> dict[str, list[str]]:
        """A snapshot: room name -> peer ids."""
        return {room: list(peers) for room, peers in self._rooms.items()}

    async def join(self, room: str, peer_id: str | None, deliver: Deliver) -> tuple[str, list[str]]:
        peers = self._rooms.setdefault(room, {})
        if len(peers) >= self.max_peers_per_room:
            if not peers:
                del self._rooms[room]
            raise RoomFull(f"room {room!r} is full ({self.max_peers_per_room} peers)")
        if peer_id is None or peer_id in peers:
            peer_id = secrets.token_urlsafe(6)
            while peer_id in peers:
                peer_id = secrets.token_urlsafe(6)
        others = list(peers)
        peers[peer_id] = deliver
        for other in others:
            await peers[other](PeerJoined(peer_id=peer_id))
        return peer_id, others

    async def leave(self, room: str, peer_id: str) -> None:
        peers = self._rooms.get(room)
        if not peers or peers.pop(peer_id, None) is None:
            return
        if not peers:
            del self._rooms[room]
            return
        for deliver in list(peers.values()):
            await deliver(PeerLeft(peer_id=peer_id))

    async def relay(self, room: str, sender: str, to: str, data: dict[str, Any]) -> None:
        target = self._rooms.get(room, {}).get(to)
        if target is None or to == sender:
            raise UnknownPeer(f"peer {to!r} is not in room {room!r}")
        await target(RelayedSignal(sender=sender, data=data))
