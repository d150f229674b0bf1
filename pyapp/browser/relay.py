"""TURN relays in the page: clear errors when a relay refuses, and fresh credentials.

The signaling server sends short-lived TURN credentials in its welcome and
pushes fresh ones before they expire (:mod:`pyapp.core.turn`). A connection
takes the newest list when it is made; :func:`apply_ice_servers` hands a fresh
list to a connection that already exists, so its next ICE restart can allocate.

When a relay refuses (wrong shared secret, expired credentials: STUN error
401) or does not answer (701), the browser fires ``icecandidateerror`` on the
RTCPeerConnection and otherwise just gathers no relay candidate.
:class:`RelayWatcher` turns those events into :class:`~pyapp.exceptions.RelayError`
(which names the relay and says what to check) on its ``relay-error`` event.

Example (in the page)::

    welcome = await client.join("lobby")
    pc = PeerConnection(signal=..., ice_servers=client.ice_servers, ice_transport_policy="relay")
    watcher = RelayWatcher(pc)
    watcher.events.on("relay-error", lambda err: print(err))   # RelayError
"""

from __future__ import annotations

from typing import Any

from pyapp._events import Emitter
from pyapp.browser._ffi import ProxyOwner, is_null, js_object
from pyapp.browser.peer import IceServer, PeerConnection
from pyapp.exceptions import RelayError

__all__ = ["RelayWatcher", "apply_ice_servers"]


class RelayWatcher:
    """Reports a connection's TURN/STUN failures as :class:`RelayError`.

    Events: ``relay-error`` (RelayError), once per relay URL and error code.
    The watcher stops when the connection closes, or on :meth:`close`.
    """

    def __init__(self, pc: PeerConnection | Any) -> None:
        pc = _wrapper(pc)
        self.events = Emitter()
        self.errors: list[RelayError] = []
        self.ignored = 0
        """701 events not reported: another interface reached the server, or ICE already connected."""
        self._seen: set[tuple[str, int]] = set()
        self._unanswered: list[RelayError] = []
        self._reached = False
        self._pc: PeerConnection | None = pc
        self._owner = ProxyOwner("relay watcher")
        self._owner.listen(pc.js_pc, "icecandidateerror", self._on_candidate_error)
        self._owner.listen(pc.js_pc, "icecandidate", self._on_candidate)
        self._owner.listen(pc.js_pc, "icegatheringstatechange", self._on_gathering)
        pc.events.on("connectionstatechange", self._on_state)

    def _on_candidate_error(self, event: Any) -> None:
        url = str(event.url or "")
        if not url.startswith(("turn:", "turns:", "stun:", "stuns:")):
            return  # not about one of our ICE servers
        code = int(event.errorCode or 0)
        error = RelayError(url, code, str(event.errorText or ""))
        if code == 701:
            # No answer through one local interface (Chromium also reports the sockets
            # it closes after connecting): a failure only if no interface got an answer
            # by the end of gathering.
            pc = self._pc
            if pc is not None and pc.ice_connection_state in ("connected", "completed"):
                self.ignored += 1
            else:
                self._unanswered.append(error)
            return
        self._report(error)

    def _report(self, error: RelayError) -> None:
        key = (error.url, error.error_code)
        if key in self._seen:
            return  # the browser retries and reports each attempt
        self._seen.add(key)
        self.errors.append(error)
        self.events.emit("relay-error", error)

    def _on_candidate(self, event: Any) -> None:
        candidate = event.candidate
        if not is_null(candidate) and str(candidate.type) in ("relay", "srflx"):
            self._reached = True  # a server answered (through at least one interface)

    def _on_gathering(self, _event: Any) -> None:
        pc = self._pc
        if pc is None:
            return
        # A later gathering round (negotiation, ICE restart) reuses the ports of the
        # first and may gather nothing new: "reached" stays true once a server answered.
        if str(pc.js_pc.iceGatheringState) == "complete":
            unanswered, self._unanswered = self._unanswered, []
            # Chromium ends gathering once ICE connects, abandoning allocations still
            # under way (it reports them as 701 too): the connection did not need them.
            if self._reached or str(pc.js_pc.iceConnectionState) in ("connected", "completed"):
                self.ignored += len(unanswered)
                return
            for error in unanswered:
                self._report(error)

    def _on_state(self, state: str) -> None:
        if state == "closed":
            self.close()

    def close(self) -> None:
        """Stop listening (idempotent)."""
        if self._pc is not None:
            self._pc.events.off("connectionstatechange", self._on_state)
            self._pc = None
        self._owner.close()


def _wrapper(pc: PeerConnection | Any) -> PeerConnection:
    """The RTCPeerConnection wrapper of ``pc`` (a PeerConnection, or a Connection holding one)."""
    if isinstance(pc, PeerConnection):
        return pc
    peer = getattr(pc, "peer", None)
    if isinstance(peer, PeerConnection):
        return peer
    raise TypeError(f"expected a PeerConnection or a Connection, not {type(pc).__name__}")


def apply_ice_servers(pc: PeerConnection | Any, ice_servers: list[IceServer]) -> None:
    """Give an existing connection a fresh ICE-server list (``setConfiguration``).

    Allocations already made keep working; the list is used for the next
    gathering (an ICE restart). A closed connection is left alone.
    """
    pc = _wrapper(pc)
    if pc.closed:
        return
    config = pc.js_pc.getConfiguration()
    config.iceServers = js_object({"servers": list(ice_servers)}).servers
    pc.js_pc.setConfiguration(config)
    pc.ice_servers = list(ice_servers)
