"""Page side of tests/browser/test_startup.py (called with ``pypage.call``): the
runtime the loader started (from the memory snapshot or normally) really works.

Only the standard library is imported at module level, so :func:`runtime_state`
sees what the loader itself imported, not what this module pulled in.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from typing import Any


def runtime_state() -> dict[str, Any]:
    """Whether the loader left the app imported, and the package's version two ways."""
    app_imported = "pyapp.browser.app" in sys.modules   # read before importing anything
    import pyapp

    return {"app_imported": app_imported, "version": pyapp.__version__,
            "dist_version": importlib.metadata.version("pyapp")}


async def round_trip(text: str) -> str:
    """The FFI, asyncio on the browser's loop, a real RTCPeerConnection pair: ``text`` a→b."""
    from pyapp.browser.datachannel import DataChannel
    from pyapp.browser.loopback import connected_pair

    a, b = await connected_pair()
    got: asyncio.Future[Any] = asyncio.get_event_loop().create_future()

    def on_message(m: Any) -> None:
        if not got.done():
            got.set_result(m)

    def on_channel(ch: DataChannel) -> None:
        ch.events.on("message", on_message)

    b.events.on("datachannel", on_channel)
    ch = a.create_data_channel("t")
    await ch.wait_open(10)
    await ch.send(text.encode())
    m = await asyncio.wait_for(got, 10)
    a.close()
    b.close()
    return bytes(m).decode()
