"""A receive queue that any number of concurrent readers share, served in call order.

Both :class:`~pyapp.browser.datachannel.DataChannel` and
:class:`~pyapp.browser.mux_channel.MultiplexedChannel` keep their received
messages in one. Concurrent ``get()`` calls are served first come, first
served, each with the next message (a message is never given to two readers,
nor lost when a waiting reader is cancelled); :meth:`Inbox.close` lets the
readers have what is still queued, then every waiting and later ``get()``
raises the error it was given.

Example::

    >>> import asyncio
    >>> from pyapp._inbox import Inbox
    >>> async def demo():
    ...     inbox = Inbox()
    ...     first, second = asyncio.ensure_future(inbox.get()), asyncio.ensure_future(inbox.get())
    ...     await asyncio.sleep(0)
    ...     inbox.put(b"one"); inbox.put(b"two")
    ...     return await first, await second
    >>> asyncio.run(demo())
    (b'one', b'two')
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# Internal helper: no __all__ (not part of the public API).

Message = bytes | str


class Inbox:
    """FIFO of messages plus FIFO of waiting readers (one of them is always empty)."""

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        self._readers: deque[asyncio.Future[Message]] = deque()
        self._error: Callable[[], BaseException] | None = None
        self.nbytes = 0
        """bytes (str: characters) of the messages queued and not yet taken"""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> int:
        """Readers currently waiting in ``get()``."""
        return sum(1 for f in self._readers if not f.done())

    @property
    def closed(self) -> bool:
        return self._error is not None

    def put(self, item: Message) -> None:
        """Hand ``item`` to the longest-waiting reader, or queue it."""
        if self._readers and self._hand_over(item):
            return
        self._items.append(item)
        self.nbytes += len(item)

    def take_all(self) -> list[Message]:
        """Every queued message, oldest first (the queue is emptied)."""
        out = list(self._items)
        self._items.clear()
        self.nbytes = 0
        return out

    async def get(self) -> Message:
        """The next message; after :meth:`close`, the queued ones, then the close error."""
        if self._items:
            item = self._items.popleft()
            self.nbytes -= len(item)
            return item
        if self._error is not None:
            raise self._error()
        reader: asyncio.Future[Message] = asyncio.get_event_loop().create_future()
        self._readers.append(reader)
        try:
            return await reader
        except asyncio.CancelledError:
            if reader.done() and not reader.cancelled() and reader.exception() is None:
                # The message was handed over just as this reader was cancelled:
                # give it to the next reader (or back to the front of the queue).
                self._put_front(reader.result())
            raise

    def _put_front(self, item: Message) -> None:
        if self._readers and self._hand_over(item):
            return
        self._items.appendleft(item)
        self.nbytes += len(item)

    def _hand_over(self, item: Message) -> bool:
        """Give ``item`` to the longest-waiting live reader; False if none is left."""
        readers = self._readers
        while readers:
            reader = readers.popleft()
            if not reader.done():
                reader.set_result(item)
                return True
        return False

    def close(self, error: Callable[[], BaseException]) -> None:
        """No more messages: waiting readers (and later ones, once the queue is
        empty) get ``error()``. Idempotent: the first error stays."""
        if self._error is None:
            self._error = error
        while self._readers:
            reader = self._readers.popleft()
            if not reader.done():
                reader.set_exception(self._error())
