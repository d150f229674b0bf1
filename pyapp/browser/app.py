"""The page's application: join a room, connect to every peer, chat.

``loader.js`` calls :func:`start` once Python is ready. The DOM ids it uses are
in ``web/index.html``. The running app is :data:`APP`, so the console and tests
can reach it (``pyodide.runPython("from pyapp.browser.app import APP")``).

Example (from the browser console)::

    await pyodide.runPythonAsync(`
    from pyapp.browser.app import APP
    await APP.join("lobby")
    `)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import js

from pyapp.browser._ffi import ProxyOwner, is_null, spawn
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import load_and_show_identity
from pyapp.browser.peer import PeerConnection
from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.browser.ui_dashboard import bind_dashboard
from pyapp.browser.ui_power import bind_power_ui
from pyapp.core.negotiation import is_polite
from pyapp.core.signaling import ROOM_RE, ServerError
from pyapp.exceptions import PyAppError

__all__ = ["App", "APP", "start"]

CHAT_LABEL = "chat"


def _el(element_id: str) -> Any:
    return js.document.getElementById(element_id)


@dataclass
class Peer:
    """One remote peer as the app sees it."""

    peer_id: str
    pc: PeerConnection
    chat: DataChannel | None = None
    messages: list[str] = field(default_factory=list)


class App:
    """The chat page's state and DOM bindings."""

    def __init__(self) -> None:
        self.client: SignalingClient | None = None
        self.peers: dict[str, Peer] = {}
        self.messages: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._owner = ProxyOwner("app")
        self._dom = False

    # ------------------------------------------------------------------ DOM

    def bind_dom(self) -> None:
        if self._dom or _el("join-form") is None:
            return
        self._dom = True
        self._owner.listen(_el("join-form"), "submit", self._on_join_submit)
        self._owner.listen(_el("leave"), "click", lambda _e: spawn(self.leave(), "leave"))
        self._owner.listen(_el("chat-form"), "submit", self._on_chat_submit)

    def _on_join_submit(self, event: Any) -> None:
        event.preventDefault()
        room = str(_el("room").value).strip()
        spawn(self.join(room), "joining a room")

    def _on_chat_submit(self, event: Any) -> None:
        event.preventDefault()
        box = _el("message")
        text = str(box.value)
        if text.strip():
            box.value = ""
            spawn(self.send_chat(text), "sending a chat message")

    def show_error(self, message: str) -> None:
        self.errors.append(message)
        js.console.error(f"pyapp: {message}")
        if self._dom:
            _el("error-text").textContent = message
            _el("error").hidden = False

    def _render_status(self) -> None:
        if not self._dom:
            return
        client = self.client
        _el("signaling-state").textContent = client.state if client else "disconnected"
        _el("self-id").textContent = (client.peer_id or "–") if client else "–"
        joined = client is not None and client.room is not None
        _el("join").hidden = joined
        _el("leave").hidden = not joined
        _el("room").disabled = joined
        _el("send").disabled = not any(p.chat and p.chat.ready_state == "open" for p in self.peers.values())

    def _render_peers(self) -> None:
        if not self._dom:
            return
        ul = _el("peers")
        ul.replaceChildren()
        if not self.peers:
            li = js.document.createElement("li")
            li.className = "empty"
            li.textContent = "Nobody here yet."
            ul.appendChild(li)
        for peer in self.peers.values():
            li = js.document.createElement("li")
            li.dataset.peer = peer.peer_id
            name = js.document.createElement("span")
            name.textContent = peer.peer_id
            state = js.document.createElement("span")
            state.className = f"state state-{peer.pc.connection_state}"
            state.textContent = peer.pc.connection_state
            li.append(name, state)
            ul.appendChild(li)
        self._render_status()

    def _render_message(self, sender: str, text: str, system: bool = False) -> None:
        self.messages.append((sender, text))
        if not self._dom:
            return
        li = js.document.createElement("li")
        if system:
            li.className = "system"
            li.textContent = text
        else:
            who = js.document.createElement("span")
            who.className = "from"
            who.textContent = sender
            li.append(who, js.document.createTextNode(text))
        box = _el("messages")
        box.appendChild(li)
        box.scrollTop = box.scrollHeight

    # ------------------------------------------------------------------ room

    async def join(self, room: str) -> None:
        """Join ``room`` on this page's signaling server and connect to everyone in it."""
        if not ROOM_RE.fullmatch(room):
            self.show_error(f"invalid room name {room!r}: use 1-64 letters, digits, _ . -")
            return
        if self.client is not None:
            await self.leave()
        client = self.client = SignalingClient(default_url())
        client.events.on("state", lambda _s: self._render_status())
        client.events.on("peer-joined", self._on_peer_joined)
        client.events.on("peer-left", self._on_peer_left)
        client.events.on("signal", self._on_signal)
        client.events.on("error", self._on_signaling_error)
        try:
            welcome = await client.join(room)
        except (TimeoutError, PyAppError) as exc:
            self.show_error(f"could not join {room!r}: {exc or 'timed out'}")
            client.close()
            self.client = None
            self._render_status()
            return
        self._render_message("", f"joined {room} as {welcome.peer_id}", system=True)
        # The newcomer starts every connection (perfect negotiation would cope either way).
        for peer_id in welcome.peers:
            self._connect(peer_id, initiate=True)
        self._render_peers()

    async def leave(self) -> None:
        for peer in list(self.peers.values()):
            peer.pc.close()
        self.peers.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
        self._render_peers()

    def _on_signaling_error(self, error: Any) -> None:
        if isinstance(error, ServerError):
            self.show_error(f"signaling server: {error.code}: {error.message}")
        else:
            self.show_error(f"signaling: {error}")

    def _on_peer_joined(self, peer_id: str) -> None:
        self._render_message("", f"{peer_id} joined", system=True)
        self._render_peers()

    def _on_peer_left(self, peer_id: str) -> None:
        # The P2P link may outlive a signaling drop; only a failed/closed
        # connection removes the peer (see _on_state).
        self._render_message("", f"{peer_id} left the room", system=True)

    def _on_signal(self, sender: str, data: dict[str, Any]) -> None:
        peer = self.peers.get(sender) or self._connect(sender, initiate=False)
        spawn(peer.pc.handle_signal(data), f"signal from {sender}")

    def _connect(self, peer_id: str, initiate: bool) -> Peer:
        client = self.client
        assert client is not None and client.peer_id is not None
        pc = PeerConnection(
            signal=lambda message: client.send_signal(peer_id, message),
            polite=is_polite(client.peer_id, peer_id),
        )
        peer = self.peers[peer_id] = Peer(peer_id, pc)
        pc.events.on("connectionstatechange", lambda state: self._on_state(peer, state))
        pc.events.on("datachannel", lambda ch: self._adopt_channel(peer, ch))
        pc.events.on("error", lambda exc: self.show_error(f"negotiation with {peer_id}: {exc}"))
        if initiate:
            self._adopt_channel(peer, pc.create_data_channel(CHAT_LABEL))
        self._render_peers()
        return peer

    def _on_state(self, peer: Peer, state: str) -> None:
        if state in ("failed", "closed") and self.peers.get(peer.peer_id) is peer:
            if state == "failed":
                self.show_error(f"connection to {peer.peer_id} failed")
            del self.peers[peer.peer_id]
            peer.pc.close()
        self._render_peers()

    def _adopt_channel(self, peer: Peer, channel: DataChannel) -> None:
        if channel.label != CHAT_LABEL:
            return
        peer.chat = channel
        peer.pc.multiplexer()  # every peer gets one, so it can answer the other's probes
        channel.events.on("open", self._render_status)
        channel.events.on("close", self._render_status)

        def on_message(message: bytes | str) -> None:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            peer.messages.append(text)
            self._render_message(peer.peer_id, text)

        channel.events.on("message", on_message)

    async def send_chat(self, text: str) -> int:
        """Send ``text`` to every peer with an open chat channel; returns how many."""
        sent = 0
        for peer in list(self.peers.values()):
            if peer.chat is not None and peer.chat.ready_state == "open":
                try:
                    await peer.chat.send(text)
                    sent += 1
                except PyAppError as exc:
                    self.show_error(f"could not send to {peer.peer_id}: {exc}")
        if sent:
            self._render_message("me", text)
        else:
            self.show_error("nobody is connected yet")
        return sent


APP = App()


async def start(auto: bool = True) -> App:
    """Bind the page and, with ``?room=`` in the URL and ``auto``, join that room."""
    APP.bind_dom()
    # ---- page features (one line each; every feature module binds its own DOM)
    spawn(load_and_show_identity(), "loading this profile's identity")
    await bind_power_ui(APP)
    await bind_dashboard(APP)
    if APP._dom:
        params = js.URLSearchParams.new(js.location.search)
        room = params.get("room")
        if not is_null(room):
            _el("room").value = room
            if auto:
                spawn(APP.join(str(room)), "joining the room from the URL")
    return APP
