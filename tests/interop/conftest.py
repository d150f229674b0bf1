"""Fixtures for the interop tests: the aiortc peer's thread, pages with the interop helpers, links."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ifaddr
import pytest

from tests.conftest import PyPage, ServerProcess, missing_prerequisite, new_pypage
from tests.support.aiortc_peer import AiortcPeer, PeerThread, SdpFilter, SignalingPeer

PAGE = "tests.pyodide.interop_cases"
"""The page side of every interop test (called with ``pypage.call``)."""


def non_loopback_ipv4() -> list[str]:
    """Addresses aiortc can gather on (it skips 127.0.0.1), as ifaddr (aiortc's own source) lists them."""
    return [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]


@pytest.fixture(scope="module")
def peer_thread() -> Iterator[PeerThread]:
    if not non_loopback_ipv4():
        missing_prerequisite("aiortc needs a non-loopback IPv4 interface (it ignores 127.0.0.1)")
    thread = PeerThread()
    yield thread
    thread.stop()


def interop_page(browser: Any, server: ServerProcess) -> PyPage:
    page = new_pypage(browser, server)
    page.call(f"{PAGE}:setup")
    return page


@pytest.fixture(scope="module")
def cpage(chromium: Any, server: ServerProcess) -> Iterator[PyPage]:
    page = interop_page(chromium, server)
    yield page
    errors = [c for c in page.console if c.startswith("pageerror")]
    page.page.context.close()
    assert not errors, errors


@dataclass
class Link:
    """A connected page <-> aiortc pair; the page's current connection (tests/pyodide/interop_cases.py)."""

    page: PyPage
    thread: PeerThread
    peer: AiortcPeer
    page_id: str
    page_dialed: bool

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.thread.run(coro, timeout)

    def close(self) -> None:
        self.page.call(f"{PAGE}:close")
        self.run(self.peer.close())
        self.run(self.peer.signaling.close())


def connect(page: PyPage, thread: PeerThread, server: ServerProcess, *, page_dials: bool,
            sdp_filter: SdpFilter | None = None, aiortc_channels: tuple[str, ...] = ("raw",),
            page_channels: tuple[str, ...] = ("raw",), timeout: float = 30.0) -> Link:
    """Join one fresh room, connect the page and the aiortc peer (who offers: ``page_dials``).

    The dialer is the impolite side (pyapp's pool convention), so it also takes
    the handshake's OFFERER role and the even mux ids.
    """
    room = "interop-" + uuid.uuid4().hex[:10]
    sig = thread.run(SignalingPeer.connect(server.url, room))
    page_id = page.call(f"{PAGE}:join", room=room, polite=not page_dials)
    assert thread.run(asyncio.wait_for(sig.joined.get(), 10)) == page_id
    peer = AiortcPeer(sig, page_id, sdp_filter=sdp_filter)
    try:
        if page_dials:
            page.call(f"{PAGE}:dial", peer=sig.peer_id, channels=list(page_channels))
        else:
            page.call(f"{PAGE}:dial", peer=sig.peer_id, channels=[])

            async def dial() -> None:
                for label in aiortc_channels:
                    peer.create_channel(label)
                await peer.dial()

            thread.run(dial())
        page.call(f"{PAGE}:wait_connected", seconds=timeout, timeout=timeout + 10)
        thread.run(peer.wait_connected(timeout))
        return Link(page, thread, peer, page_id, page_dials)
    except BaseException:
        thread.run(peer.close())
        thread.run(sig.close())
        raise
