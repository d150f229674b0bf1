"""End to end: the app is secure by default (real server, real pages, the app's own UI).

* Two pages verify each other before any chat, show the same safety code, and
  the chat bytes that leave each page (what a relay terminating DTLS would see)
  never contain the plaintext.
* A peer that leaves disappears at once; a name that comes back with a new key
  is a loud warning and its chat is held until the user accepts the key.
* A peer whose signature does not verify gets no chat, and the reason is shown.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import PyPage, wait_until

pytestmark = pytest.mark.e2e

PAGE = "tests.pyodide.app_page_cases"
"""The page side of these tests (a real module, ruff and mypy checked)."""

# Records a copy of every message any data channel of the page sends, before the
# browser encrypts it with DTLS: what a relay that terminated DTLS would read.
RECORD_SENDS = """
(() => {
  const sent = (globalThis.rawSent = []);
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    let bytes;
    if (typeof data === "string") bytes = new TextEncoder().encode(data);
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data.slice(0));
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    if (bytes && sent.length < 5000) sent.push({ label: this.label, bytes: Array.from(bytes) });
    return send.call(this, data);
  };
})();
"""

# A peer whose identity signatures are garbage: it holds no key matching what it claims.
BREAK_SIGNATURES = """
(() => {
  const sign = SubtleCrypto.prototype.sign;
  SubtleCrypto.prototype.sign = async function (...args) {
    const sig = new Uint8Array(await sign.apply(this, args));
    sig[0] ^= 0xff;
    return sig.buffer;
  };
})();
"""

ROWS = """() => [...document.querySelectorAll('#peers li.peer')].map(li => ({
  session: li.dataset.peer, verification: li.dataset.verification, peerId: li.dataset.peerId || null,
  name: li.querySelector('.name')?.textContent, trust: li.querySelector('.trust')?.textContent,
  why: li.querySelector('.why')?.textContent || null,
  code: li.querySelector('.code .digits')?.textContent || null,
  warning: li.querySelector('.warning')?.textContent || null,
  state: li.querySelector('.state')?.textContent }))"""


def open_app(browser: Any, server: Any, room: str, name: str, *scripts: str) -> PyPage:
    context = browser.new_context(permissions=["camera", "microphone"])
    context.set_default_timeout(30_000)
    for script in scripts:
        context.add_init_script(script)
    return PyPage(context.new_page(), server.url).open(f"/?room={room}&name={name}")


def rows(page: PyPage) -> list[dict[str, Any]]:
    return page.page.evaluate(ROWS)


def messages(page: PyPage) -> list[str]:
    return page.page.locator("#messages li").all_inner_texts()


def verified(page: PyPage, n: int = 1) -> list[dict[str, Any]]:
    got = rows(page)
    return got if len(got) == n and all(r["verification"] == "verified" for r in got) else []


def chat(sender: PyPage, receiver: PyPage, text: str) -> None:
    sender.page.locator("#message").fill(text)
    wait_until(lambda: sender.page.locator("#send").is_enabled(), timeout=15)
    sender.page.locator("#send").click()
    wait_until(lambda: any(text in m for m in messages(receiver)), timeout=10)


def raw_sent(page: PyPage, label: str) -> list[bytes]:
    return [bytes(m["bytes"]) for m in page.page.evaluate("() => globalThis.rawSent")
            if m["label"] == label]


def close_pages(*pages: PyPage) -> None:
    for p in pages:
        foreign = p.foreign_requests()
        errors = [c for c in p.console if c.startswith("pageerror")]
        p.page.context.close()
        assert not foreign, f"requests to other origins: {foreign}"
        assert not errors, errors


@pytest.fixture
def room() -> str:
    return "trust-" + uuid.uuid4().hex[:10]


def test_verified_encrypted_chat_leave_and_changed_key(chromium, server, room):
    alice = open_app(chromium, server, room, "alice", RECORD_SENDS)
    bob = open_app(chromium, server, room, "bob", RECORD_SENDS)
    bob2 = None
    try:
        # ---- both verified, one identity each, the same safety code on both screens
        [a_view] = wait_until(lambda: verified(alice), timeout=40)
        [b_view] = wait_until(lambda: verified(bob), timeout=20)
        alice_id = alice.page.locator("#identity").inner_text()
        bob_id = bob.page.locator("#identity").inner_text()
        assert a_view["name"] == "bob" and b_view["name"] == "alice"
        assert alice_id.replace("-", "") == b_view["peerId"] and bob_id.replace("-", "") == a_view["peerId"]
        assert alice.page.locator("#self-name").inner_text() == "alice"
        assert a_view["code"] == b_view["code"] and len(a_view["code"].split()) == 8, (a_view, b_view)
        assert "first contact" in a_view["trust"] and a_view["state"] == "connected"
        # The safety code on screen is the one computed from the two keys.
        assert a_view["code"] == alice.call(f"{PAGE}:computed_safety_code")

        # ---- chat both ways; what left either page on the chat channel is ciphertext
        chat(alice, bob, "buy 10 BTC at 42000")
        chat(bob, alice, "sell 10 BTC at 42000")
        # A name is only a claim: each received line carries the sender's PeerId prefix.
        assert bob.page.locator("#messages li.theirs .tag").all_inner_texts() == [alice_id[:4]]
        assert bob.page.locator("#messages li.mine").all_inner_texts() == ["mesell 10 BTC at 42000"]
        for page, text in ((alice, b"buy 10 BTC"), (bob, b"sell 10 BTC")):
            frames = raw_sent(page, "chat")
            assert len(frames) >= 2, frames  # the hello and the chat line
            assert all(text not in f and b"BTC" not in f and b"alice" not in f and b"bob" not in f
                       for f in frames)
            assert all(f[0] == 0x01 for f in frames)  # envelope version byte
            # Envelope = 17-byte header + ciphertext (same length as the JSON) + 16-byte tag.
            chat_json = b'{"type": "chat", "text": "' + (b"buy" if page is alice else b"sell")
            assert any(len(f) == 33 + len(chat_json) + len(b' 10 BTC at 42000"}') for f in frames)

        # ---- the dashboard lists application channels only
        table = wait_until(lambda: alice.page.locator("#channel-table tbody tr").all_inner_texts(), timeout=30)
        assert any("chat (native)" in r for r in table), table
        assert not any("pyapp-" in r for r in table), table

        # ---- bob closes his tab: gone from alice's list as soon as the server says so
        bob.page.context.close()
        left_at = time.monotonic()
        wait_until(lambda: rows(alice) == [], timeout=5)
        # Before: "connected" for ~6 s (ICE consent) and listed for 16 s. Now the server's
        # peer-left removes it (not an ICE timeout: no "connection failed" line).
        assert time.monotonic() - left_at < 5.0
        assert alice.page.locator("#peers li.empty").count() == 1
        assert "bob left" in messages(alice) and not any("failed" in m for m in messages(alice))

        # ---- someone calling itself bob, with another key: loud warning, chat held
        bob2 = open_app(chromium, server, room, "bob", RECORD_SENDS)
        [warned] = wait_until(lambda: [r for r in rows(alice) if r["verification"] == "key-changed"],
                              timeout=40)
        assert "KEY CHANGED" in warned["trust"] and "different key" in warned["warning"]
        assert bob_id in warned["warning"]  # the key on record is named
        assert warned["peerId"] != bob_id.replace("-", "")
        assert alice.page.locator("#error").is_visible()
        assert "SECURITY WARNING" in alice.page.locator("#error-text").inner_text()
        assert alice.page.locator("#send").is_disabled()
        # bob2 (a new profile) sees alice for the first time and can write; alice holds it.
        wait_until(lambda: verified(bob2), timeout=20)
        bob2.page.locator("#message").fill("it is really me, new laptop")
        bob2.page.locator("#send").click()
        alice.page.wait_for_timeout(1000)
        assert not any("new laptop" in m for m in messages(alice))
        assert alice.call(f"{PAGE}:chat_peer_count") == 0
        # Accept: re-pinned, the held message shows, chat flows.
        alice.page.locator("#peers button.accept").click()
        wait_until(lambda: verified(alice), timeout=10)
        wait_until(lambda: any("new laptop" in m for m in messages(alice)), timeout=10)
        chat(alice, bob2, "welcome back")
        assert alice.call(f"{PAGE}:contact_is_pinned_to_peer", name="bob") is True

        # ---- bob2's connection ends without leaving the room: gone at once too
        bob2.call(f"{PAGE}:close_peer_connection")
        closed_at = time.monotonic()
        wait_until(lambda: rows(alice) == [], timeout=5)
        assert time.monotonic() - closed_at < 5.0
        assert any(m.startswith("bob: ") and "closed" in m for m in messages(alice)), messages(alice)
        assert bob2.call(f"{PAGE}:signaling_client")["room"] == room  # still in the room: the link, not signaling, ended
    finally:
        close_pages(*(p for p in (alice, bob2) if p is not None))


def test_failed_verification_gets_no_chat_and_says_why(chromium, server, room):
    alice = open_app(chromium, server, room, "alice", RECORD_SENDS)
    mallory = open_app(chromium, server, room, "mallory", RECORD_SENDS, BREAK_SIGNATURES)
    try:
        [failed] = wait_until(lambda: [r for r in rows(alice) if r["verification"] == "failed"], timeout=40)
        assert "verification failed" in failed["trust"] and "no chat" in failed["trust"]
        assert "signature" in failed["trust"] and failed["why"] and "signature" in failed["why"]
        assert failed["code"] is None  # no safety code for an unproven key
        # Alice's page refuses to send; nothing was sent to mallory on the chat channel.
        assert alice.page.locator("#send").is_disabled()
        assert alice.call(f"{PAGE}:send_chat", text="secret plan") == 0
        assert raw_sent(alice, "chat") == []
        assert not any("secret plan" in m for m in messages(mallory))
        # Mallory cannot chat either: alice's page rejects it (a handshake alert) or hangs up.
        [seen] = wait_until(lambda: [r for r in rows(mallory) if r["verification"] == "failed"], timeout=25)
        assert "peer rejected" in seen["trust"] or "peer closed" in seen["trust"], seen
        assert mallory.call(f"{PAGE}:chat_peer_count") == 0
    finally:
        close_pages(alice, mallory)
