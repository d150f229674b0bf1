"""The signaling server in-process (aiohttp test server on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.server_cases import CASES
from web.server import Limits, make_app

pytestmark = pytest.mark.unit


def _static(tmp: Path) -> Path:
    (tmp / "pyodide").mkdir()
    (tmp / "index.html").write_text('<script type="module" src="loader.js"></script>')
    (tmp / "loader.js").write_text("// loader")
    (tmp / "pyodide" / "pyodide.asm.wasm").write_bytes(b"\0asm")
    return tmp


@pytest.mark.parametrize("name", sorted(CASES))
def test_server_case(name: str, tmp_path: Path) -> None:
    async def main() -> None:
        app = make_app(static_dir=_static(tmp_path), limits=Limits())
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await asyncio.wait_for(CASES[name](str(server.make_url("")).rstrip("/")), 60)
        finally:
            await server.close()

    asyncio.run(main())
