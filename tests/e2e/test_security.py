"""End to end: the real app in Firefox and Chromium authenticates (by itself) and encrypts across engines."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import new_pypage, wait_until

pytestmark = pytest.mark.e2e

PEER_ID = re.compile(r"^[a-z2-7]{4}(-[a-z2-7]{4}){5}$")

START = """
import asyncio
from pyapp.browser.app import APP
from pyapp.browser import identity as I
from pyapp.browser.secure import EncryptedChannel
from pyapp.browser.auth import role_of
from pyapp.core.security.keys import Role

async def _secure_hello(text):
    peer = next(iter(APP.peers.values()))
    for _ in range(1000):  # the app authenticates every peer itself, right after connecting
        if peer.verified:
            break
        await asyncio.sleep(0.02)
    result = peer.auth
    assert result is not None and peer.pc.security.status == "verified", peer.verification
    if role_of(peer.pc) is Role.OFFERER:
        ch = peer.pc.create_data_channel("secret")
    else:
        while not any(c.label == "secret" for c in peer.pc.channels):
            await asyncio.sleep(0.02)
        ch = next(c for c in peer.pc.channels if c.label == "secret")
    await ch.wait_open(10)
    enc = EncryptedChannel.from_session(ch, result)
    await enc.send(text)
    got = (await enc.receive()).decode()
    return {"peer": str(result.peer_id), "me": str(I.CURRENT.peer_id), "got": got, "auth_s": result.elapsed,
            "th": result.transcript_hash.hex(), "role": result.role.name,
            "alg": result.peer_alg.name, "wire": ch.bytes_sent}

TASK = asyncio.ensure_future(_secure_hello(TEXT))
"""


def pill(page) -> str:
    return page.page.locator("#identity").inner_text()


def test_firefox_and_chromium_authenticate_and_encrypt_through_the_app(firefox, chromium, server):
    room = "sec-" + uuid.uuid4().hex[:10]
    ff = new_pypage(firefox, server, f"/?room={room}")
    cr = new_pypage(chromium, server, f"/?room={room}")
    try:
        for p in (ff, cr):
            wait_until(lambda p=p: p.page.locator("#peers li .state").all_inner_texts() == ["connected"],
                       timeout=30)
            wait_until(lambda p=p: PEER_ID.match(pill(p)), timeout=10)
        ff.py(f"TEXT = 'sealed in firefox'\n{START}")
        cr.py(f"TEXT = 'sealed in chromium'\n{START}")
        for p in (ff, cr):
            wait_until(lambda p=p: p.py("TASK.done()"), timeout=30)
        a = ff.pyjson("import json; json.dumps(TASK.result())")
        b = cr.pyjson("import json; json.dumps(TASK.result())")
        # Each side verified the other's PeerId, the one the other page shows in its pill.
        assert a["me"] == pill(ff) and b["me"] == pill(cr)
        assert a["peer"] == b["me"] and b["peer"] == a["me"]
        assert max(a["auth_s"], b["auth_s"]) < 5
        assert a["th"] == b["th"]
        assert sorted([a["role"], b["role"]]) == ["ANSWERER", "OFFERER"]
        assert a["alg"] == b["alg"] == "ED25519"  # both engines have Ed25519 in WebCrypto
        assert a["got"] == "sealed in chromium" and b["got"] == "sealed in firefox"
        assert a["wire"] == len("sealed in firefox") + 33  # an envelope went over the wire
    finally:
        for p in (ff, cr):
            errors = [c for c in p.console if c.startswith("pageerror")]
            p.page.context.close()
            assert not errors, errors
