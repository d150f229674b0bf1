"""What the channels are built on: the shared receive queue (DataChannel.receive,
MultiplexedChannel.receive) and the event emitter's error reporting."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pyapp._events import RECENT_ERRORS, Emitter
from pyapp._inbox import Inbox
from pyapp.exceptions import ConnectionClosedError

pytestmark = pytest.mark.unit


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_readers_are_served_in_call_order() -> None:
    async def main() -> list[bytes | str]:
        inbox = Inbox()
        readers = [asyncio.ensure_future(inbox.get()) for _ in range(3)]
        await asyncio.sleep(0)
        assert inbox.waiting == 3
        for m in (b"1", "2", b"3", b"4"):
            inbox.put(m)
        got = [await r for r in readers]
        assert len(inbox) == 1 and inbox.nbytes == 1
        return [*got, await inbox.get()]
    assert run(main()) == [b"1", "2", b"3", b"4"]


def test_close_wakes_every_waiter_and_keeps_queued_messages_readable() -> None:
    async def main() -> None:
        inbox = Inbox()
        waiting = [asyncio.ensure_future(inbox.get()) for _ in range(2)]
        await asyncio.sleep(0)
        inbox.close(lambda: ConnectionClosedError("closed"))
        for w in waiting:
            with pytest.raises(ConnectionClosedError):
                await w
        with pytest.raises(ConnectionClosedError):
            await inbox.get()

        second = Inbox()
        second.put(b"kept")
        second.close(lambda: ConnectionClosedError("closed"))
        assert await second.get() == b"kept"
        with pytest.raises(ConnectionClosedError):
            await second.get()
    run(main())


def test_a_reader_cancelled_after_the_handoff_loses_nothing() -> None:
    async def main() -> None:
        inbox = Inbox()
        first = asyncio.ensure_future(inbox.get())
        second = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put(b"m")  # handed to `first` ...
        first.cancel()  # ... which is cancelled before it ran
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 1) == b"m"
        third = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put(b"n")
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third
        assert await inbox.get() == b"n"  # back at the front of the queue
    run(main())


def test_emitter_logs_callback_errors_and_keeps_only_a_few(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pyapp.events")
    e = Emitter()
    seen: list[int] = []

    def broken(value: int) -> None:
        raise RuntimeError(f"boom {value}")

    e.on("tick", broken)
    e.on("tick", seen.append)  # later callbacks still run
    reported: list[tuple[str, str]] = []
    e.on_error = lambda event, exc: reported.append((event, str(exc)))
    for i in range(100):
        e.emit("tick", i)
    assert seen == list(range(100))
    assert e.error_count == 100
    assert len(e.recent_errors) == RECENT_ERRORS  # bounded, not one per error forever
    assert str(e.recent_errors[-1]) == "boom 99"
    assert reported[0] == ("tick", "boom 0") and len(reported) == 100
    records = [r for r in caplog.records if r.name == "pyapp.events"]
    assert len(records) == 100
    assert "'tick' callback" in records[0].getMessage() and "broken" in records[0].getMessage()
    assert records[0].exc_info is not None  # the traceback is logged


def test_inbox_docstring_example_runs() -> None:
    import doctest

    import pyapp._inbox

    assert doctest.testmod(pyapp._inbox).failed == 0
