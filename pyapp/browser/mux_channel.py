"""One logical channel of a :class:`~pyapp.browser.mux.MuxSession`, as the application sees it.

A :class:`MultiplexedChannel` is what ``create_multiplexed_channel`` returns
and ``accept()`` hands out: ``await send(data)`` (waits while its send queue is
full), ``await receive()`` / ``async for`` (its own bounded inbox), ``close()``
(graceful) and ``reset(reason)`` (abort). The session feeds it; it never talks
to the browser itself.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    a, b = await connected_pair()
    chat = a.multiplexer().create_multiplexed_channel(label="chat")
    await chat.send("hi")
    theirs = await b.multiplexer().accept()
    print(await theirs.receive())
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from pyapp._events import Emitter
from pyapp._inbox import Inbox
from pyapp.browser.timer import now as _now
from pyapp.core.mux import ChannelStats, Priority, Reliability, SendQueueFull
from pyapp.exceptions import (
    ChannelResetError,
    ConnectionClosedError,
    DeliveryError,
    LocalProtocolError,
)

if TYPE_CHECKING:
    from pyapp.browser.mux import MuxSession

__all__ = ["MultiplexedChannel"]


class MultiplexedChannel:
    """One logical channel of a :class:`MuxSession`.

    ``await send(data)`` (bytes → binary, str → text) waits while this channel's
    send queue is full; ``await receive()`` / ``async for`` yield messages;
    ``close()`` closes gracefully (queued data is still delivered).
    Events (``channel.events.on``): ``message`` (when a callback is registered,
    messages go to it instead of the inbox), ``messages`` (a list of messages in
    arrival order, as many as arrived together; when registered it takes them
    instead of ``message`` and the inbox), ``open``, ``close``, ``reset`` (reason).
    """

    def __init__(self, session: MuxSession, channel_id: int, label: str,
                 reliability: Reliability, priority: Priority, local: bool) -> None:
        self.session = session
        self.channel_id = channel_id
        self.label = label
        self.reliability = reliability
        self.priority = priority
        self.local = local
        self.events = Emitter()
        self._inbox = Inbox()
        self._window: asyncio.Event = asyncio.Event()
        self._window.set()
        self._accepted: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self._done = False
        self.error: BaseException | None = None
        self.dropped_inbound = 0
        self.last_stats: ChannelStats | None = None

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> str:
        """``opening``, ``open``, ``closing``, ``closed`` or ``reset``."""
        if self._done:
            return "reset" if isinstance(self.error, ChannelResetError) else "closed"
        try:
            return self.session.mux.channel_state(self.channel_id).value
        except (LocalProtocolError, ConnectionClosedError):
            return "closed"

    @property
    def stats(self) -> ChannelStats | None:
        """The multiplexer's counters for this channel (last known after it ended)."""
        if not self._done:
            try:
                self.last_stats = self.session.mux.channel_stats(self.channel_id)
            except (LocalProtocolError, ConnectionClosedError):
                pass
        return self.last_stats

    @property
    def queued_inbound(self) -> int:
        """Bytes received and not yet consumed by ``receive``."""
        return self._inbox.nbytes

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        """Queue one message; waits while this channel's send queue is full.

        Raises ChannelResetError / ConnectionClosedError once the channel ended,
        MessageTooLargeError, or DeliveryError if the session failed with this
        message unacknowledged. On an UNRELIABLE channel a full queue drops the
        oldest messages instead (counted in ``stats.messages_dropped``).
        """
        session = self.session
        # An ASCII str is as many bytes as characters: no encode here (send encodes it).
        size = len(data) if not isinstance(data, str) or data.isascii() else len(data.encode())
        while True:
            self._raise_if_done()
            if (session._paused or session._paused_unreliable) and not await session._wait_unpaused(self):
                return
            if session.mux.can_send(self.channel_id, size):
                try:
                    session.mux.send(self.channel_id, data, _now())
                except (SendQueueFull, DeliveryError):
                    pass  # raced with another sender on this channel: wait for the window
                else:
                    session._after_local_action()
                    return
            self._window.clear()
            await self._window.wait()

    async def send_many(self, messages: Iterable[bytes | bytearray | memoryview | str]) -> None:
        """Send each item as its own message, in order: the way to send many small ones.

        The same as ``await send(m)`` for each ``m`` (same waiting while the send
        queue is full, same errors), but the multiplexer queues them as a run
        (:meth:`~pyapp.core.mux.Multiplexer.send_many`) and packs them into a few
        data-channel messages. On an error the messages before the failing one
        have been queued and are delivered.
        """
        pending = messages if isinstance(messages, list | tuple) else list(messages)
        session = self.session
        mux = session.mux
        start, total = 0, len(pending)
        while start < total:
            self._raise_if_done()
            if session._paused or session._paused_unreliable:
                for data in pending[start:]:  # one at a time while power saving pauses senders
                    await self.send(data)
                return
            self._window.clear()  # before the attempt: a window opening after it is seen
            try:
                taken = mux.send_many(self.channel_id, pending[start:] if start else pending, _now())
            finally:
                session._after_local_action()
            start += taken
            if start < total and not taken:
                await self._window.wait()

    def send_nowait(self, data: bytes | bytearray | memoryview | str) -> None:
        """Queue one message without waiting (for callbacks, e.g. an echo).

        Raises SendQueueFull (a LocalProtocolError) when this channel's queue is
        full instead of waiting; otherwise like :meth:`send`.
        """
        self._raise_if_done()
        self.session.mux.send(self.channel_id, data, _now())
        self.session._after_local_action()

    def _end_error(self) -> BaseException:
        return self.error or ConnectionClosedError(f"channel {self.label!r} is closed")

    def _raise_if_done(self) -> None:
        if self._done:
            raise self._end_error()

    # ------------------------------------------------------------------ receiving

    def _deliver(self, data: bytes | str) -> None:
        if self.events.has_listeners("messages"):
            self.events.emit("messages", [data])
            return
        if self.events.has_listeners("message"):
            self.events.emit("message", data)
            return
        size = len(data)
        if self._inbox.nbytes + size > self.session.inbox_limit and len(self._inbox):
            self.dropped_inbound += 1
            self.session._reset_local(self, "receive queue overflow (consumer too slow)")
            return
        self._inbox.put(data)

    def _deliver_many(self, messages: tuple[bytes | str, ...]) -> None:
        """A run of messages, in order: one ``messages`` event, or each as ``_deliver``."""
        events = self.events
        if events.has_listeners("messages"):
            events.emit("messages", list(messages))
        elif events.has_listeners("message"):
            emit = events.emit
            for data in messages:
                if self._done:
                    return  # a callback ended the channel: nothing more is delivered
                emit("message", data)
        else:
            for data in messages:
                if self._done:
                    return
                self._deliver(data)

    async def receive(self) -> bytes | str:
        """The next message. After the channel ends, the remaining messages are
        still returned; then ChannelResetError (reset) or ConnectionClosedError.

        Concurrent calls are allowed: they are served in call order, each with
        the next message, and when the channel ends every waiting call raises.
        """
        return await self._inbox.get()

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosedError:
                return

    async def wait_accepted(self, timeout: float | None = None) -> None:
        """Wait until the peer has accepted the channel (ACCEPT frame)."""
        await asyncio.wait_for(asyncio.shield(self._accepted), timeout)

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """Close gracefully: what is queued is still sent, then the peer is told."""
        if self._done:
            return
        try:
            self.session.mux.close_channel(self.channel_id)
        except (LocalProtocolError, ConnectionClosedError):
            return
        self.session._after_local_action()

    def reset(self, reason: str = "reset by application") -> None:
        """Abort the channel at once; the peer gets a RESET with ``reason``."""
        if not self._done:
            self.session._reset_local(self, reason)

    def _finish(self, error: BaseException | None, stats: ChannelStats | None) -> None:
        if self._done:
            return
        self._done = True
        self.error = error
        if stats is not None:
            self.last_stats = stats
        if not self._accepted.done():
            self._accepted.set_exception(error or ConnectionClosedError("channel closed"))
            self._accepted.exception()
        self._window.set()
        self._inbox.close(self._end_error)
        if isinstance(error, ChannelResetError):
            self.events.emit("reset", error.reason)
        self.events.emit("close")

    # ------------------------------------------------------------------ encryption

    async def send_encrypted(self, message: bytes | str, key: bytes | None = None) -> None:
        """Send ``message`` sealed with AES-256-GCM (end-to-end encryption; see docs/security.md).

        Without ``key``: the session keys of this connection's authentication
        (``await pc.authenticate(identity)`` first). With ``key``: a pre-shared
        key (never used directly; working keys are derived with HKDF).

        Example::

            await orders.send_encrypted(b"bid 42", key=psk)
            print(await peer_orders.receive_encrypted(key=psk))
        """
        from pyapp.browser.secure import send_encrypted

        await send_encrypted(self, message, key)

    async def receive_encrypted(self, key: bytes | None = None) -> bytes:
        """The next message, decrypted; raises DecryptionError for a tampered,
        replayed or wrong-key message (which is dropped and counted)."""
        from pyapp.browser.secure import receive_encrypted

        result: bytes = await receive_encrypted(self, key)
        return result

    def __repr__(self) -> str:
        return (f"<MultiplexedChannel {self.channel_id} {self.label!r} {self.priority.name} "
                f"{'reliable' if self.reliability.reliable else 'unreliable'} {self.state}>")
