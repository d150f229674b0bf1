"""One remote peer as the chat app sees it: :class:`Peer` (used by :mod:`pyapp.browser.app`).

The app keeps one per signaling session id in ``APP.peers``; the peer list
(:mod:`pyapp.browser.ui_peers`) renders it. ``pyapp.browser.app`` re-exports it.

Example (from the browser console, with the app running)::

    from pyapp.browser.app import APP
    for peer in APP.peers.values():
        print(peer.name, peer.verification, peer.code)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pyapp.browser.auth import AuthResult
from pyapp.browser.connection import Connection
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.ui_peers import VERIFIED, VERIFYING
from pyapp.core.security.identity import TrustResult
from pyapp.core.security.safety import SafetyCode
from pyapp.exceptions import AuthenticationError

__all__ = ["Peer"]


@dataclass
class Peer:
    """One remote peer as the app sees it.

    ``peer_id`` is the signaling session id (routing only; it changes every
    visit). The peer's identity is ``auth.peer_id`` (its PeerId), once verified.
    """

    peer_id: str
    pc: Connection
    chat: DataChannel | None = None
    messages: list[str] = field(default_factory=list)
    verification: str = VERIFYING
    """``verifying``, ``verified``, ``failed`` or ``key-changed`` (blocked until accepted)."""
    auth: AuthResult | None = None
    """The authenticated session (keys for send_encrypted)."""
    code: SafetyCode | None = None
    """The safety code of our key and the peer's."""
    failure: AuthenticationError | None = None
    """Why verification failed."""
    name: str = ""
    """The name the peer's user chose (from its encrypted hello)."""
    trust: TrustResult | None = None
    """The known-peers verdict for this PeerId and name."""
    gone_task: asyncio.Task[Any] | None = None
    _chat_ready: asyncio.Future[DataChannel] | None = None
    _accepted: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[Any] | None = None

    @property
    def verified(self) -> bool:
        return self.verification == VERIFIED

    def chat_future(self) -> asyncio.Future[DataChannel]:
        if self._chat_ready is None:
            self._chat_ready = asyncio.get_event_loop().create_future()
        return self._chat_ready
