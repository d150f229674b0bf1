"""The app's peer list: one ``<li>`` per peer with its identity, verification state and safety code.

Every text a peer chose (its name) goes in with ``textContent``, never as HTML.
A row reads, for example::

    bob  kq3x-...-a2fm                                  connected
    ✓ verified · first contact (key pinned)
    SAFETY CODE 61569 26681 47697 28239 86044 16486 00402 80342

and for a name that came back with another key, a warning with an *Accept new
key* button (``data-accept`` = the peer's session id; the app handles the click).

Example (what ``App._render_peers`` does)::

    from pyapp.browser.ui_peers import peer_item
    ul.appendChild(peer_item(peer))
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

import js

from pyapp.core.security.identity import TrustStatus
from pyapp.core.security.reasons import describe
from pyapp.exceptions import AuthenticationError

if TYPE_CHECKING:
    from pyapp.browser.app_peer import Peer

__all__ = ["FAILED", "KEY_CHANGED", "MAX_NAME", "VERIFIED", "VERIFYING", "clean_name",
           "peer_item", "reason_text", "trust_text"]

VERIFYING, VERIFIED, FAILED, KEY_CHANGED = "verifying", "verified", "failed", "key-changed"
"""A peer's verification states; only ``verified`` peers get chat."""
MAX_NAME = 32


def clean_name(text: object) -> str:
    """A display name as the app keeps it: printable, single-spaced, at most 32 characters."""
    if not isinstance(text, str):
        return ""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(kept.split())[:MAX_NAME]


def reason_text(exc: AuthenticationError) -> tuple[str, str]:
    """``(short label, sentence)`` for an authentication failure, from its reason code."""
    return str(exc.reason).replace("_", " "), str(exc) if str(exc) != exc.reason else describe(exc.reason)


def peer_item(peer: Peer) -> Any:
    """The list item for ``peer`` (see the module docstring)."""
    doc = js.document

    def span(cls: str, text: str) -> Any:
        el = doc.createElement("span")
        el.className = cls
        el.textContent = text  # names and ids come from the peer: never innerHTML
        return el

    li = doc.createElement("li")
    li.dataset.peer = peer.peer_id
    li.dataset.verification = peer.verification
    li.className = f"peer trust-{peer.verification}"
    head = doc.createElement("div")
    head.className = "peer-head"
    who = peer.name or ("unverified peer" if peer.auth is None else "(no name)")
    head.append(span("name", who))
    if peer.auth is not None:
        pid = span("pid", str(peer.auth.peer_id))
        pid.title = "PeerId: the hash of this peer's identity key"
        li.dataset.peerId = peer.auth.peer_id.value
        head.append(pid)
    state = peer.pc.connection_state
    head.append(span(f"state state-{state}", state))
    li.append(head)
    li.append(span(f"trust trust-{peer.verification}", trust_text(peer)))
    if peer.verification == FAILED and peer.failure is not None:
        li.append(span("why", reason_text(peer.failure)[1]))
    if peer.code is not None and peer.verification != FAILED:
        code = doc.createElement("div")
        code.className = "code"
        code.append(span("label", "Safety code"))
        digits = span("digits", "")
        first, second = peer.code.lines  # one half per key: textContent stays str(code)
        digits.append(span("half", first), doc.createTextNode(" "), span("half", second))
        digits.title = "Read it aloud with this person: the same code on both screens means no relay"
        code.append(digits)
        li.append(code)
    if peer.verification == KEY_CHANGED:
        warn = doc.createElement("div")
        warn.className = "warning"
        warn.setAttribute("role", "alert")
        previous = peer.trust.previous if peer.trust is not None else None
        warn.append(span("text", (
            f"⚠ {peer.name!r} now has a different key (was {previous}). It may be someone "
            "else. Chat is blocked. Compare the safety code with them in person or by phone "
            "before you accept.")))
        button = doc.createElement("button")
        button.type = "button"
        button.className = "accept"
        button.dataset.accept = peer.peer_id
        button.textContent = "Accept new key"
        warn.append(button)
        li.append(warn)
    return li

def trust_text(peer: Peer) -> str:
    """The verification state in words."""
    if peer.verification == VERIFYING:
        return "verifying…"
    if peer.verification == FAILED:
        label = reason_text(peer.failure)[0] if peer.failure is not None else "unknown"
        return f"✗ verification failed: {label} — no chat"
    if peer.verification == KEY_CHANGED:
        return "⚠ KEY CHANGED — chat blocked"
    seen = peer.trust is not None and peer.trust.status is TrustStatus.KNOWN
    return "✓ verified · " + ("known contact" if seen else "first contact (key pinned)")
