"""AES-256-GCM envelopes: golden bytes, tampering, replay, reflection, rekeying, PSK mode."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.security.envelope import (
    ENVELOPE_OVERHEAD,
    EnvelopeHeader,
    Opener,
    RekeyPolicy,
    Sealer,
    SecureChannel,
    envelope_aad,
    open_envelope,
    parse_envelope,
    seal_envelope,
)
from pyapp.core.security.interface import AeadKey
from pyapp.core.security.keys import Direction, Role, derive_envelope_key, derive_psk_secrets
from pyapp.exceptions import DecryptionError, LocalProtocolError
from tests.support.oracle_crypto import OracleCrypto

pytestmark = pytest.mark.unit

PSK = bytes(range(32))
GOLDEN = bytes.fromhex(
    "0101020304a0a1a2a30000000000000005fea6846c5db926a365c3df175b9f28744b4588196b4a"
)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


async def pair(
    *, reliable: bool = True, policy: RekeyPolicy | None = None, channel: int = 1
) -> tuple[SecureChannel, SecureChannel]:
    c = OracleCrypto()
    a = await SecureChannel.from_psk(
        c, PSK, Role.OFFERER, channel, reliable=reliable, policy=policy
    )
    b = await SecureChannel.from_psk(
        c, PSK, Role.ANSWERER, channel, reliable=reliable, policy=policy
    )
    return a, b


def test_golden_envelope_bytes() -> None:
    async def go() -> None:
        c = OracleCrypto()
        key = await c.import_aead_key(bytes(range(32)))
        header = EnvelopeHeader(0x01020304, bytes.fromhex("a0a1a2a3"), 5)
        env = await seal_envelope(c, key, header, 7, Direction.OFFERER_TO_ANSWERER, b"golden")
        assert env == GOLDEN
        # Independently: the documented nonce and AAD layout, straight through AESGCM.
        nonce = bytes.fromhex("a0a1a2a3") + (5).to_bytes(8, "big")
        aad = GOLDEN[:17] + (7).to_bytes(4, "big") + b"\x00"
        assert envelope_aad(header, 7, Direction.OFFERER_TO_ANSWERER) == aad
        assert AESGCM(bytes(range(32))).decrypt(nonce, GOLDEN[17:], aad) == b"golden"
        assert await open_envelope(c, key, GOLDEN, 7, Direction.OFFERER_TO_ANSWERER) == b"golden"
        assert len(GOLDEN) == ENVELOPE_OVERHEAD + len(b"golden")

    run(go)


def test_golden_epoch_key() -> None:
    raw = asyncio.run(
        derive_envelope_key(OracleCrypto(), bytes(32), 3, bytes.fromhex("deadbeef"), 2)
    )
    assert raw.hex() == "76c0e52ff55d50016a812f9366111cf11c2cbb0dea783d92e96689e7296f3e72"


def test_round_trip_both_ways_and_counters() -> None:
    async def go() -> None:
        a, b = await pair()
        for i in range(5):
            env = await a.seal(b"m%d" % i, now=0.0)
            header, _ = parse_envelope(env)
            assert header.counter == i
            assert await b.open(env, now=0.0) == b"m%d" % i
            assert await a.open(await b.seal(b"r", now=0.0), now=0.0) == b"r"
        assert b.opener.opened == 5 and a.sealer.sealed == 5

    run(go)


def test_every_single_byte_flip_is_rejected() -> None:
    async def go() -> None:
        a, b = await pair()
        env = await a.seal(b"a trade order", now=0.0, aad=b"ctx")
        for i in range(len(env)):
            for bit in (0x01, 0x80):
                bad = bytearray(env)
                bad[i] ^= bit
                with pytest.raises(DecryptionError):
                    await b.open(bytes(bad), now=0.0, aad=b"ctx")
        for cut in range(len(env)):
            with pytest.raises(DecryptionError):
                await b.open(env[:cut], now=0.0, aad=b"ctx")
        with pytest.raises(DecryptionError) as exc:
            await b.open(env, now=0.0, aad=b"other")
        assert exc.value.reason == "authentication failed"
        assert sum(b.opener.rejected.values()) == 2 * len(env) + len(env) + 1
        # None of that poisoned the state: the genuine message still opens.
        assert await b.open(env, now=0.0, aad=b"ctx") == b"a trade order"

    run(go)


def test_replay_rejected_on_reliable_channel() -> None:
    async def go() -> None:
        a, b = await pair(reliable=True)
        e0, e1 = await a.seal(b"0", now=0), await a.seal(b"1", now=0)
        await b.open(e0, now=0)
        await b.open(e1, now=0)
        for again in (e1, e0):
            with pytest.raises(DecryptionError) as exc:
                await b.open(again, now=0)
            assert exc.value.reason == "replay"
        assert b.opener.rejected["replay"] == 2

    run(go)


def test_unreliable_accepts_reorder_exactly_once() -> None:
    async def go() -> None:
        a, b = await pair(reliable=False)
        envs = [await a.seal(b"%d" % i, now=0) for i in range(50)]
        order = list(reversed(envs[10:])) + envs[:10]
        got = [await b.open(e, now=0) for e in order]
        assert sorted(got, key=int) == [b"%d" % i for i in range(50)]
        for e in envs:
            with pytest.raises(DecryptionError) as exc:
                await b.open(e, now=0)
            assert exc.value.reason == "replay"

    run(go)


def test_unreliable_rejects_counters_older_than_window() -> None:
    async def go() -> None:
        a, b = await pair(reliable=False)
        first = await a.seal(b"old", now=0)
        for _ in range(1024):
            last = await a.seal(b"x", now=0)
        await b.open(last, now=0)
        with pytest.raises(DecryptionError, match="replay"):
            await b.open(first, now=0)

    run(go)


def test_reflected_message_fails() -> None:
    async def go() -> None:
        a, _ = await pair()
        env = await a.seal(b"to bob", now=0)
        with pytest.raises(DecryptionError):
            await a.open(env, now=0)  # bounced back to its sender

    run(go)


def test_wrong_channel_or_direction_fails() -> None:
    async def go() -> None:
        c = OracleCrypto()
        keys = await derive_psk_secrets(c, PSK)
        secret = keys.offerer_to_answerer
        s = Sealer(c, secret, Direction.OFFERER_TO_ANSWERER, 1)
        env = await s.seal(b"x", now=0)
        for chan, direction in (
            (2, Direction.OFFERER_TO_ANSWERER),
            (1, Direction.ANSWERER_TO_OFFERER),
        ):
            o = Opener(c, secret, direction, chan, reliable=True)
            with pytest.raises(DecryptionError, match="authentication failed"):
                await o.open(env, now=0)
        assert (
            await Opener(c, secret, Direction.OFFERER_TO_ANSWERER, 1, reliable=True).open(env, 0)
            == b"x"
        )

    run(go)


def test_psk_peers_get_distinct_direction_keys_and_random_key_ids() -> None:
    async def go() -> None:
        c = OracleCrypto()
        keys = await derive_psk_secrets(c, PSK)
        assert keys.offerer_to_answerer != keys.answerer_to_offerer
        assert PSK not in (keys.offerer_to_answerer, keys.answerer_to_offerer)
        a, b = await pair()
        ha, _ = parse_envelope(await a.seal(b"", now=0))
        hb, _ = parse_envelope(await b.seal(b"", now=0))
        # Restart: a new SecureChannel picks a new key id and prefix -> a new key.
        a2, _ = await pair()
        ha2, _ = parse_envelope(await a2.seal(b"", now=0))
        assert (ha.key_id, ha.prefix) != (ha2.key_id, ha2.prefix) and ha2.counter == 0
        assert ha.prefix != hb.prefix
        with pytest.raises(LocalProtocolError):
            await derive_psk_secrets(c, b"short")

    run(go)


def test_rekey_after_n_messages_keeps_in_flight_messages() -> None:
    async def go() -> None:
        policy = RekeyPolicy(after_messages=3, grace_seconds=5.0)
        a, b = await pair(reliable=False, policy=policy)
        envs = [await a.seal(b"%d" % i, now=0) for i in range(7)]
        ids = [parse_envelope(e)[0].key_id for e in envs]
        assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5] != ids[6]
        assert [parse_envelope(e)[0].counter for e in envs] == [0, 1, 2, 0, 1, 2, 0]
        # New-epoch messages overtake the old ones; the old epoch still opens in grace.
        for i in (3, 4, 0, 1, 5, 2):
            assert await b.open(envs[i], now=1.0) == b"%d" % i
        with pytest.raises(DecryptionError, match="replay"):
            await b.open(envs[4], now=1.0)
        assert await b.open(envs[6], now=2.0) == b"6"  # epoch 2: epoch 0 is now gone
        with pytest.raises(DecryptionError, match="unknown key id"):
            await b.open(envs[0], now=2.0)

    run(go)


def test_previous_epoch_expires_after_grace() -> None:
    async def go() -> None:
        a, b = await pair(reliable=False, policy=RekeyPolicy(after_messages=2, grace_seconds=5.0))
        e = [await a.seal(b"%d" % i, now=0) for i in range(3)]
        await b.open(e[0], now=0)
        await b.open(e[2], now=10.0)  # switch at t=10: old epoch good until t=15
        assert await b.open(e[1], now=14.9) == b"1"
        e3 = await a.seal(b"3", now=0)
        await b.open(e3, now=0)
        assert b.opener.rejected == {}

    run(go)


def test_grace_window_closes() -> None:
    async def go() -> None:
        a, b = await pair(reliable=False, policy=RekeyPolicy(after_messages=2, grace_seconds=5.0))
        e = [await a.seal(b"%d" % i, now=0) for i in range(3)]
        await b.open(e[0], now=0)
        await b.open(e[2], now=10.0)
        with pytest.raises(DecryptionError, match="unknown key id"):
            await b.open(e[1], now=15.0)

    run(go)


def test_rekey_after_seconds_and_on_request() -> None:
    async def go() -> None:
        a, _ = await pair(policy=RekeyPolicy(after_seconds=60.0))
        k0 = parse_envelope(await a.seal(b"", now=0))[0].key_id
        k1 = parse_envelope(await a.seal(b"", now=59))[0].key_id
        k2 = parse_envelope(await a.seal(b"", now=60))[0].key_id
        a.sealer.request_rekey()
        k3 = parse_envelope(await a.seal(b"", now=61))[0].key_id
        assert k0 == k1 and [(k - k0) % 2**32 for k in (k2, k3)] == [1, 2]

    run(go)


def test_key_id_jump_is_unknown() -> None:
    async def go() -> None:
        a, b = await pair(policy=RekeyPolicy(after_messages=1))
        envs = [await a.seal(b"", now=0) for i in range(3)]
        await b.open(envs[0], now=0)
        with pytest.raises(DecryptionError, match="unknown key id"):
            await b.open(envs[2], now=0)  # skipped an epoch: never accepted
        assert await b.open(envs[1], now=0) == b""
        assert b.opener.rejected["unknown key id"] == 1

    run(go)


def test_malformed_envelopes() -> None:
    async def go() -> None:
        _, b = await pair()
        for bad in (b"", b"\x01", b"\x02" + bytes(40), bytes(ENVELOPE_OVERHEAD - 1)):
            with pytest.raises(DecryptionError, match="malformed envelope"):
                await b.open(bad, now=0)

    run(go)


def test_overlapping_calls_are_refused() -> None:
    async def go() -> None:
        a, _ = await pair()
        first = asyncio.ensure_future(a.seal(b"1", now=0))
        await asyncio.sleep(0)  # let it start; the oracle never yields, so it already finished
        await first
        a.sealer._busy = True
        with pytest.raises(LocalProtocolError):
            await a.seal(b"2", now=0)

    run(go)


def test_session_mode_keys_start_at_key_id_zero() -> None:
    async def go() -> None:
        c = OracleCrypto()
        from pyapp.core.security.keys import derive_session_keys

        keys = await derive_session_keys(c, bytes(32), bytes(32))
        a = SecureChannel.from_keys(c, keys, Role.OFFERER, 3, reliable=True)
        b = SecureChannel.from_keys(c, keys, Role.ANSWERER, 3, reliable=True)
        env = await a.seal(b"hi", now=0)
        assert parse_envelope(env)[0].key_id == 0
        assert await b.open(env, now=0) == b"hi"

    run(go)


# ---------------------------------------------------------------- open_many ≡ open, one by one

_WIRE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("message"), st.binary(max_size=40)),
        st.tuples(st.just("rekey"), st.none()),
        st.tuples(st.just("replay"), st.integers(0, 10_000)),
        st.tuples(st.just("tamper"), st.integers(0, 10_000)),
        st.tuples(st.just("text"), st.text(max_size=8)),
        st.tuples(st.just("junk"), st.binary(max_size=30)),
    ),
    max_size=30,
)


def _describe(result: bytes | DecryptionError) -> object:
    return ("error", str(result)) if isinstance(result, DecryptionError) else ("ok", bytes(result))


async def _wire(sender: Any, ops: list[tuple[str, Any]]) -> list[bytes | str]:
    """What the peer's bytes are for ``ops``: sealed messages, rekeys, replays of an
    earlier envelope, tampered copies, and raw text or junk."""
    wire: list[bytes | str] = []
    sent: list[bytes] = []
    for kind, arg in ops:
        if kind == "message":
            assert isinstance(arg, bytes)
            sent.append(await sender.seal(arg, 0.0))
            wire.append(sent[-1])
        elif kind == "rekey":
            sender.sealer.request_rekey()
        elif kind == "replay" and sent:
            assert isinstance(arg, int)
            wire.append(sent[arg % len(sent)])
        elif kind == "tamper" and sent:
            assert isinstance(arg, int)
            victim = bytearray(sent[arg % len(sent)])
            victim[arg % len(victim)] ^= 0x01
            wire.append(bytes(victim))
        elif kind in ("text", "junk"):
            assert isinstance(arg, (str, bytes))
            wire.append(arg)
    return wire


@given(ops=_WIRE_OPS, reliable=st.booleans(), cuts=st.lists(st.integers(1, 6), max_size=30),
       shuffle=st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_open_many_gives_what_open_gives_one_by_one(ops: list[tuple[str, object]], reliable: bool,
                                                     cuts: list[int], shuffle: object) -> None:
    """For any wire (rekeys, replays, tampered, text, junk; reordered when unreliable)
    cut into any batches, open_many's results, ``rejected`` and ``opened`` equal those
    of open() called once per message."""

    async def go() -> None:
        sender, one_by_one = await pair(reliable=reliable)
        _, batched = await pair(reliable=reliable)
        wire = await _wire(sender, ops)
        if not reliable:
            shuffle.shuffle(wire)  # type: ignore[attr-defined]
        expected = []
        for data in wire:
            try:
                if isinstance(data, str):
                    # what open_many says of a text message (open() takes bytes only)
                    expected.append(("error", "malformed envelope"))
                    one_by_one.opener.rejected["malformed envelope"] += 1
                    continue
                expected.append(_describe(await one_by_one.opener.open(data, 0.0)))
            except DecryptionError as exc:
                expected.append(_describe(exc))
        got: list[object] = []
        start, sizes = 0, iter(cuts)
        while start < len(wire):
            size = next(sizes, len(wire))
            got += [_describe(r) for r in await batched.opener.open_many(wire[start:start + size], 0.0)]
            start += size
        assert got == expected
        assert batched.opener.rejected == one_by_one.opener.rejected
        assert batched.opener.opened == one_by_one.opener.opened

    run(go)


class _BatchingOracle(OracleCrypto):
    """The oracle with WebCrypto's extra ``aead_open_many``: records what it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[object]] = []

    async def aead_open_many(self, items: list[tuple[AeadKey, bytes, memoryview, bytes]]) -> list[bytes | None]:
        self.batches.append([sealed for _k, _n, sealed, _a in items])
        return [await self.aead_open(k, n, bytes(s), a) for k, n, s, a in items]


@given(ops=_WIRE_OPS, reliable=st.booleans(), cuts=st.lists(st.integers(1, 6), max_size=30))
@settings(max_examples=60, deadline=None)
def test_open_many_batched_crypto_on_memoryviews_gives_what_open_gives(
        ops: list[tuple[str, object]], reliable: bool, cuts: list[int]) -> None:
    """Peer bytes arrive as memoryviews into one received buffer (DataChannel batches).
    open_many through a crypto with ``aead_open_many`` (WebCrypto's batched call) gives
    the same results, ``rejected`` and ``opened`` as open() on bytes one by one, and
    hands the crypto views of the ciphertext, never copies."""

    async def go() -> None:
        sender, one_by_one = await pair(reliable=reliable)
        crypto = _BatchingOracle()
        batched = await SecureChannel.from_psk(crypto, PSK, Role.ANSWERER, 1, reliable=reliable)
        wire = await _wire(sender, ops)
        expected = []
        for data in wire:
            if isinstance(data, str):
                expected.append(("error", "malformed envelope"))
                one_by_one.opener.rejected["malformed envelope"] += 1
                continue
            try:
                expected.append(_describe(await one_by_one.opener.open(data, 0.0)))
            except DecryptionError as exc:
                expected.append(_describe(exc))
        # The binary messages as views of one packed buffer, as DataChannel._on_batch gives them.
        packed = memoryview(b"".join(d for d in wire if isinstance(d, bytes)))
        views: list[memoryview | str] = []
        offset = 0
        for data in wire:
            if isinstance(data, str):
                views.append(data)
            else:
                views.append(packed[offset:offset + len(data)])
                offset += len(data)
        got: list[object] = []
        start, sizes = 0, iter(cuts)
        while start < len(views):
            size = next(sizes, len(views))
            got += [_describe(r) for r in await batched.opener.open_many(views[start:start + size], 0.0)]
            start += size
        assert got == expected
        assert batched.opener.opened == one_by_one.opener.opened
        assert batched.opener.rejected == one_by_one.opener.rejected
        for batch in crypto.batches:
            for sealed in batch:
                assert isinstance(sealed, memoryview) and sealed.obj is packed.obj

    run(go)
