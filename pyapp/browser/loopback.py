"""Two Connections in one page, signaling each other directly.

Useful for tests, benchmarks and trying the API in the console: no server is
involved, but the WebRTC path (ICE, DTLS, SCTP) is the browser's real one.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    a, b = await connected_pair()
    chat = a.create_data_channel("chat")
    ...
    a.close(); b.close()
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyapp.browser._ffi import spawn
from pyapp.browser.connection import Connection
from pyapp.exceptions import OperationTimeout

__all__ = ["connected_pair", "loopback_pair"]


def loopback_pair(**kwargs: Any) -> tuple[Connection, Connection]:
    """Two Connections wired to each other's ``handle_signal`` (not yet negotiated).

    The first is impolite, the second polite. Signals are delivered as tasks, in
    order, like a real signaling channel would.
    """
    a_box: list[Connection] = []
    b_box: list[Connection] = []
    queues: dict[str, asyncio.Queue[dict[str, Any]]] = {"a": asyncio.Queue(), "b": asyncio.Queue()}

    async def pump(name: str, target: list[Connection]) -> None:
        queue = queues[name]
        while True:
            message = await queue.get()
            pc = target[0]
            if pc.closed:
                return
            await pc.handle_signal(message)

    a = Connection(signal=lambda m: queues["b"].put_nowait(m), polite=False, **kwargs)
    b = Connection(signal=lambda m: queues["a"].put_nowait(m), polite=True, **kwargs)
    a_box.append(a)
    b_box.append(b)
    tasks = [spawn(pump("a", a_box), "loopback signaling to a"),
             spawn(pump("b", b_box), "loopback signaling to b")]
    for pc in (a, b):
        pc.events.on("connectionstatechange",
                     lambda state: [t.cancel() for t in tasks] if state == "closed" else None)
    return a, b


async def connected_pair(label: str = "pyapp-probe", timeout: float = 10.0,
                         **kwargs: Any) -> tuple[Connection, Connection]:
    """A loopback pair that has finished connecting (a data channel forces negotiation).

    The channel used to trigger negotiation is closed again before returning.
    Raises :class:`~pyapp.exceptions.OperationTimeout` (both closed) when the pair
    does not connect within ``timeout`` seconds.
    """
    a, b = loopback_pair(**kwargs)
    arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_channel(remote: Any) -> None:
        if remote.label == label and not arrived.done():
            arrived.set_result(remote)

    b.events.on("datachannel", on_channel)
    channel = a.create_data_channel(label)
    try:
        await asyncio.gather(a.wait_connected(timeout), b.wait_connected(timeout))
        # Wait for b's side of the channel too, so its datachannel event cannot reach
        # a handler the caller registers after we return.
        remote = await asyncio.wait_for(arrived, timeout)
    except BaseException as exc:
        a.close()  # nothing stays open on failure or cancellation
        b.close()
        if isinstance(exc, TimeoutError) and not isinstance(exc, OperationTimeout):
            raise OperationTimeout(
                f"the loopback pair did not see its {label!r} channel within {timeout} s; "
                "the page may be overloaded: raise timeout", operation="connected_pair",
                timeout=timeout) from None
        raise
    b.events.off("datachannel", on_channel)
    channel.close()
    remote.close()
    return a, b
