"""PeerId, the trust-on-first-use store, identity export/import."""

from __future__ import annotations

import asyncio
import json

import pytest

from pyapp.core.security.identity import (
    IdentityFormatError,
    KnownPeers,
    PeerId,
    TrustStatus,
    create_identity,
    export_identity,
    import_identity,
)
from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.exceptions import LocalProtocolError
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.unit

ED = SignatureAlgorithm.ED25519
KEY1, KEY2 = bytes(32), b"\x01" * 32


def test_peer_id_shape_and_parse() -> None:
    pid = PeerId.from_public_key(ED, KEY1)
    text = str(pid)
    assert len(text) == 29 and text.count("-") == 5 and text == text.lower()
    assert PeerId.parse(text.upper().replace("-", " ")) == pid
    assert PeerId.from_public_key(SignatureAlgorithm.ECDSA_P256, KEY1) != pid  # alg is hashed too
    with pytest.raises(IdentityFormatError):
        PeerId.parse("not-a-peer-id")


def test_tofu_first_seen_then_known_then_changed() -> None:
    peers = KnownPeers()
    assert peers.record(ED, KEY1, contact="alice", now=1.0).status is TrustStatus.FIRST_SEEN
    assert peers.record(ED, KEY1, contact="alice", now=2.0).status is TrustStatus.KNOWN
    changed = peers.record(ED, KEY2, contact="alice", now=3.0)
    assert changed.status is TrustStatus.IDENTITY_CHANGED and not changed.ok
    assert changed.previous == PeerId.from_public_key(ED, KEY1)
    assert peers.contacts["alice"] == changed.previous  # nothing was overwritten
    peers.accept_change("alice", changed.peer_id)
    assert peers.record(ED, KEY2, contact="alice", now=4.0).status is TrustStatus.KNOWN
    assert peers.peers[PeerId.from_public_key(ED, KEY1)].last_seen == 2.0


def test_same_peer_id_different_key_is_identity_changed() -> None:
    peers = KnownPeers()
    peers.record(ED, KEY1, now=0.0)
    pid = PeerId.from_public_key(ED, KEY1)
    peers.peers[pid].public_key = KEY2  # simulate a stored key that collides on PeerId
    assert peers.check(ED, KEY1).status is TrustStatus.IDENTITY_CHANGED


def test_pin_and_allow_list() -> None:
    pid1, pid2 = PeerId.from_public_key(ED, KEY1), PeerId.from_public_key(ED, KEY2)
    peers = KnownPeers(allow=[pid1])
    assert peers.check(ED, KEY2).status is TrustStatus.NOT_ALLOWED
    assert peers.check(ED, KEY1).status is TrustStatus.FIRST_SEEN
    peers.pin("bob", pid1)
    assert peers.check(ED, KEY1, contact="bob").status is TrustStatus.KNOWN
    open_store = KnownPeers()
    open_store.pin("bob", pid2)
    assert open_store.check(ED, KEY1, contact="bob").status is TrustStatus.IDENTITY_CHANGED


def test_store_round_trips_through_json() -> None:
    peers = KnownPeers(allow=[PeerId.from_public_key(ED, KEY1)])
    peers.record(ED, KEY1, contact="alice", now=5.0)
    data = json.loads(json.dumps(peers.to_dict()))
    again = KnownPeers.from_dict(data)
    assert again.to_dict() == peers.to_dict()
    data["peers"][0]["public_key"] = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
    with pytest.raises(IdentityFormatError):
        KnownPeers.from_dict(data)
    for broken in ({}, {"format": "pyapp-known-peers", "version": 1}, {"format": "x"}):
        with pytest.raises(IdentityFormatError):
            KnownPeers.from_dict(broken)


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_identity_export_import(alg: SignatureAlgorithm) -> None:
    async def go() -> None:
        c = OracleCrypto()
        key = await create_identity(c, alg, exportable=True)
        data = json.loads(json.dumps(await export_identity(c, key)))
        assert data["peer_id"] == str(PeerId.from_public_key(alg, key.public_key))
        back = await import_identity(c, data)
        assert back.public_key == key.public_key and not back.extractable
        sig = await c.sign(back, b"m")
        assert await c.verify(alg, key.public_key, sig, b"m")
        with pytest.raises(LocalProtocolError):
            await export_identity(c, back)  # imported non-extractable
        other = await create_identity(c, alg, exportable=True)
        mixed = dict(data, private_key_pkcs8=(await export_identity(c, other))["private_key_pkcs8"])
        with pytest.raises(IdentityFormatError, match="does not match"):
            await import_identity(c, mixed)
        with pytest.raises(IdentityFormatError):
            await import_identity(c, dict(data, peer_id="aaaa-aaaa-aaaa-aaaa-aaaa-aaaa"))
        with pytest.raises(IdentityFormatError):
            await import_identity(c, dict(data, private_key_pkcs8="AAAA"))

    asyncio.run(go())


def test_non_exportable_identity_cannot_be_exported() -> None:
    async def go() -> None:
        c = OracleCrypto()
        with pytest.raises(LocalProtocolError):
            await export_identity(c, await create_identity(c))

    asyncio.run(go())
