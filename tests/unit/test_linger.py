"""A closed signaling socket lingers (FIN, then read until the client's FIN) without polling,
and the app's cleanup waits for every linger: none is left pending when the loop closes."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from web.client import LINGERS, track_lingers
from web.limits import Limits
from web.server import SESSIONS, make_app

pytestmark = pytest.mark.unit

_UPGRADE = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class _Recording(set):  # type: ignore[type-arg]
    """The app's linger set, remembering every task it held."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[asyncio.Task[None]] = []

    def add(self, task: asyncio.Task[None]) -> None:
        self.added.append(task)
        super().add(task)


def _static(tmp: Path) -> Path:
    (tmp / "index.html").write_text("<p>test</p>")
    return tmp


async def _registered(app: web.Application) -> Any:
    """The server's session for the one client, once it registered it (up to 2 s)."""
    for _ in range(200):
        if app[SESSIONS]:
            return next(iter(app[SESSIONS]))
        await asyncio.sleep(0.01)
    raise AssertionError("the server never registered the session")


async def _silent_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then never answers (no close, no FIN)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_UPGRADE.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _answer_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Read up to the server's close frame and answer it (masked, 1000); send no FIN."""
    data = b""
    while b"\x88" not in data:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, f"the stream ended before a close frame: {data!r}"
        data += chunk
    mask = b"\x01\x02\x03\x04"
    payload = (1000).to_bytes(2, "big")
    writer.write(bytes([0x88, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return data


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
    return data


def test_shutdown_waits_for_the_linger_and_none_is_left_pending(tmp_path: Path) -> None:
    destroyed: list[str] = []

    def on_error(_loop: object, context: dict[str, object]) -> None:
        destroyed.append(str(context.get("message")))

    async def main() -> dict[str, object]:
        asyncio.get_running_loop().set_exception_handler(on_error)
        app = make_app(static_dir=_static(tmp_path), limits=Limits(close_timeout=0.5))
        track_lingers(app)
        app[LINGERS] = _Recording()
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        assert server.port is not None
        reader, writer = await _silent_client(server.port)
        await _registered(app)
        # The client answers the server's close but never sends its FIN: the socket
        # lingers (close_timeout, 0.5 s) while cleanup waits for it.
        answered = asyncio.ensure_future(_answer_close(reader, writer))
        started = time.monotonic()
        await server.close()
        took = time.monotonic() - started
        seen = list(app[LINGERS].added)  # type: ignore[attr-defined]
        received = await answered + await asyncio.wait_for(_read_to_eof(reader), 5)
        writer.close()
        return {"seen": seen, "left": set(app[LINGERS]), "took": took, "received": received}

    result = asyncio.run(main())
    gc.collect()
    seen = result["seen"]
    assert isinstance(seen, list) and seen, "no linger was tracked by the app"
    assert all(t.done() for t in seen), "cleanup returned with a linger still running"
    assert result["left"] == set()
    assert 0.4 <= result["took"] < 10, result["took"]  # type: ignore[operator]  # it waited the linger
    # The refusal reached the client before the end of the stream.
    assert b"shutting-down" in result["received"], result["received"]  # type: ignore[operator]
    assert not [m for m in destroyed if "destroyed but it is pending" in m], destroyed


def test_linger_waits_for_the_client_without_polling(tmp_path: Path) -> None:
    async def main() -> dict[str, object]:
        app = make_app(static_dir=_static(tmp_path), limits=Limits(close_timeout=1.0))
        track_lingers(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        assert server.port is not None
        reader, writer = await _silent_client(server.port)
        session = await _registered(app)
        real_sleep = asyncio.sleep
        short_sleeps = 0

        async def counting_sleep(delay: float, *args: object) -> object:
            nonlocal short_sleeps
            if 0 < delay <= 0.05:
                short_sleeps += 1
            return await real_sleep(delay, *args)

        with mock.patch("asyncio.sleep", counting_sleep):
            session.refuse("test", "closing you", 1008)
            # The client answers the close; the server sends its FIN and lingers until
            # the client's FIN, sent here 0.6 s later (inside close_timeout, 1 s).
            received = await _answer_close(reader, writer)
            await real_sleep(0.6)
            assert app[LINGERS], "the server is not lingering"
            writer.write_eof()
            started = time.monotonic()
            received += await asyncio.wait_for(_read_to_eof(reader), 5)
            for _ in range(100):
                if not app[LINGERS]:
                    break
                await real_sleep(0.01)
            ended = time.monotonic() - started
        writer.close()
        await server.close()
        return {"short_sleeps": short_sleeps, "received": received, "ended": ended,
                "left": set(app[LINGERS])}

    result = asyncio.run(main())
    assert b"closing you" in result["received"], result["received"]  # type: ignore[operator]
    assert result["left"] == set()
    assert result["short_sleeps"] == 0, result  # no 20 ms polling while lingering
