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
from tests.interop.page import SETUP
from tests.support.aiortc_peer import AiortcPeer, PeerThread, SdpFilter, SignalingPeer


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
    page.py(SETUP)
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
    """A connected page <-> aiortc pair; the page's connection is ``PC`` in the page."""

    page: PyPage
    thread: PeerThread
    peer: AiortcPeer
    page_id: str
    page_dialed: bool

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.thread.run(coro, timeout)

    def close(self) -> None:
        self.page.py("PC.close()")
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
    page_id = page.py(f"await IO.join({room!r}, polite={not page_dials})")
    assert thread.run(asyncio.wait_for(sig.joined.get(), 10)) == page_id
    peer = AiortcPeer(sig, page_id, sdp_filter=sdp_filter)
    try:
        if page_dials:
            creates = "".join(f"PC.create_data_channel({label!r}); " for label in page_channels)
            page.py(f"PC = IO.pc({sig.peer_id!r}); {creates}None")
        else:
            page.py(f"PC = IO.pc({sig.peer_id!r}); None")

            async def dial() -> None:
                for label in aiortc_channels:
                    peer.create_channel(label)
                await peer.dial()

            thread.run(dial())
        page.py(f"await PC.wait_connected({timeout})", timeout=timeout + 10)
        thread.run(peer.wait_connected(timeout))
        return Link(page, thread, peer, page_id, page_dials)
    except BaseException:
        thread.run(peer.close())
        thread.run(sig.close())
        raise
