"""Page side of tests/browser/test_pool.py: the async pool, limiter and dialers."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import js

from pyapp.browser._ffi import live_proxies, spawn
from pyapp.browser.connection import Connection
from pyapp.browser.datachannel import DataChannel
from pyapp.browser.pool import ConnectionLimiter, ConnectionPool, Lease, LoopbackDialer, Slot
from pyapp.exceptions import (
    ConnectionClosedError,
    DialTimeout,
    LimitExceeded,
    OperationTimeout,
    PoolExhausted,
)

_STATE: dict[str, Any] = {}
"""What the churn test keeps between calls (pool, limiter, dialer)."""


class CountingDialer(LoopbackDialer):
    """Counts local connections that are dialling or open; records the peak."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.live = 0
        self.peak = 0

    async def dial(self, peer_id: str, resume: str | None = None) -> Connection:
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            pc = await super().dial(peer_id, resume)
        except BaseException:
            self.live -= 1
            raise

        def on_state(state: str) -> None:
            if state == "closed":
                self.live -= 1

        pc.events.on("connectionstatechange", on_state)
        return pc


def _now_ms() -> float:
    return float(js.performance.now())


async def echo_roundtrip(lease: Lease, text: str) -> str:
    """Open a channel on the leased connection, send text, get it echoed by the remote end."""
    dialer = lease.pool.dialer
    assert isinstance(dialer, LoopbackDialer)
    remote = dialer.remotes[lease.peer_id]

    def on_channel(ch: DataChannel) -> None:
        async def echo() -> None:
            msg = await ch.receive()
            await ch.send("echo:" + str(msg))

        spawn(echo(), "echoing on the remote end")

    remote.events.on("datachannel", on_channel)
    ch = lease.pc.create_data_channel("work")
    await ch.send(text)
    reply = await asyncio.wait_for(ch.receive(), 10)
    remote.events.off("datachannel", on_channel)
    ch.close()
    return str(reply)


async def shared_dial_reuse_release_and_idle_close() -> dict[str, Any]:
    dialer = CountingDialer()
    pool = ConnectionPool(4, timeout=0.3, dialer=dialer)
    # Three concurrent gets for one peer share one dial and one connection.
    leases = await asyncio.gather(*(pool.get_connection("alice") for _ in range(3)))
    same = len({id(x.connection) for x in leases}) == 1 and len({id(x.pc) for x in leases}) == 1
    s1 = pool.stats
    reply = await echo_roundtrip(leases[0], "hi")
    again = await pool.get_connection("alice")          # reused, no new dial
    for lease in leases:
        lease.release()
    leases[0].release()                                  # idempotent
    s2 = pool.stats
    again.release()
    s3 = pool.stats
    await asyncio.sleep(0.6)                             # idle timeout closes it
    s4 = pool.stats
    pc_state = leases[0].connection.pc.connection_state
    gone_error = None
    try:
        leases[0].pc  # noqa: B018  (the property raises once the connection is gone)
    except ConnectionClosedError as exc:
        gone_error = str(exc)
    pool.close()
    return {"same": same, "reply": reply, "dials": dialer.dials,
            "is_facade": isinstance(leases[0].connection.pc, Connection),
            "s1": [s1.size, s1.leased, s1.dials, s1.reuses],
            "s2": [s2.leased, s2.idle], "s3": [s3.leased, s3.idle, s3.reuses],
            "s4": [s4.size, s4.idle, s4.idle_closes], "pc_state": pc_state,
            "gone_error": gone_error, "live": dialer.live}


async def full_pool_evicts_waits_exhausts() -> dict[str, Any]:
    dialer = CountingDialer()
    pool = ConnectionPool(2, timeout=None, dialer=dialer, wait_timeout=0.3)
    a = await pool.get_connection("a")
    a.release()
    await asyncio.sleep(0.01)
    b = await pool.get_connection("b")
    b.release()
    c = await pool.get_connection("c")                  # evicts a (LRU idle)
    after_evict = [pool.peek("a") is None, pool.peek("b") is not None, pool.stats.evictions]
    await pool.get_connection("d")                      # evicts b
    # Full of leased connections: the next get waits, then PoolExhausted.
    t0 = _now_ms()
    exhausted = None
    try:
        await pool.get_connection("e")
    except PoolExhausted as exc:
        exhausted = str(exc)
    waited = _now_ms() - t0
    # A waiter is served as soon as a lease ends (its idle connection is evicted for it).
    waiter = asyncio.ensure_future(pool.get_connection("f", timeout=5))
    await asyncio.sleep(0.05)
    queued = pool.stats.waiting
    c.release()
    f = await asyncio.wait_for(waiter, 10)
    served = [f.peer_id, pool.peek("c") is None]
    # A cancelled waiter leaves no trace.
    w2 = asyncio.ensure_future(pool.get_connection("g", timeout=5))
    await asyncio.sleep(0.05)
    w2.cancel()
    await asyncio.sleep(0.05)
    s = pool.stats
    pool.close()
    await asyncio.sleep(0.05)
    return {"after_evict": after_evict, "exhausted": exhausted, "waited": waited,
            "queued": queued, "served": served, "waiting_after_cancel": s.waiting,
            "size": s.size, "exhausted_count": s.exhausted, "live": dialer.live}


async def limiter_fifo_deadline_cap_and_cancellation() -> dict[str, Any]:
    lim = ConnectionLimiter(2, max_queue=2, max_inbound_queue=1)
    s1 = await lim.request_connection("p1")
    s2 = await lim.request_connection("p2")
    order: list[str] = []

    async def want(peer: str, **kw: Any) -> Slot:
        slot = await lim.request_connection(peer, **kw)
        order.append(peer)
        return slot

    t3 = asyncio.ensure_future(want("p3"))
    t4 = asyncio.ensure_future(want("p4", inbound=True))
    await asyncio.sleep(0)
    errors = []
    for kw in ({}, {"inbound": True}):
        try:
            await lim.request_connection("over", **kw)
        except LimitExceeded as exc:
            errors.append(str(exc))
    s1.release()
    s1.release()                                # idempotent: frees one slot only
    s3 = await t3
    held_mid = lim.held
    t4.cancel()                                 # asyncio cancellation withdraws it
    await asyncio.sleep(0)
    after_cancel = [lim.held, lim.queued]
    timed_out = None
    try:
        await lim.request_connection("late", timeout=0.1)
    except LimitExceeded as exc:
        timed_out = str(exc)
    s2.release()
    s3.release()
    st = lim.stats
    return {"order": order, "errors": errors, "held_mid": held_mid,
            "after_cancel": after_cancel, "timed_out": timed_out,
            "final": [st.held, st.queued, st.granted, st.refused, st.timed_out, st.cancelled]}


async def dial_failure_releases_the_slot_and_fails_every_sharer() -> dict[str, Any]:
    lim = ConnectionLimiter(1)
    dialer = CountingDialer()
    dialer.fail_next.append(ConnectionClosedError("no route to peer"))
    pool = ConnectionPool(4, timeout=1, dialer=dialer, limiter=lim)
    results = await asyncio.gather(pool.get_connection("x"), pool.get_connection("x"),
                                   return_exceptions=True)
    errs = [type(r).__name__ + ":" + str(r) for r in results]
    held = lim.held
    lease = await pool.get_connection("x")            # the next get redials
    held2 = lim.held
    lease.connection.close()                          # closed by the app: leaves the pool
    await asyncio.sleep(0)
    s = pool.stats
    pool.close()
    return {"errs": errs, "held": held, "held2": held2, "size": s.size,
            "failures": s.failures, "held_end": lim.held, "live": dialer.live}


async def dial_timeout_is_its_own_error() -> dict[str, Any]:
    lim = ConnectionLimiter(2)
    dialer = CountingDialer()
    pool = ConnectionPool(4, timeout=1, dialer=dialer, limiter=lim, dial_timeout=0.001)
    error: BaseException | None = None
    try:
        await pool.get_connection("slow")
    except DialTimeout as exc:
        error = exc
    await asyncio.sleep(0.2)  # the cancelled dial has closed what it opened
    out = {"type": type(error).__name__, "message": str(error),
           "timeout_error": isinstance(error, TimeoutError),
           "operation_timeout": isinstance(error, OperationTimeout),
           "peer": getattr(error, "peer_id", None), "held": lim.held, "live": dialer.live,
           "size": pool.stats.size}
    pool.close()
    return out


async def remote_close_leaves_the_pool() -> dict[str, Any]:
    lim = ConnectionLimiter(4)
    dialer = CountingDialer()
    pool = ConnectionPool(4, timeout=30, dialer=dialer, limiter=lim)
    await pool.get_connection("bob")
    gone: asyncio.Future[str] = asyncio.get_event_loop().create_future()

    def on_gone(_peer: str, reason: str) -> None:
        if not gone.done():
            gone.set_result(reason)

    pool.events.on("gone", on_gone)
    dialer.remotes["bob"].close()      # the peer hangs up
    t0 = _now_ms()
    reason = await asyncio.wait_for(gone, 45)
    ms = _now_ms() - t0
    s = pool.stats
    pool.close()
    return {"reason": reason, "ms": ms, "size": s.size, "held": lim.held}


async def scale(users: int, limit: int) -> dict[str, Any]:
    lim = ConnectionLimiter(limit, max_queue=32)
    dialer = CountingDialer()
    pool = ConnectionPool(users, timeout=0.15, dialer=dialer, limiter=lim, wait_timeout=30)
    held_samples: list[int] = []

    async def user(i: int) -> str:
        async with pool.connection(f"peer{i}") as lease:
            held_samples.append(lim.held)
            return await echo_roundtrip(lease, f"m{i}")

    t0 = _now_ms()
    replies = await asyncio.gather(*(user(i) for i in range(users)))
    ms = _now_ms() - t0
    await asyncio.sleep(0.4)                      # idle timeout closes the rest
    s = pool.stats
    st = lim.stats
    pool.close()
    return {"ok": replies == [f"echo:m{i}" for i in range(users)], "ms": ms,
            "peak_live": dialer.peak, "peak_held": st.peak_held,
            "max_sample": max(held_samples), "dials": s.dials, "size": s.size,
            "held": lim.held, "live": dialer.live, "idle_closes": s.idle_closes}


def churn_setup() -> None:
    lim = ConnectionLimiter(8)
    dialer = CountingDialer()
    _STATE.update(lim=lim, dialer=dialer,
                  pool=ConnectionPool(8, timeout=None, dialer=dialer, limiter=lim))


async def churn(cycles: int) -> float:
    """``cycles`` sequential get/release/close cycles; their duration in ms.

    Sequential: with 8 concurrent loopback dials Chromium hits its
    PeerConnection limit after ~250 cycles even with both GCs forced
    (something on the JS side keeps them).
    """
    pool: ConnectionPool = _STATE["pool"]
    t0 = _now_ms()
    for i in range(cycles):
        lease = await pool.get_connection(f"churn{_STATE.setdefault('n', 0) + i}")
        lease.release()
        lease.connection.close()
    _STATE["n"] += cycles
    ms = _now_ms() - t0
    await asyncio.sleep(0.2)
    gc.collect()
    return ms


def churn_state() -> dict[str, int]:
    pool: ConnectionPool = _STATE["pool"]
    lim: ConnectionLimiter = _STATE["lim"]
    dialer: CountingDialer = _STATE["dialer"]
    s = pool.stats
    return {"size": s.size, "dials": s.dials, "held": lim.held, "queued": lim.queued,
            "live": dialer.live, "remotes": len(dialer.remotes), "proxies": live_proxies()}


def churn_close() -> None:
    _STATE.pop("pool").close()
