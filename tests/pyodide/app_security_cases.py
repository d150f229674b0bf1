"""Page side of tests/e2e/test_security.py (called with ``pypage.call``): the real app,
which authenticates every peer by itself, then an encrypted channel over its session."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from pyapp.browser import identity as I
from pyapp.browser.app import APP
from pyapp.browser.auth import role_of
from pyapp.browser.secure import EncryptedChannel
from pyapp.core.security.keys import Role

_TASKS: dict[str, asyncio.Future[dict[str, Any]]] = {}
"""The running exchange of this page (both pages run theirs at the same time)."""


async def _secure_hello(text: str) -> dict[str, Any]:
    peer = next(iter(APP.peers.values()))
    for _ in range(1000):  # the app authenticates every peer itself, right after connecting
        if peer.verified:
            break
        await asyncio.sleep(0.02)
    result = peer.auth
    assert result is not None and peer.pc.security.status == "verified", peer.verification
    if role_of(cast(Any, peer.pc)) is Role.OFFERER:
        ch = peer.pc.create_data_channel("secret")
    else:
        while not any(c.label == "secret" for c in peer.pc.channels):
            await asyncio.sleep(0.02)
        ch = next(c for c in peer.pc.channels if c.label == "secret")
    await ch.wait_open(10)
    enc = EncryptedChannel.from_session(ch, result)
    await enc.send(text)
    got = (await enc.receive()).decode()
    me = I.CURRENT
    assert me is not None, "the app has no identity"
    return {"peer": str(result.peer_id), "me": str(me.peer_id), "got": got, "auth_s": result.elapsed,
            "th": result.transcript_hash.hex(), "role": result.role.name,
            "alg": result.peer_alg.name, "wire": ch.bytes_sent}


async def start_secure_hello(text: str) -> None:
    """Start sending ``text`` sealed to the app's only peer (and receiving its text)."""
    _TASKS["hello"] = asyncio.ensure_future(_secure_hello(text))


def secure_hello_done() -> bool:
    return _TASKS["hello"].done()


def secure_hello_result() -> dict[str, Any]:
    """What the exchange saw (raises in the page if it failed)."""
    return _TASKS["hello"].result()
