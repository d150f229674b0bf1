"""Page side of tests/e2e/test_multi_instance.py (called with ``pypage.call``):
a signaling client and WebRTC peer connections, one per remote peer.

The newcomer dials (impolite); the dialled side answers (polite). The test
joins, then reads presence events, messages and errors between its steps, so
each page keeps its peer in the module global ``_PEER`` from :func:`join` on.
A failure to apply a remote signal is recorded in ``errors`` (with its repr),
and the test asserts that list is empty after every chat.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pyapp.browser.datachannel import DataChannel
from pyapp.browser.peer import PeerConnection
from pyapp.browser.signaling import SignalingClient, default_url


@dataclass
class _Peer:
    client: SignalingClient
    events: list[list[str]] = field(default_factory=list)
    inbox: list[list[Any]] = field(default_factory=list)
    pcs: dict[str, PeerConnection] = field(default_factory=dict)
    channels: dict[str, DataChannel] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def listen(self, peer: str, ch: DataChannel) -> None:
        self.channels[peer] = ch
        ch.events.on("message", lambda m: self.inbox.append([peer, m]))

    def pc_for(self, peer: str, polite: bool) -> PeerConnection:
        if peer not in self.pcs:
            pc = PeerConnection(signal=lambda m: self.client.send_signal(peer, m), polite=polite)
            pc.events.on("datachannel", lambda ch: self.listen(peer, ch))
            self.pcs[peer] = pc
        return self.pcs[peer]

    async def apply(self, sender: str, data: dict[str, Any]) -> None:
        try:
            await self.pc_for(sender, True).handle_signal(data)
        except Exception as exc:   # recorded; the test asserts there are none
            self.errors.append(repr(exc))


_PEER: _Peer | None = None


def _peer() -> _Peer:
    if _PEER is None:
        raise RuntimeError("join() was not called on this page")
    return _PEER


async def join(room: str) -> dict[str, Any]:
    """Join ``room``; our session id and the peers the welcome listed."""
    global _PEER
    peer = _PEER = _Peer(SignalingClient(default_url()))
    client = peer.client
    client.events.on("peer-joined", lambda p: peer.events.append(["joined", p]))
    client.events.on("peer-left", lambda p: peer.events.append(["left", p]))
    client.events.on("signal", lambda sender, data: asyncio.ensure_future(peer.apply(sender, data)))
    welcome = await client.join(room)
    return {"id": client.peer_id, "peers": list(welcome.peers)}


async def dial(peer: str, text: str) -> None:
    """Connect to ``peer`` (impolite), open a "chat" channel and send ``text``."""
    me = _peer()
    ch = me.pc_for(peer, False).create_data_channel("chat")
    me.listen(peer, ch)
    await ch.wait_open(20)
    await ch.send(text)


async def reply(peer: str, text: str) -> None:
    """Send ``text`` on the channel ``peer`` opened to us."""
    await _peer().channels[peer].send(text)


def events() -> list[list[str]]:
    """The presence events seen, in order: ``["joined" | "left", peer]``."""
    return _peer().events


def inbox() -> list[list[Any]]:
    """Every message received, in order: ``[peer, message]``."""
    return _peer().inbox


def errors() -> list[str]:
    return _peer().errors


def room_peers() -> list[str]:
    """The peers the signaling client currently lists, sorted."""
    return sorted(_peer().client.peers)


def first_connection_state() -> str:
    """The connection state of the first peer connection made."""
    pcs = _peer().pcs
    return pcs[next(iter(pcs))].connection_state


def leave() -> None:
    """Close the signaling client (the server tells the room we left)."""
    _peer().client.close()
