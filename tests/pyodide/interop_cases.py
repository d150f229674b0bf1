"""Page side of the interop tests (tests/interop/, called with ``pypage.call``).

The page joins a room on the real signaling server with pyapp's own
SignalingClient, and answers or dials with pyapp's Connection; politeness
is set by the test so both sides know who takes which role. The page's current
connection (``_pc()``) is the one the test's ``connect`` set up last.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import js

from pyapp.browser.connection import Connection
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.identity import new_identity
from pyapp.browser.mux import DataChannelPriority, DataChannelReliability, MuxSession
from pyapp.browser.secure import receive_encrypted, send_encrypted
from pyapp.browser.signaling import SignalingClient
from pyapp.core.security.fingerprint import remote_fingerprints


class Interop:
    """The page's signaling client and its connections, by the sender's session id."""

    def __init__(self) -> None:
        self.client: SignalingClient | None = None
        self.pcs: dict[str, Connection] = {}
        self.polite = True
        self.channels: list[DataChannel] = []
        self.current: Connection | None = None
        self.mux: MuxSession | None = None
        self.auth_task: asyncio.Future[dict[str, Any]] | None = None
        self.signal_tasks: set[asyncio.Future[None]] = set()
        """handle_signal() calls still running (kept so they are not collected mid-way)."""

    async def join(self, room: str, polite: bool) -> str:
        if self.client is not None:
            self.client.close()
        for pc in self.pcs.values():
            pc.close()
        self.pcs, self.polite = {}, polite
        self.client = SignalingClient(f"ws://{js.location.host}/ws", reconnect=False)
        self.client.events.on("signal", self._on_signal)
        welcome = await self.client.join(room)
        return welcome.peer_id

    def pc(self, peer: str) -> Connection:
        pc = self.pcs.get(peer)
        if pc is None:
            client = self.client
            assert client is not None, "join a room first"
            pc = Connection(signal=lambda m: client.send_signal(peer, m), polite=self.polite)
            self.pcs[peer] = pc
            pc.events.on("datachannel", self.channels.append)
        return pc

    def _on_signal(self, sender: str, data: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self.pc(sender).handle_signal(data))
        self.signal_tasks.add(task)
        task.add_done_callback(self.signal_tasks.discard)

    async def channel(self, pc: Connection, label: str, timeout: float = 10) -> DataChannel:
        for _ in range(int(timeout / 0.02)):
            for ch in list(pc.channels):
                if ch.label == label:
                    return ch
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no channel {label!r}")


IO = Interop()


def _pc() -> Connection:
    pc = IO.current
    assert pc is not None, "no connection: call dial() first"
    return pc


def _hex(message: bytes | str) -> str:
    assert isinstance(message, bytes), f"expected bytes, got {message!r}"
    return message.hex()


def _sdp(description: dict[str, Any] | None) -> str:
    assert description is not None, "no SDP yet"
    sdp: str = description["sdp"]
    return sdp


def _remote_bound(pc: Connection) -> list[str]:
    return [str(f) for f in remote_fingerprints(_sdp(pc.remote_description))]


# ---------------------------------------------------------------- setting up a link


def setup() -> None:
    """A fresh state for this page (no client, no connection)."""
    global IO
    IO = Interop()


async def join(room: str, polite: bool) -> str:
    """Join ``room``; this page's session id."""
    return await IO.join(room, polite)


def dial(peer: str, channels: list[str]) -> None:
    """Make the connection to ``peer`` current; open ``channels`` on it (empty: wait for the peer)."""
    pc = IO.current = IO.pc(peer)
    for label in channels:
        pc.create_data_channel(label)


async def wait_connected(seconds: float) -> None:
    await _pc().wait_connected(seconds)


def close() -> None:
    """Close the current connection."""
    _pc().close()


# ---------------------------------------------------------------- raw channels, fingerprints


async def raw_both_ways() -> list[str]:
    """Two messages each way on the "raw" channel; what the page got (bytes as hex)."""
    ch = await IO.channel(_pc(), "raw")
    await ch.wait_open(10)
    await ch.send("text from the page")
    await ch.send(b"\xffbytes from the page")
    got = [await ch.receive(), await ch.receive()]
    return [g.hex() if isinstance(g, bytes) else g for g in got]


async def fingerprints() -> dict[str, Any]:
    """What this engine shows: its SDP lines and getStats' certificates."""
    pc = _pc()

    def algs(sdp: str) -> list[str]:
        return [line.split(":", 1)[1].split()[0].lower()
                for line in sdp.splitlines() if line.startswith("a=fingerprint:")]

    out: dict[str, Any] = {"local_sdp": algs(_sdp(pc.local_description)),
                           "remote_sdp": algs(_sdp(pc.remote_description)),
                           "remote_bound": _remote_bound(pc)}
    stats = await pc.get_stats_raw()
    by_id = {s.get("id"): s for s in stats}
    certs = {}
    for s in stats:
        if s.get("type") == "transport":
            for side in ("local", "remote"):
                c = by_id.get(s.get(side + "CertificateId"))
                if c is not None:
                    der = base64.b64decode(c.get("base64Certificate", "") or "")
                    algo = c.get("fingerprintAlgorithm")
                    digest = hashlib.new(algo.replace("-", ""), der).hexdigest() if der and algo else None
                    certs[side] = {"algorithm": algo, "fingerprint": c.get("fingerprint"),
                                   "has_der": bool(der),
                                   "der_sha256": hashlib.sha256(der).hexdigest() if der else None,
                                   "der_matches": digest is not None and digest.upper()
                                   == (c.get("fingerprint") or "").replace(":", "").upper()}
    out["stats"] = certs
    out["stats_types"] = sorted({s.get("type") for s in stats})
    return out


# ---------------------------------------------------------------- authentication


async def authenticate_and_echo() -> dict[str, Any]:
    """authenticate(), then one sealed message each way on a new "secret" channel."""
    pc = _pc()
    me = await new_identity()
    r = await pc.authenticate(me, timeout=15)
    res = {"peer": str(r.peer_id), "me": str(me.peer_id), "role": r.role.name,
           "th": r.transcript_hash.hex(), "elapsed": r.elapsed, "status": pc.security.status,
           "remote_bound": [f.hash.sdp_name for f in
                            remote_fingerprints(_sdp(pc.remote_description))]}
    secret = pc.create_data_channel("secret")
    await secret.wait_open(10)
    await send_encrypted(secret, "sealed by the page")
    res["got"] = (await receive_encrypted(secret)).decode()
    res["wire_bytes"] = secret.bytes_sent
    return res


async def authenticate_then_wait_for_failure() -> dict[str, Any]:
    """authenticate() against a peer that refuses us; the state once the refusal arrived."""
    pc = _pc()
    me = await new_identity()
    try:
        await pc.authenticate(me, timeout=15)
        first = "verified"
    except Exception as exc:  # reported to the test, which checks the reason
        first = getattr(exc, "reason", repr(exc))
    for _ in range(200):
        if pc.security.status == "failed":
            break
        await asyncio.sleep(0.02)
    return {"first": first, "status": pc.security.status, "reason": pc.security.reason,
            "message": str(pc.security.error), "closed": pc.closed}


async def _auth(timeout: float) -> dict[str, Any]:
    me = await new_identity()
    try:
        r = await _pc().authenticate(me, timeout=timeout)
        return {"ok": str(r.peer_id), "elapsed_ms": r.elapsed * 1000}
    except Exception as exc:  # reported to the test, which checks type, reason and text
        return {"error": type(exc).__name__, "reason": getattr(exc, "reason", None),
                "message": str(exc)}


def start_authenticate(seconds: float) -> None:
    """Start authenticate() in the background (two pages authenticate at the same time)."""
    IO.auth_task = asyncio.ensure_future(_auth(seconds))


def authenticate_done() -> bool:
    assert IO.auth_task is not None, "call start_authenticate() first"
    return IO.auth_task.done()


def authenticate_result() -> dict[str, Any]:
    """start_authenticate()'s outcome, the connection's state, and the fingerprints it bound."""
    assert IO.auth_task is not None, "call start_authenticate() first"
    pc = _pc()
    res = IO.auth_task.result()
    res["closed"] = pc.closed
    res["status"] = pc.security.status
    res["remote_bound"] = _remote_bound(pc)
    return res


# ---------------------------------------------------------------- the multiplexer


async def mux_round() -> dict[str, Any]:
    """The page's side of a multiplexer session with the documented second implementation."""
    pc = _pc()
    mux = IO.mux = pc.multiplexer()
    await mux.wait_open(15)
    # HIGH: it would ride pyapp-mux-h (stream 1002) if the peer had one; the doc peer
    # has none (it never answers the page's hello there), so it rides pyapp-mux.
    orders = pc.create_multiplexed_channel(label="orders", priority=DataChannelPriority.HIGH)
    await orders.send("buy 1 @ 42")
    await orders.send(bytes(range(256)) * 160)
    theirs = await mux.accept(15)
    got = [theirs.label, theirs.channel_id, await theirs.receive(), _hex(await theirs.receive())]
    reply = await orders.receive()
    ticks = pc.create_multiplexed_channel(label="ticks", reliability=DataChannelReliability.UNRELIABLE)
    for i in range(3):
        await ticks.send(f"tick {i}")
    quotes = await mux.accept(15)
    quote = [quotes.label, quotes.channel_id, _hex(await quotes.receive())]
    orders_transport = mux.mux.transport_of(orders.channel_id).name
    orders.close()
    assert mux.peer_session_id is not None, "no hello from the peer"
    return {"orders_id": orders.channel_id, "got": got, "reply": reply, "quote": quote,
            "errors": [str(e) for e in mux.protocol_errors], "peer_session": mux.peer_session_id.hex(),
            "session": mux.session_id.hex(), "urgent_transport": mux.urgent_transport,
            "orders_transport": orders_transport}


async def encrypted_over_mux() -> dict[str, Any]:
    """authenticate(), then one sealed message each way on the peer's first logical channel."""
    pc = _pc()
    await pc.authenticate(await new_identity(), timeout=15)
    mux = IO.mux = pc.multiplexer()
    await mux.wait_open(15)
    ch = await mux.accept(15)
    got = (await receive_encrypted(ch)).decode()
    await send_encrypted(ch, "and back, sealed by the page")
    return {"got": got, "cid": ch.channel_id}
