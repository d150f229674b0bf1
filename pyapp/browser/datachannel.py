"""``DataChannel``: an RTCDataChannel driven from Python with asyncio.

* ``await channel.send(data)`` waits while ``bufferedAmount`` is above the
  high-water mark and resumes on ``bufferedamountlow``, so a fast producer never
  fills the browser's buffer without bound.
* ``async for message in channel`` yields ``bytes`` (binary messages) or
  ``str`` (text messages) until the channel closes.
* A message larger than the connection's ``sctp.maxMessageSize`` raises
  :class:`~pyapp.exceptions.MessageTooLargeError` before anything is sent (the
  browser would otherwise close the whole channel).

Example (in the page)::

    channel = pc.create_data_channel("chat")
    await channel.wait_open()
    await channel.send("hello")
    async for message in channel:
        print("got", message)
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Iterable
from typing import Any

import js
from pyodide.ffi import JsException

from pyapp._events import Emitter
from pyapp._inbox import Inbox
from pyapp.browser._ffi import ProxyOwner, guard, is_null, translate_js_error
from pyapp.exceptions import (
    ConnectionClosedError,
    InvalidArgumentError,
    LocalProtocolError,
    MessageTooLargeError,
)

__all__ = ["DataChannel", "WebRtcDataChannel", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER"]

DEFAULT_HIGH_WATER = 1024 * 1024
"""Default ``bufferedAmount`` above which ``send`` waits (bytes)."""
DEFAULT_LOW_WATER = 256 * 1024
"""Default ``bufferedAmountLowThreshold``: ``send`` resumes below it (bytes)."""
DEFAULT_MAX_MESSAGE_SIZE = 65536
"""Used when the browser does not tell (``pc.sctp`` missing): the interoperable size."""


# Crossing the FFI costs more than the work for a small message, and a fresh JS
# ArrayBuffer per binary message (what ``to_js(bytes)`` makes) costs GC time: at
# 64 KiB, measured in Chromium, to_js takes 0.2-1.4 ms against ~0.1 ms for a view.
# So binary messages go out as a view of the Python buffer in the wasm heap
# (``send`` copies its argument before it returns), many at a time when the caller
# has many; received messages wait in a JS-side inbox that is handed to Python once
# per task, packed into one buffer. ``pyapp.browser.datachannel`` owns these.
_JS_HELPERS = """
return {
  sendView(ch, p) {
    const b = p.getBuffer("u8");
    try { ch.send(b.data); } finally { b.release(); }
  },
  // One copy of the whole run first: many send()s of small views into the (large)
  // wasm memory measured slower in Chromium than views into a small buffer.
  sendPacked(ch, p, lengths) {
    const b = p.getBuffer("u8"), n = lengths.getBuffer("u32");
    let data;
    try { data = b.data.slice(); } finally { b.release(); }
    try {
      let offset = 0;
      for (const len of n.data) { ch.send(data.subarray(offset, offset + len)); offset += len; }
    } finally { n.release(); }
  },
  // Queue message events; deliver(data, null, null) for one message (an ArrayBuffer
  // or a string), deliver(packed, lengths, strings) for several: binary messages
  // concatenated in `packed`, lengths[i] = -1 for the next of `strings`.
  inbox(ch, deliver) {
    let pending = [], bytes = 0, closed = false, scheduled = false;
    const port = new MessageChannel();
    const flush = () => {
      scheduled = false;
      if (closed || pending.length === 0) return;
      const batch = pending;
      pending = [];
      const size = bytes;
      bytes = 0;
      if (batch.length === 1) { deliver(batch[0], null, null); return; }
      const packed = new Uint8Array(size), lengths = new Int32Array(batch.length), strings = [];
      let offset = 0;
      for (let i = 0; i < batch.length; i++) {
        const d = batch[i];
        if (typeof d === "string") { lengths[i] = -1; strings.push(d); continue; }
        const u = new Uint8Array(d);
        packed.set(u, offset);
        offset += u.length;
        lengths[i] = u.length;
      }
      deliver(packed, lengths, strings);
    };
    const onMessage = (event) => {
      const d = event.data;
      pending.push(d);
      if (typeof d !== "string") bytes += d.byteLength;
      if (!scheduled) { scheduled = true; port.port2.postMessage(null); }
    };
    port.port1.onmessage = flush;
    ch.addEventListener("message", onMessage);
    return {
      flush,
      close() {
        closed = true;
        pending = [];
        ch.removeEventListener("message", onMessage);
        port.port1.onmessage = null;
        port.port1.close();
      },
    };
  },
};
"""
_HELPERS: Any = None

PACK_LIMIT = 256 * 1024
"""``send_many`` hands JS at most this many bytes of messages per crossing."""


def _helpers() -> Any:
    global _HELPERS
    if _HELPERS is None:
        _HELPERS = js.Function.new(_JS_HELPERS)()
    return _HELPERS


def _contiguous(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    return data if not isinstance(data, memoryview) or data.c_contiguous else data.tobytes()


class _ClosedChannel:
    """Stands in for the RTCDataChannel once closed (see ``PeerConnection.close``)."""

    readyState = "closed"
    bufferedAmount = 0
    bufferedAmountLowThreshold = 0
    binaryType = "arraybuffer"

    def __init__(self, js_channel: Any) -> None:
        self.label = str(js_channel.label)
        self.id = js_channel.id if not is_null(js_channel.id) else None
        self.ordered = bool(js_channel.ordered)
        self.maxRetransmits = None if is_null(js_channel.maxRetransmits) else js_channel.maxRetransmits
        self.maxPacketLifeTime = (None if is_null(js_channel.maxPacketLifeTime)
                                  else js_channel.maxPacketLifeTime)

    def close(self) -> None:
        pass

    def send(self, _data: Any) -> None:
        raise ConnectionClosedError(f"channel {self.label!r} is closed")


class DataChannel:
    """Python face of one RTCDataChannel.

    Events (``channel.events.on(name, callback)``): ``open``, ``close``,
    ``error`` (callback gets the error message), ``message`` (callback gets the
    message; when any ``message`` callback is registered, messages are not also
    queued for ``async for``), ``messages`` (callback gets a list: every message
    that arrived since the page last ran, binary ones as memoryviews of one
    buffer; when registered, it replaces ``message`` and the queue).
    """

    def __init__(self, js_channel: Any, max_message_size: int | None = None,
                 high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER,
                 get_max_message_size: Any = None) -> None:
        if low_water > high_water:
            raise InvalidArgumentError(
                f"low_water must not exceed high_water, got {low_water} > {high_water}")
        self.js_channel = js_channel
        self.events = Emitter()
        self.high_water = high_water
        self.low_water = low_water
        self._max_message_size = max_message_size
        self._get_max_message_size = get_max_message_size
        self._inbox = Inbox()
        self._drain: asyncio.Event = asyncio.Event()
        self._drain.set()
        self._opened: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self._closed: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.close_reason: str | None = None
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        js_channel.binaryType = "arraybuffer"
        js_channel.bufferedAmountLowThreshold = low_water
        self.peer_connection: Any = None  # set by PeerConnection for channels it owns
        self._js_send = js_channel.send
        helpers = _helpers()
        send_view, send_packed = helpers.sendView, helpers.sendPacked
        self._send_binary = lambda data: send_view(js_channel, data)
        self._send_packed = lambda data, lengths: send_packed(js_channel, data, lengths)
        # An upper bound of bufferedAmount, so send() reads the real value (an FFI
        # call) only when the bound passes the high-water mark.
        self._buffered_bound = 0
        self._owner = ProxyOwner(f"data channel {self.label!r}")
        self._owner.listen(js_channel, "open", self._on_open)
        self._rx = helpers.inbox(js_channel, self._owner.proxy(
            guard(self._on_messages, f"{self._owner.name} message handler")))
        self._owner.listen(js_channel, "bufferedamountlow", self._on_low)
        self._owner.listen(js_channel, "close", self._on_close)
        self._owner.listen(js_channel, "error", self._on_error)
        if js_channel.readyState == "open":
            self._opened.set_result(None)
        elif js_channel.readyState == "closed":
            self._finish("closed before it was wrapped")

    # ------------------------------------------------------------------ properties

    @property
    def label(self) -> str:
        return str(self.js_channel.label)

    @property
    def id(self) -> int | None:
        value = self.js_channel.id
        return None if is_null(value) else int(value)

    @property
    def ready_state(self) -> str:
        """``connecting``, ``open``, ``closing`` or ``closed``."""
        return str(self.js_channel.readyState)

    @property
    def ordered(self) -> bool:
        return bool(self.js_channel.ordered)

    @property
    def max_retransmits(self) -> int | None:
        value = self.js_channel.maxRetransmits
        return None if is_null(value) else int(value)

    @property
    def max_packet_life_time(self) -> int | None:
        value = self.js_channel.maxPacketLifeTime
        return None if is_null(value) else int(value)

    @property
    def buffered_amount(self) -> int:
        return int(self.js_channel.bufferedAmount)

    @property
    def max_message_size(self) -> int:
        """Largest message ``send`` accepts: the connection's ``sctp.maxMessageSize``.

        Read from the browser once the channel is open (SCTP is negotiated by
        then) and cached, since ``send`` checks it on every message.
        """
        if self._max_message_size is None and self._get_max_message_size is not None:
            size = self._get_max_message_size()
            if size:
                if not self._opened.done():
                    return int(size)
                self._max_message_size = int(size)
        return self._max_message_size or DEFAULT_MAX_MESSAGE_SIZE

    # ------------------------------------------------------------------ JS events

    def _on_open(self, _event: Any) -> None:
        if not self._opened.done():
            self._opened.set_result(None)
        self.events.emit("open")

    def _on_messages(self, data: Any, lengths: Any, strings: Any) -> None:
        """One batch from the JS inbox (see ``_JS_HELPERS``), in arrival order."""
        if self.events.has_listeners("messages"):
            self._on_batch(data, lengths, strings)
            return
        if is_null(lengths):
            self._on_message(data if isinstance(data, str) else data.to_bytes())
            return
        raw = data.to_bytes()
        texts = iter(strings.to_py())
        offset = 0
        for n in lengths.to_py():
            if self._closed.done():
                return
            if n < 0:
                self._on_message(next(texts))
            else:
                self._on_message(raw[offset:offset + n])
                offset += n

    def _on_batch(self, data: Any, lengths: Any, strings: Any) -> None:
        """The ``messages`` event: the whole batch in one list (binary ones as memoryviews)."""
        batch: list[bytes | memoryview | str]
        if is_null(lengths):
            batch = [data if isinstance(data, str) else data.to_bytes()]
        else:
            raw = memoryview(data.to_bytes())
            texts = iter(strings.to_py())
            batch = []
            offset = 0
            for n in lengths.to_py():
                if n < 0:
                    batch.append(next(texts))
                else:
                    batch.append(raw[offset:offset + n])
                    offset += n
        self.messages_received += len(batch)
        self.bytes_received += sum(len(m) for m in batch)
        self.events.emit("messages", batch)

    def _on_message(self, message: bytes | str) -> None:
        self.messages_received += 1
        self.bytes_received += len(message)
        if self.events.has_listeners("message"):
            self.events.emit("message", message)
            return
        self._inbox.put(message)

    def flush_received(self) -> None:
        """Hand what the JS inbox holds to the listeners now, not at its next task.

        Messages wait in a JS-side inbox until a task of its own hands them over
        (see ``_JS_HELPERS``); a caller about to do a long piece of work that should
        come second (the multiplexer, before it works through bulk data) takes them
        first with this. Nothing happens when the inbox is empty.
        """
        self._rx.flush()

    def _on_low(self, _event: Any) -> None:
        self._drain.set()
        self.events.emit("bufferedamountlow")

    def _on_error(self, event: Any) -> None:
        error = getattr(event, "error", None)
        message = "data channel error" if is_null(error) else str(getattr(error, "message", "") or "data channel error")
        self.close_reason = message
        self.events.emit("error", message)

    def _on_close(self, _event: Any) -> None:
        self._rx.flush()  # what arrived before the close event comes first
        self._finish(self.close_reason or "closed")

    def _finish(self, reason: str) -> None:
        if self._closed.done():
            return
        self.close_reason = reason
        self._closed.set_result(None)
        if not self._opened.done():
            self._opened.set_exception(ConnectionClosedError(f"channel {self.label!r} {reason}"))
            self._opened.exception()  # mark retrieved: nobody may be waiting
        self._drain.set()
        self._inbox.close(self._closed_error)
        self.events.emit("close")
        self.events.clear()
        self._rx.close()
        self._owner.close()
        # Let go of the RTCDataChannel (it keeps its RTCPeerConnection alive in JS).
        self.js_channel = _ClosedChannel(self.js_channel)
        self._js_send = self._send_binary = self.js_channel.send
        self._send_packed = lambda _data, _lengths: self.js_channel.send(_data)

    # ------------------------------------------------------------------ API

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until the channel is open; raise ConnectionClosedError if it closes first."""
        await asyncio.wait_for(asyncio.shield(self._opened), timeout)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def _check_sendable(self, size: int) -> None:
        # No readyState read here (an FFI call per message): a "closing" channel
        # makes send() throw InvalidStateError, which call_js turns into
        # ConnectionClosedError all the same.
        if self._closed.done():
            raise ConnectionClosedError(f"channel {self.label!r} is closed ({self.close_reason})")
        limit = self.max_message_size
        if size > limit:
            raise MessageTooLargeError(size, limit)

    def has_room(self, size: int, headroom: int = 0) -> bool:
        """Whether ``size`` more bytes fit under the high-water mark (plus ``headroom``) now.

        Used by the multiplexer's pump, which sends without awaiting and resumes
        on the ``bufferedamountlow`` event; ``headroom`` is what its urgent frames
        may use above the mark.
        """
        limit = self.high_water + headroom
        if self._buffered_bound + size <= limit:
            return True
        self._buffered_bound = self.js_channel.bufferedAmount
        return self._buffered_bound + size <= limit

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send one message, waiting first while the browser's buffer is above high water.

        Raises MessageTooLargeError (nothing sent, channel intact) or
        ConnectionClosedError.
        """
        if not self._opened.done():
            await self.wait_open()
        size = len(data.encode()) if isinstance(data, str) else len(data)
        self._check_sendable(size)
        if self._buffered_bound + size > self.high_water:
            await self._wait_for_room()
        self.send_nowait(data, size)

    async def _wait_for_room(self) -> None:
        self._buffered_bound = self.js_channel.bufferedAmount
        while self._buffered_bound > self.high_water:
            self._drain.clear()
            await self._drain.wait()
            if self._closed.done():
                raise ConnectionClosedError(f"channel {self.label!r} closed while waiting to send")
            self._buffered_bound = self.js_channel.bufferedAmount

    async def send_many(self, messages: Iterable[bytes | bytearray | memoryview | str]) -> None:
        """Send each item as its own message, in order, crossing into JS once per run.

        The same as ``await send(m)`` for each ``m`` (same backpressure, same
        errors), but consecutive binary messages, up to ``PACK_LIMIT`` bytes, go
        to the browser in one call: the way to send many small messages. On an
        error the messages before the failing one have been sent.
        """
        if not self._opened.done():
            await self.wait_open()
        run: list[bytes | bytearray | memoryview] = []
        lengths = array("I")
        size = 0
        self._check_sendable(0)  # closed?
        limit = self.max_message_size  # read once: a property, and constant once open
        for message in messages:
            if type(message) is not bytes:
                if isinstance(message, str):
                    await self._send_run(run, lengths, size)
                    run, lengths, size = [], array("I"), 0
                    await self.send(message)
                    continue
                message = _contiguous(message)
            n = len(message) if not isinstance(message, memoryview) else message.nbytes
            if n > limit:  # what came before it goes out first, as with send() one by one
                await self._send_run(run, lengths, size)
                raise MessageTooLargeError(n, limit)
            if run and size + n > PACK_LIMIT:
                await self._send_run(run, lengths, size)
                run, lengths, size = [], array("I"), 0
            run.append(message)
            lengths.append(n)
            size += n
        await self._send_run(run, lengths, size)

    async def _send_run(self, run: list[bytes | bytearray | memoryview], lengths: array[int],
                        size: int) -> None:
        if not run:
            return
        if self._buffered_bound + size > self.high_water:
            await self._wait_for_room()
        if self._closed.done():
            raise ConnectionClosedError(f"channel {self.label!r} is closed ({self.close_reason})")
        try:
            self._send_packed(run[0] if len(run) == 1 else b"".join(run), lengths)
        except JsException as exc:
            raise translate_js_error(exc) from None
        self._buffered_bound += size
        self.messages_sent += len(run)
        self.bytes_sent += size

    def send_nowait(self, data: bytes | bytearray | memoryview | str, size: int | None = None) -> None:
        """Send without waiting for the buffer to drain (the caller handles backpressure)."""
        if size is None:
            size = len(data.encode()) if isinstance(data, str) else len(data)
            self._check_sendable(size)
        try:
            if isinstance(data, str):
                self._js_send(data)
            else:
                self._send_binary(_contiguous(data))
        except JsException as exc:
            raise translate_js_error(exc) from None
        self._buffered_bound += size
        self.messages_sent += 1
        self.bytes_sent += size

    async def receive(self) -> bytes | str:
        """The next message; raises ConnectionClosedError once closed and drained.

        Concurrent calls are allowed: they are served in call order, each with
        the next message, and closing the channel makes every waiting call raise.
        """
        return await self._inbox.get()

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError(f"channel {self.label!r} {self.close_reason}")

    def receive_nowait(self) -> list[bytes | str]:
        """Every message received so far and not yet consumed."""
        return self._inbox.take_all()

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosedError:
                return

    def create_multiplexed_channel(self, channel_id: int | None = None, label: str = "",
                                   reliability: Any = None, priority: Any = None) -> Any:
        """Open a logical channel multiplexed over this channel's connection (documented API name).

        The logical channels of a connection share its :class:`~pyapp.browser.mux.MuxSession`
        (two underlying RTCDataChannels); see :meth:`MuxSession.create_multiplexed_channel`.

        Example::

            chan = raw.create_multiplexed_channel(4, label="orders")
            await chan.send(b"...")
        """
        if self.peer_connection is None:
            raise LocalProtocolError("this DataChannel is not attached to a PeerConnection")
        return self.peer_connection.connection.multiplexer().create_multiplexed_channel(
            channel_id, label=label, reliability=reliability, priority=priority)

    def close(self) -> None:
        """Close the channel and release its listeners. Messages already received stay readable."""
        if self._closed.done():
            return
        try:
            self.js_channel.close()
        finally:
            self._finish("closed locally")

    def __repr__(self) -> str:
        return f"<DataChannel {self.label!r} {self.ready_state}>"


WebRtcDataChannel = DataChannel
"""Documented alias of :class:`DataChannel`."""
