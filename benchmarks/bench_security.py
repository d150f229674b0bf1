"""Security figures: encrypted_ratio and the cost of authentication.

* encrypted_ratio: 64 MiB (as 64 KiB messages) through one multiplexed reliable
  channel wrapped in :class:`~pyapp.browser.secure.EncryptedChannel` (session
  keys from a real ``authenticate``; AES-256-GCM via WebCrypto, sealed and
  opened in batches of up to 8 per WebCrypto call), ÷ the same 64 MiB as 64 KiB
  messages through the same kind of channel without encryption, in the same
  page; both ends read with ``await receive()``. The encrypted data is cut into
  65503-byte chunks so each envelope is exactly 64 KiB on the wire.
  Throughput ratio of medians of 3 interleaved rounds. Target >= 0.8.
* encrypted_64k_plaintext_ratio: the same with 64 KiB plaintexts (each envelope
  is 33 bytes over 64 KiB, so the mux needs a fifth 16 KiB fragment per message).
* auth_loopback_ms: median wall time of ``authenticate`` on a fresh loopback
  connection (both sides concurrently in one page; Ed25519 + X25519 in Chromium);
  ``bench_auth`` reports page-to-page ``auth_ms``.
"""

from __future__ import annotations

import statistics
from typing import Any

from pyapp.core.security.envelope import ENVELOPE_OVERHEAD as OVERHEAD

PY = """
import asyncio, js
from pyapp.browser.loopback import connected_pair
from pyapp.browser.identity import new_identity
from pyapp.browser.secure import EncryptedChannel

_IDS = []

async def _setup(auth):
    a, b = await connected_pair()
    if not _IDS:
        _IDS.extend([await new_identity(), await new_identity()])
    t0 = js.performance.now()
    sessions = None
    if auth:
        sessions = await asyncio.gather(a.authenticate(_IDS[0]), b.authenticate(_IDS[1]))
    auth_ms = js.performance.now() - t0
    ma, mb = a.multiplexer(), b.multiplexer()
    await asyncio.gather(ma.wait_open(10), mb.wait_open(10))
    ch = a.create_multiplexed_channel(label="bulk")
    peer = await mb.accept(10)
    return a, b, ch, peer, sessions, auth_ms

async def _bulk(total, size, encrypted, window=8):
    a, b, ch, peer, sessions, _ = await _setup(encrypted)
    if encrypted:
        tx = EncryptedChannel.from_session(ch, sessions[0], window=window)
        rx = EncryptedChannel.from_session(peer, sessions[1])
    else:
        tx, rx = ch, peer
    async def reader():
        got = 0
        while got < total:
            got += len(await rx.receive())
        return got
    chunk = bytes(size)
    last = bytes(total - (total // size) * size)
    chunks = [chunk] * (total // size) + ([last] if last else [])
    t0 = js.performance.now()
    task = asyncio.ensure_future(reader())
    if encrypted:
        for c in chunks:
            await tx.submit(c)
        await tx.flush()
    else:
        for c in chunks:
            await tx.send(c)
    got = await task
    ms = js.performance.now() - t0
    assert got == total, (got, total)
    a.close(); b.close()
    return ms

async def _auth_ms():
    a, b, *_rest, ms = await _setup(True)
    a.close(); b.close()
    return ms
"""


def run(ctx: Any) -> dict[str, float]:
    page = ctx.page()
    mib = 64
    total = mib * 1024 * 1024
    # The mux cuts messages into 16 KiB fragments: a 64 KiB plaintext becomes a
    # 64 KiB + 33-byte envelope, i.e. 5 fragments instead of 4. The headline
    # figure cuts the same 64 MiB into chunks whose *envelopes* are 64 KiB
    # (1025 messages); the 64 KiB-plaintext figure is reported beside it.
    aligned = 65536 - OVERHEAD
    aligned_count = -(-total // aligned)
    try:
        page.py(PY)
        plain, enc, enc64 = [], [], []
        for _ in range(3):
            plain.append(page.py(f"await _bulk({total}, 65536, False)"))
            enc.append(page.py(f"await _bulk({total}, {aligned}, True)"))
            enc64.append(page.py(f"await _bulk({total}, 65536, True)"))
        auth = [page.py("await _auth_ms()") for _ in range(5)]
    finally:
        page.page.context.close()
    p, e, e64 = statistics.median(plain), statistics.median(enc), statistics.median(enc64)
    ctx.note(f"64 MiB over a mux channel: plain {mib / (p / 1000):.1f} MiB/s (64 KiB messages); "
             f"encrypted {mib / (e / 1000):.1f} MiB/s ({aligned_count} x {aligned} B, 64 KiB envelopes), "
             f"{mib / (e64 / 1000):.1f} MiB/s (64 KiB plaintexts)")
    ctx.note(f"authenticate(): median {statistics.median(auth):.0f} ms of {sorted(round(x) for x in auth)}")
    return {
        "encrypted_ratio": p / e,
        "encrypted_64k_plaintext_ratio": p / e64,
        "encrypted_mib_per_s": mib / (e / 1000),
        "plain_mux_mib_per_s": mib / (p / 1000),
        "auth_loopback_ms": statistics.median(auth),
    }
