"""Page side of the Connection facade tests (tests/browser/test_webrtc.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser import Connection, PeerConnection, WebRtcConnection
from pyapp.browser._ffi import live_proxies
from pyapp.browser.loopback import connected_pair
from pyapp.browser.probing import answer_probes
from pyapp.core.framing import Reliability
from pyapp.exceptions import PyAppError


async def facade_features_and_teardown() -> dict[str, Any]:
    before = live_proxies()
    a, b = await connected_pair()
    out: dict[str, Any] = {"types": [type(a).__name__, type(a.peer).__name__],
                           "alias": WebRtcConnection is Connection,
                           "bound": a.peer.connection is a,
                           "none_yet": [a.mux is None, a.monitor is None, a.power is None],
                           "security": a.security.status}
    orders = a.create_multiplexed_channel(label="orders")
    ticks = a.create_data_channel_with_reliability("ticks", Reliability.UNRELIABLE)
    mb = b.multiplexer()
    out["same_mux"] = a.multiplexer() is a.mux
    accepted = [(await mb.accept(5)).label, (await mb.accept(5)).label]
    out["accepted"] = sorted(accepted)
    await orders.send(b"bid 42")
    monitor = a.start_connection_quality_monitoring(0.1, probe=True)
    answer_probes(mb)
    out["monitor"] = [a.monitor is monitor, monitor.pc is a, monitor.peer is a.peer]
    stats = await a.get_statistics()
    out["stats_channels"] = sorted(c.label for c in stats.channels)
    # Closing the *wrapper* tears the features down too (the facade listens for "closing").
    session = a.mux
    a.peer.close()
    out["after_close"] = [a.closed, a.mux is None, a.monitor is None, monitor.running,
                          session is not None and session.failed]
    try:
        orders.send_nowait(b"late")
        out["late_send"] = "sent"
    except PyAppError as exc:
        out["late_send"] = type(exc).__name__
    _ = ticks
    b.close()
    await asyncio.sleep(0.1)
    out["proxies_delta"] = live_proxies() - before
    return out


async def bare_peer_gets_a_facade() -> dict[str, Any]:
    pc = PeerConnection(signal=lambda m: None)
    facade = pc.connection            # made on first use, once
    out = {"type": type(facade).__name__, "same": pc.connection is facade,
           "owns_wrapper": facade.peer is pc}
    pc.close()
    out["closed"] = facade.closed
    return out
