"""The page's application: join a room, connect to every peer, verify it, chat end to end encrypted.

``loader.js`` calls :func:`start` once Python is ready. The DOM ids it uses are
in ``web/index.html``. The running app is :data:`APP`, so the console and tests
can reach it (``pyodide.runPython("from pyapp.browser.app import APP")``).

Secure by default, for every peer:

1. The connection comes up (signaling relays the SDP; nothing is trusted yet).
2. ``pc.authenticate()`` proves both identity keys over this very DTLS session
   (a relaying man in the middle fails here). A failure closes the connection;
   the peer stays listed as *failed* with the reason, and gets no chat.
3. Over the native ``chat`` channel, sealed with ``send_encrypted`` under the
   session's keys, each side first sends a hello with the name its user chose.
   The name is checked against the known-peers store (trust on first use): a
   name seen before with another key is a loud *key changed* warning, and chat
   to and from that peer is held until the user presses *Accept new key*.
4. Only then is the peer *verified*: chat goes out to it, and its messages are
   shown. The peer list shows each peer's name, PeerId and safety code (the
   same on both pages: compare it aloud to rule out a relay).

A peer that leaves the room disappears from the list when the server says so;
its link is kept hidden for :data:`LEFT_GRACE` seconds in case it was only a
signaling drop and the peer rejoins under the same session id.

Example (from the browser console)::

    await pyodide.runPythonAsync(`
    from pyapp.browser.app import APP
    await APP.join("lobby")
    `)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import js

from pyapp.browser._ffi import ProxyOwner, is_null, spawn
from pyapp.browser.app_peer import Peer
from pyapp.browser.auth import SecurityState, security_of
from pyapp.browser.connection import Connection
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import Identity, TrustStore, load_and_show_identity
from pyapp.browser.relay import RelayWatcher, apply_ice_servers
from pyapp.browser.secure import receive_encrypted, send_encrypted
from pyapp.browser.signaling import SignalingClient, default_url
from pyapp.browser.ui_dashboard import bind_dashboard
from pyapp.browser.ui_peers import (
    FAILED,
    KEY_CHANGED,
    VERIFIED,
    VERIFYING,
    clean_name,
    peer_item,
    reason_text,
)
from pyapp.browser.ui_power import bind_power_ui
from pyapp.core.negotiation import is_polite
from pyapp.core.security.identity import TrustStatus
from pyapp.core.security.reasons import AuthReason, auth_error
from pyapp.core.security.safety import safety_code
from pyapp.core.signaling import ROOM_RE, ErrorMessage
from pyapp.exceptions import (
    AuthenticationError,
    ConnectionClosedError,
    DecryptionError,
    IdentityFormatError,
    PyAppError,
    SignalingRefusedError,
)

__all__ = ["APP", "AUTH_TIMEOUT", "LEFT_GRACE", "App", "Peer", "start"]

CHAT_LABEL = "chat"
AUTH_TIMEOUT = 15.0
"""Seconds for the handshake plus the peer's hello."""
LEFT_GRACE = 5.0
"""Seconds a peer that left the room keeps its (hidden) link, in case it rejoins."""
MAX_CHAT = 4000
NAME_KEY = "pyapp-name"

def _el(element_id: str) -> Any:
    return js.document.getElementById(element_id)


class App:
    """The chat page's state and DOM bindings."""

    def __init__(self) -> None:
        self.client: SignalingClient | None = None
        self.peers: dict[str, Peer] = {}
        self.departed: dict[str, Peer] = {}
        self.messages: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.name = ""
        self._identity: asyncio.Task[Identity | None] | None = None
        self._trust: TrustStore | None = None
        self._trust_lock = asyncio.Lock()
        self._owner = ProxyOwner("app")
        self._dom = False
        self.ice_transport_policy = "all"
        """``"relay"`` with ``?relay=1``: connect only through the TURN relay (to check that path)."""

    # ------------------------------------------------------------------ DOM

    def bind_dom(self) -> None:
        if self._dom or _el("join-form") is None:
            return
        self._dom = True
        self._owner.listen(_el("join-form"), "submit", self._on_join_submit)
        self._owner.listen(_el("leave"), "click", lambda _e: spawn(self.leave(), "leave"))
        self._owner.listen(_el("chat-form"), "submit", self._on_chat_submit)
        self._owner.listen(_el("peers"), "click", self._on_peers_click)
        self._owner.listen(_el("name"), "change", lambda _e: self.set_name(str(_el("name").value)))

    def _on_join_submit(self, event: Any) -> None:
        event.preventDefault()
        self.set_name(str(_el("name").value))
        room = str(_el("room").value).strip()
        spawn(self.join(room), "joining a room")

    def _on_chat_submit(self, event: Any) -> None:
        event.preventDefault()
        box = _el("message")
        text = str(box.value)
        if text.strip():
            box.value = ""
            spawn(self.send_chat(text), "sending a chat message")

    def _on_peers_click(self, event: Any) -> None:
        target = event.target
        if is_null(target) or is_null(target.dataset) or is_null(target.dataset.accept):
            return
        spawn(self.accept_new_key(str(target.dataset.accept)), "accepting a new key")

    def set_name(self, name: str) -> None:
        """The name sent to peers (in the encrypted hello) and shown in the header."""
        self.name = clean_name(name)
        storage: Any = getattr(js.globalThis, "localStorage", None)
        if not is_null(storage):
            storage.setItem(NAME_KEY, self.name)
        if self._dom:
            _el("name").value = self.name
            _el("self-name").textContent = self.name or "(no name)"

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
        state = _el("signaling-state")
        state.textContent = client.state if client else "disconnected"
        # The signaling session id is routing detail, not an identity: a tooltip only.
        session = client.peer_id if client and client.peer_id else ""
        state.dataset.session = session
        state.title = f"signaling session {session} (changes every visit)" if session else ""
        joined = client is not None and client.room is not None
        _el("join").hidden = joined
        _el("leave").hidden = not joined
        _el("room").disabled = joined
        _el("send").disabled = not self.chat_peers()

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
            ul.appendChild(peer_item(peer))
        self._render_status()

    def _render_message(self, sender: str, text: str, system: bool = False,
                        peer: Peer | None = None) -> None:
        self.messages.append((sender, text))
        if not self._dom:
            return
        li = js.document.createElement("li")
        if system:
            li.className = "system"
            li.textContent = text
        else:
            li.className = "mine" if peer is None else "theirs"
            who = js.document.createElement("span")
            who.className = "from"
            who.textContent = sender
            li.append(who)
            if peer is not None and peer.auth is not None:
                # A name is only a claim (a peer may call itself "me"): the start of the
                # PeerId goes with every line it sends.
                tag = js.document.createElement("span")
                tag.className = "tag"
                tag.textContent = str(peer.auth.peer_id)[:4]
                tag.title = f"PeerId {peer.auth.peer_id}"
                li.append(tag)
            li.append(js.document.createTextNode(text))
        box = _el("messages")
        box.appendChild(li)
        box.scrollTop = box.scrollHeight

    # ------------------------------------------------------------------ identity & trust

    async def identity(self) -> Identity | None:
        """This profile's identity (loaded once; None where WebCrypto/IndexedDB are missing)."""
        if self._identity is None:
            self._identity = spawn(load_and_show_identity(), "loading this profile's identity")
        return await asyncio.shield(self._identity)

    async def trust_store(self) -> TrustStore:
        """The known-peers store (loaded once; a damaged one is reported and replaced)."""
        async with self._trust_lock:
            if self._trust is None:
                try:
                    self._trust = await TrustStore.load()
                except (IdentityFormatError, PyAppError) as exc:
                    self.show_error(f"known peers could not be read ({exc}); starting a new list")
                    self._trust = TrustStore()
            return self._trust

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
        client.events.on("ice-servers", self._on_ice_servers)
        try:
            welcome = await client.join(room)
        except (TimeoutError, PyAppError) as exc:
            self.show_error(f"could not join {room!r}: {exc or 'timed out'}")
            client.close()
            self.client = None
            self._render_status()
            return
        self._render_message("", f"joined {room}", system=True)
        # The newcomer starts every connection (perfect negotiation would cope either way).
        for peer_id in welcome.peers:
            self._connect(peer_id, initiate=True)
        self._render_peers()

    async def leave(self) -> None:
        for peer in [*self.peers.values(), *self.departed.values()]:
            self._drop(peer)
        self.peers.clear()
        self.departed.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
        self._render_peers()

    def _on_signaling_error(self, error: Any) -> None:
        if isinstance(error, SignalingRefusedError):
            self.show_error(str(error))  # a full sentence: what was refused and why (its code)
        elif isinstance(error, ErrorMessage):
            self.show_error(f"signaling server: {error.code}: {error.message}")
        else:
            self.show_error(f"signaling: {error}")

    def _on_peer_joined(self, peer_id: str) -> None:
        back = self.departed.pop(peer_id, None)
        if back is not None and not back.pc.closed:
            # Only its signaling socket had dropped: the link survived.
            if back.gone_task is not None:
                back.gone_task.cancel()
            self.peers[peer_id] = back
        self._render_peers()

    def _on_peer_left(self, peer_id: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        self._render_message("", f"{self._label(peer)} left", system=True)
        if peer.verification == FAILED or peer.pc.closed:
            self._drop(peer)
        else:
            self.departed[peer_id] = peer
            peer.gone_task = spawn(self._forget_later(peer), "forgetting a departed peer")
        self._render_peers()

    async def _forget_later(self, peer: Peer) -> None:
        await asyncio.sleep(LEFT_GRACE)
        if self.departed.get(peer.peer_id) is peer:
            del self.departed[peer.peer_id]
            self._drop(peer)

    def _drop(self, peer: Peer) -> None:
        for task in (peer._task, peer.gone_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        peer.pc.close()

    def _label(self, peer: Peer) -> str:
        if peer.name:
            return peer.name
        return str(peer.auth.peer_id) if peer.auth is not None else "an unverified peer"

    def _on_signal(self, sender: str, data: dict[str, Any]) -> None:
        peer = self.peers.get(sender) or self.departed.get(sender) or self._connect(sender, initiate=False)
        if peer.pc.closed:  # a peer that failed verification: its signals go nowhere
            return
        spawn(peer.pc.handle_signal(data), f"signal from {sender}")

    def _connect(self, peer_id: str, initiate: bool) -> Peer:
        client = self.client
        assert client is not None and client.peer_id is not None
        pc = Connection(
            signal=lambda message: client.send_signal(peer_id, message),
            polite=is_polite(client.peer_id, peer_id),
            ice_servers=client.ice_servers,  # TURN credentials from the welcome (or newer)
            ice_transport_policy=self.ice_transport_policy,
        )
        RelayWatcher(pc).events.on("relay-error", lambda exc: self.show_error(str(exc)))
        peer = self.peers[peer_id] = Peer(peer_id, pc)
        pc.events.on("connectionstatechange", lambda state: self._on_state(peer, state))
        pc.events.on("datachannel", lambda ch: self._adopt_channel(peer, ch))
        pc.events.on("error", lambda exc: self.show_error(f"negotiation with {peer_id}: {exc}"))
        if initiate:
            self._adopt_channel(peer, pc.create_data_channel(CHAT_LABEL))
        peer._task = spawn(self._secure(peer), f"verifying peer {peer_id}")
        self._render_peers()
        return peer

    def _on_ice_servers(self, servers: list[dict[str, Any]]) -> None:
        """Fresh TURN credentials: every open connection's next ICE restart uses them."""
        for peer in self.peers.values():
            apply_ice_servers(peer.pc, servers)

    def _gone(self, peer: Peer, why: str) -> None:
        """The link to ``peer`` ended: off the list at once (a failed one stays, marked)."""
        if peer.verification == FAILED or (
                peer.verification == VERIFYING and peer._task is not None and not peer._task.done()):
            # A failed check closes the connection itself; while verifying, the
            # handshake task says why it ended (and marks the peer failed).
            self._render_peers()
            return
        for table in (self.peers, self.departed):
            if table.get(peer.peer_id) is peer:
                del table[peer.peer_id]
                if table is self.peers:
                    self._render_message("", f"{self._label(peer)}: {why}", system=True)
        self._drop(peer)
        self._render_peers()

    def _on_state(self, peer: Peer, state: str) -> None:
        if state == "failed":
            self._gone(peer, "connection failed")
        elif state == "closed":
            self._gone(peer, "connection closed")
        else:
            self._render_peers()

    def _adopt_channel(self, peer: Peer, channel: DataChannel) -> None:
        if channel.label != CHAT_LABEL or peer.chat is not None:
            return
        peer.chat = channel
        peer.pc.multiplexer()  # every peer gets one, so it can answer the other's probes
        channel.events.on("open", self._render_status)
        channel.events.on("close", lambda: self._gone(peer, "left (its channel closed)"))
        future = peer.chat_future()
        if not future.done():
            future.set_result(channel)

    # ------------------------------------------------------------------ verification

    async def _secure(self, peer: Peer) -> None:
        """Authenticate, exchange hellos, check the name's key, then read chat (see the module doc)."""
        try:
            identity = await self.identity()
            if identity is None:
                raise AuthenticationError(
                    "no_identity", "this page has no identity key (WebCrypto or IndexedDB is "
                    "missing: open the page over https or on localhost); nothing is sent")
            store = await self.trust_store()
            result = await peer.pc.authenticate(identity, known_peers=store, timeout=AUTH_TIMEOUT)
            # The peer may still reject us afterwards (its check of our key failed: an alert).
            security_of(peer.pc).events.on("status", lambda state: self._on_security(peer, state))
            peer.auth, peer.trust = result, result.trust
            peer.code = safety_code(identity.alg, identity.public_key, result.peer_alg,
                                    result.peer_public_key)
            self._render_peers()
            chat = await asyncio.wait_for(asyncio.shield(peer.chat_future()), AUTH_TIMEOUT)
            await chat.wait_open(AUTH_TIMEOUT)
            await send_encrypted(chat, json.dumps({"type": "hello", "name": self.name}),
                                 session=result)
            hello = await asyncio.wait_for(self._next(peer, chat), AUTH_TIMEOUT)
        except AuthenticationError as exc:
            self._failed(peer, exc)
            return
        except TimeoutError:
            self._failed(peer, auth_error(AuthReason.TIMEOUT, "no hello from the peer"))
            return
        except ConnectionClosedError:
            # Typically the peer's check of *us* failed and it hung up.
            self._failed(peer, auth_error(AuthReason.PEER_CLOSED, "before its hello"))
            return
        if hello is None or hello.get("type") != "hello":
            self._failed(peer, auth_error(AuthReason.PROTOCOL_VIOLATION,
                                          "the first app message was not a hello"))
            return
        await self._judge(peer, clean_name(hello.get("name")))
        await self._read_chat(peer, chat)

    def _on_security(self, peer: Peer, state: SecurityState) -> None:
        if state.status == "failed" and state.error is not None:
            self._failed(peer, state.error)

    def _failed(self, peer: Peer, exc: AuthenticationError) -> None:
        if peer.verification == FAILED:
            return  # the first reason stands (closing the link makes later steps fail too)
        peer.verification, peer.failure = FAILED, exc
        label, sentence = reason_text(exc)
        self._render_message("", f"verification failed ({label}): {sentence}. No chat with this peer.",
                             system=True)
        peer.pc.close()
        self._render_peers()

    async def _judge(self, peer: Peer, name: str) -> None:
        """Trust on first use for the peer's name: pin it, or block on a changed key."""
        assert peer.auth is not None
        peer.name = name
        store = await self.trust_store()
        auth = peer.auth
        verdict = store.peers.check(auth.peer_alg, auth.peer_public_key, contact=name or None)
        if verdict.status is TrustStatus.IDENTITY_CHANGED:
            peer.verification, peer.trust = KEY_CHANGED, verdict
            self.show_error(f"SECURITY WARNING: {name!r} presented a different key than before "
                            f"(now {verdict.peer_id}, was {verdict.previous}). Chat with it is "
                            "blocked until you accept the new key.")
            self._render_peers()
            await peer._accepted.wait()
            return
        self._pin(peer, store)
        peer.verification = VERIFIED
        self._render_message("", f"{self._label(peer)} verified", system=True)
        self._render_peers()

    def _pin(self, peer: Peer, store: TrustStore) -> None:
        assert peer.auth is not None
        now = float(js.Date.now()) / 1000
        store.peers.record(peer.auth.peer_alg, peer.auth.peer_public_key,
                           contact=peer.name or None, now=now)
        spawn(store.save(), "saving the known peers")

    async def accept_new_key(self, peer_id: str) -> None:
        """The user accepted a changed key: re-pin the name to it and unblock chat."""
        peer = self.peers.get(peer_id)
        if peer is None or peer.verification != KEY_CHANGED or peer.auth is None:
            return
        store = await self.trust_store()
        store.peers.accept_change(peer.name, peer.auth.peer_id)
        self._pin(peer, store)
        peer.trust = store.peers.check(peer.auth.peer_alg, peer.auth.peer_public_key,
                                       contact=peer.name)
        peer.verification = VERIFIED
        self._render_message("", f"you accepted the new key of {peer.name!r}", system=True)
        peer._accepted.set()
        self._render_peers()

    # ------------------------------------------------------------------ chat

    async def _next(self, peer: Peer, chat: DataChannel) -> dict[str, Any] | None:
        """The next app message from ``peer``, decrypted and parsed (bad ones are reported, skipped)."""
        while True:
            try:
                data = await receive_encrypted(chat, session=peer.auth)
            except DecryptionError as exc:
                self.show_error(f"a message from {self._label(peer)} was dropped: {exc}")
                continue
            try:
                message = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                message = None
            if isinstance(message, dict):
                return message
            self.show_error(f"{self._label(peer)} sent a message this app cannot read; dropped")

    async def _read_chat(self, peer: Peer, chat: DataChannel) -> None:
        try:
            while True:
                message = await self._next(peer, chat)
                if message is None or message.get("type") != "chat":
                    continue
                text = message.get("text")
                if isinstance(text, str) and text:
                    text = text[:MAX_CHAT]
                    peer.messages.append(text)
                    self._render_message(self._label(peer), text, peer=peer)
        except ConnectionClosedError:
            self._gone(peer, "left (its channel closed)")

    def chat_peers(self) -> list[Peer]:
        """Peers that get chat now: verified, with the chat channel open."""
        return [p for p in self.peers.values()
                if p.verified and p.chat is not None and p.chat.ready_state == "open"]

    async def send_chat(self, text: str) -> int:
        """Send ``text``, sealed, to every verified peer; returns how many."""
        sent = 0
        payload = json.dumps({"type": "chat", "text": text[:MAX_CHAT]})
        for peer in self.chat_peers():
            assert peer.chat is not None and peer.auth is not None
            try:
                await send_encrypted(peer.chat, payload, session=peer.auth)
                sent += 1
            except PyAppError as exc:
                self.show_error(f"could not send to {self._label(peer)}: {exc}")
        if sent:
            self._render_message("me", text)
        else:
            waiting = any(p.verification in (VERIFYING, KEY_CHANGED) for p in self.peers.values())
            self.show_error("nobody verified to send to yet" if waiting else "nobody is connected yet")
        return sent


APP = App()


async def start(auto: bool = True) -> App:
    """Bind the page and, with ``?room=`` in the URL and ``auto``, join that room.

    Nothing here waits on a device API: the power and dashboard cards bind in
    the background (a ``getBattery()`` that never answers must not hold up the page).
    """
    APP.bind_dom()
    relay = js.URLSearchParams.new(js.location.search).get("relay")
    APP.ice_transport_policy = "relay" if not is_null(relay) and str(relay) == "1" else "all"
    spawn(APP.identity(), "loading this profile's identity")
    spawn(bind_power_ui(APP), "binding the device card")
    spawn(bind_dashboard(APP), "binding the dashboard")
    if APP._dom:
        params = js.URLSearchParams.new(js.location.search)
        name = params.get("name")
        storage: Any = getattr(js.globalThis, "localStorage", None)
        if is_null(name) and not is_null(storage):
            name = storage.getItem(NAME_KEY)
        APP.set_name("" if is_null(name) else str(name))
        room = params.get("room")
        if not is_null(room):
            _el("room").value = room
            if auto:
                spawn(APP.join(str(room)), "joining the room from the URL")
    return APP
