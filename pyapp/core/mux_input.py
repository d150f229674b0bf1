"""The input side of the multiplexer: data-channel messages in, frames dispatched by type.

:class:`MuxInput` is the part of :class:`~pyapp.core.mux.Multiplexer` that takes
what arrives on the data channels: one frame (``receive_frame``), one message
holding several frames packed back to back (``receive_datagram``), or a batch of
messages split so HIGH channels' frames are worked through first (``triage``).
Whole in-sequence messages of reliable channels take a fast path
(:meth:`~pyapp.core.mux_receive.MuxReceiver._receive_whole`); every other frame
is decoded and dispatched to the receive, send or lifecycle code.

Example::

    >>> from pyapp.core.mux import MessageReceived, Multiplexer, Role
    >>> a, b = Multiplexer(Role.INITIATOR), Multiplexer(Role.RESPONDER)
    >>> cid = a.open_channel("ticks")
    >>> for n in range(3):
    ...     a.send(cid, str(n), now=0.0)
    >>> packed = b"".join(f.data for f in iter(lambda: a.next_frame(0.0), None))
    >>> b.receive_datagram(packed, now=0.0)      # OPEN and three DATA frames in one message
    >>> [e.data for e in iter(b.next_event, None) if isinstance(e, MessageReceived)]
    ['0', '1', '2']
"""

from __future__ import annotations

from collections.abc import Iterable

from pyapp.core.framing import HEADER_SIZE, MAX_FRAGMENT_PAYLOAD, FrameType, decode_frame
from pyapp.core.mux_receive import split_frames
from pyapp.core.mux_send import MuxSender
from pyapp.core.scheduler import Priority
from pyapp.exceptions import InvalidArgumentError, RemoteProtocolError

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).

_DATA = FrameType.DATA
_HIGH = Priority.HIGH


class MuxInput(MuxSender):
    """Frames in (see the module docstring)."""

    def receive_frame(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one frame from either data channel; its events follow from next_event().

        Never raises for peer input: malformed frames become a ProtocolErrorEvent
        (plus a ChannelReset of the channel concerned, if any), are counted and
        logged (logger ``pyapp.mux``, rate-limited).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"receive_frame needs bytes, got {type(data).__name__}")
        if not self._up or self._failed:
            # Frames from a transport declared lost may be stale; the replay covers them.
            self._frames_ignored += 1
            return
        self._take(data, now)

    def _take(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """One frame, the transport up (receive_frame's checks done)."""
        self._frames_received += 1
        self._bytes_received += len(data)
        if self._receive_whole(data):
            return
        try:
            frame = decode_frame(data)
            ftype = frame.type
            if ftype == _DATA:
                self._on_data(frame, now)
            elif ftype == FrameType.ACK:
                self._on_ack(frame)
            elif ftype == FrameType.OPEN:
                self._on_open(frame)
            elif ftype == FrameType.ACCEPT:
                self._on_accept(frame)
            elif ftype == FrameType.CLOSE:
                self._on_close(frame, now)
            else:
                self._on_reset(frame)
        except RemoteProtocolError as exc:
            self._protocol_error(exc, now)

    def receive_datagram(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one data-channel message holding one or more whole frames.

        Senders may pack consecutive frames for the same transport into one
        message (each frame is self-delimiting through its header's length
        field; fragments stay at most 16 KiB). A frame whose declared length
        runs past the end of the message makes the rest of the message
        untrustworthy: it is one protocol error (resetting that frame's channel
        when the header names one) and the rest of the message is dropped.
        """
        view = data if type(data) is memoryview else memoryview(data)
        size = len(view)
        if size <= HEADER_SIZE + MAX_FRAGMENT_PAYLOAD and (
            size < HEADER_SIZE or HEADER_SIZE + ((view[14] << 8) | view[15]) == size
        ):
            self.receive_frame(view, now)  # the common case: one frame
            return
        if not self._up or self._failed:
            self._frames_ignored += len(split_frames(view))
            return
        # split_frames, without the list: the frames one by one, in order.
        take, run = self._take, self._receive_run
        offset = 0
        while offset < size:
            after = run(view, offset, size)  # the common case: whole messages of one channel
            if after != offset:
                offset = after
                continue
            end = size
            if size - offset >= HEADER_SIZE:
                end = offset + HEADER_SIZE + ((view[offset + 14] << 8) | view[offset + 15])
                if end > size:
                    end = size  # runs past the end: decode_frame reports it; nothing follows
            take(view[offset:end], now)
            offset = end

    def triage(self, datagrams: Iterable[bytes | bytearray | memoryview]
               ) -> tuple[list[memoryview], list[memoryview]]:
        """Split received messages: HIGH channels' frames first, then the rest.

        Returns ``(first, rest)``: ``first`` holds every frame of the channels that
        are HIGH now; ``rest`` holds everything else in arrival order -- a message
        none of whose frames went to ``first`` stays whole, the others are split
        into their remaining frames (as :meth:`receive_datagram` splits them).
        Feeding ``first`` and then ``rest`` to :meth:`receive_datagram` applies the
        same input as feeding each message to it: every channel sees its frames in
        order; only HIGH channels' messages come out of next_event ahead of other
        channels' (no order across channels is promised: the sender's scheduler
        interleaves them too). A receiver handed many messages at once uses it to
        answer urgent messages before it works through bulk data. With no HIGH
        channel open, ``rest`` is the messages themselves, unread. Changes no state.
        """
        views = [d if type(d) is memoryview else memoryview(d) for d in datagrams]
        channels = self._channels
        if not any(ch.priority is _HIGH for ch in channels.values()):
            return [], views
        first: list[memoryview] = []
        rest: list[memoryview] = []
        for view in views:
            frames = split_frames(view)
            kept = []
            for frame in frames:
                if len(frame) >= HEADER_SIZE:
                    ch = channels.get((frame[2] << 8) | frame[3])
                    if ch is not None and ch.priority is _HIGH:
                        first.append(frame)
                        continue
                kept.append(frame)
            if len(kept) == len(frames):
                rest.append(view)
            else:
                rest.extend(kept)
        return first, rest
