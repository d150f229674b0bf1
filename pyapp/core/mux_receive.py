"""The receive data path: DATA frames reassembled into messages, per channel.

Reliable channels are strictly sequential (a gap is a protocol error);
unreliable channels reassemble several messages at once, in any fragment order,
give up a partial message once one ``reorder_window`` sequence numbers newer
has been seen or no fragment of it came for ``reorder_timeout`` seconds, and count
messages of which no fragment ever arrived (lost whole in transit).

Late DATA of an unreliable channel whose close point has passed (the peer's
CLOSE applied, whether the channel still lingers or is already forgotten) is
ignored and counted in ``MuxStats.frames_ignored``, never an error: the close
already counted it as lost. Before that point it is delivered as usual.

Example::

    >>> from pyapp.core.mux import MessageReceived, Multiplexer, Role
    >>> a, b = Multiplexer(Role.INITIATOR), Multiplexer(Role.RESPONDER)
    >>> cid = a.open_channel("chat")
    >>> a.send(cid, "hi", now=0.0)
    >>> while (f := a.next_frame(0.0)) is not None:
    ...     b.receive_frame(f.data, 0.0)
    >>> [e.data for e in iter(b.next_event, None) if isinstance(e, MessageReceived)]
    ['hi']
"""

from __future__ import annotations

from pyapp.core.framing import (
    FLAG_FIRST,
    FLAG_LAST,
    FLAG_REPLAY,
    FLAG_TEXT,
    HEADER,
    HEADER_SIZE,
    MAX_FRAGMENT_PAYLOAD,
    SEQ_MASK,
    VERSION,
    Frame,
    FrameType,
)
from pyapp.core.mux_channel import Channel, Partial, behind
from pyapp.core.mux_events import ChannelState, MessageDropped, MessageReceived, MessagesReceived
from pyapp.core.mux_lifecycle import MuxLifecycle
from pyapp.exceptions import FrameError

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).

_unpack_header = HEADER.unpack_from
_DATA = int(FrameType.DATA)
_WHOLE = FLAG_FIRST | FLAG_LAST
_CLOSE_RECEIVED = ChannelState.CLOSE_RECEIVED


def split_frames(view: memoryview) -> list[memoryview]:
    """The frames of one data-channel message, by their headers' length fields.

    A frame whose declared length runs past the end of the message is returned
    with the rest of the message (decode_frame reports the bad length, attributed
    to the frame's channel when the header is otherwise valid) and ends the list:
    what follows it cannot be trusted. A truncated header is returned as it is.
    """
    size = len(view)
    if not size:
        return [view]  # an empty message is a (reported) bad frame, not nothing
    frames = []
    offset = 0
    while offset < size:
        if size - offset < HEADER_SIZE:
            end = size  # truncated header: let decode_frame report it
        else:
            end = offset + HEADER_SIZE + ((view[offset + 14] << 8) | view[offset + 15])
            if end > size:
                frames.append(view[offset:])
                break
        frames.append(view[offset:end])
        offset = end
    return frames


class MuxReceiver(MuxLifecycle):
    """Inbound DATA: reassembly and delivery (see the module docstring)."""

    def _receive_whole(self, data: bytes | bytearray | memoryview) -> bool:
        """The common frame, taken without building a Frame: True when it was.

        A whole message (one fragment, FIRST|LAST, maybe TEXT, not REPLAY) that is
        next in sequence on a live reliable channel. The checks are exactly those
        of ``decode_frame`` and ``_recv_reliable`` for such a frame; anything else
        (including every malformed frame) returns False before any state changed,
        and the caller takes the general path, which reports what is wrong.
        """
        size = len(data)
        if size < HEADER_SIZE or data[1] != _DATA:
            return False
        version, _, cid, flags, reserved, seq, fragment, length = _unpack_header(data)
        if (version != VERSION or reserved or fragment or (flags | FLAG_TEXT) != _WHOLE | FLAG_TEXT
                or length != size - HEADER_SIZE or length > MAX_FRAGMENT_PAYLOAD
                or length > self._max_message_bytes or length > self._recv_limit):
            return False
        ch = self._channels.get(cid)
        if (ch is None or not ch.reliable or seq != ch.recv_seq or ch.recv_frag
                or ch.state is _CLOSE_RECEIVED):
            return False
        body = bytes(data[HEADER_SIZE:])
        message: bytes | str = body
        if flags & FLAG_TEXT:
            try:
                message = str(body, "utf-8")
            except UnicodeDecodeError:
                return False  # the general path reports it
        ch.frames_received += 1
        ch.parts_text = flags & FLAG_TEXT
        seq = (seq + 1) & SEQ_MASK
        ch.recv_seq = seq
        self._pending_acks[cid] = seq
        ch.messages_received += 1
        ch.bytes_received += length
        self._events.append(MessageReceived(cid, message))
        return True

    def _receive_run(self, view: memoryview, offset: int, size: int) -> int:
        """Whole in-sequence messages of one reliable channel, back to back from ``offset``.

        The packed form of :meth:`_receive_whole` (what ``next_frame(pack=True)``
        sends): every frame it takes passes exactly the checks ``_receive_whole``
        makes, and the run stops before the first frame that does not (another
        channel, a fragment, a gap, a malformed header, a length running past
        ``size``), which the caller hands to the general path. Returns the offset
        after the frames taken (``offset`` itself when it took none); counts them
        as ``receive_frame`` would.
        """
        start = offset
        limit = min(MAX_FRAGMENT_PAYLOAD, self._max_message_bytes, self._recv_limit)
        run: list[bytes | str] = []
        ch: Channel | None = None
        cid = expected = text = payload = 0
        while size - offset >= HEADER_SIZE and view[offset + 1] == _DATA:
            version, _, frame_cid, flags, reserved, seq, fragment, length = _unpack_header(view, offset)
            end = offset + HEADER_SIZE + length
            if (version != VERSION or reserved or fragment or (flags | FLAG_TEXT) != _WHOLE | FLAG_TEXT
                    or end > size or length > limit):
                break
            if ch is None:
                ch = self._channels.get(frame_cid)
                if ch is None or not ch.reliable or ch.recv_frag or ch.state is _CLOSE_RECEIVED:
                    break
                cid, expected = frame_cid, ch.recv_seq
            elif frame_cid != cid:
                break
            if seq != expected:
                break
            body = bytes(view[offset + HEADER_SIZE:end])
            message: bytes | str = body
            text = flags & FLAG_TEXT
            if text:
                try:
                    message = str(body, "utf-8")
                except UnicodeDecodeError:
                    break  # the general path reports it
            run.append(message)
            expected = (expected + 1) & SEQ_MASK
            payload += length
            offset = end
        if run and ch is not None:
            count = len(run)
            if self._batch_events and count > 1:
                self._events.append(MessagesReceived(cid, tuple(run)))
            else:
                self._events.extend([MessageReceived(cid, message) for message in run])
            ch.frames_received += count
            ch.parts_text = text
            ch.recv_seq = expected
            self._pending_acks[cid] = expected
            ch.messages_received += count
            ch.bytes_received += payload
            self._frames_received += count
            self._bytes_received += offset - start
        return offset

    def _on_data(self, frame: Frame, now: float) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "DATA")
            return
        ch.frames_received += 1
        if ch.reliable:
            if ch.state is ChannelState.CLOSE_RECEIVED:
                # Same transport, in order: DATA after CLOSE is the peer's bug.
                raise FrameError("DATA after CLOSE", cid)
            self._recv_reliable(ch, frame)
            return
        if ch.state is ChannelState.CLOSE_RECEIVED:
            self._frames_ignored += 1  # past the close point: see the module docstring
            return
        if ch.drain_deadline is not None and not behind(frame.seq, ch.drain_end):
            raise FrameError(f"DATA {frame.seq} past the CLOSE drain point {ch.drain_end}", cid)
        self._recv_unreliable(ch, frame, now)
        if ch.drain_deadline is not None and self._drained(ch):
            self._complete_drain(ch)

    def _recv_reliable(self, ch: Channel, frame: Frame) -> None:
        cid = ch.id
        flags = frame.flags
        seq = frame.seq
        if seq != ch.recv_seq:
            if flags & FLAG_REPLAY and behind(seq, ch.recv_seq):
                ch.duplicates += 1  # already delivered before the transport was lost
                self._pending_acks[cid] = ch.recv_seq
                return
            raise FrameError(
                f"sequence gap on reliable channel: expected {ch.recv_seq}, got {seq}", cid
            )
        fragment = frame.fragment
        if fragment != ch.recv_frag:
            if fragment == 0 and flags & FLAG_REPLAY:
                ch.parts = []  # the sender restarted this message after a transport loss
                ch.parts_bytes = 0
            else:
                raise FrameError(
                    f"fragment gap on reliable channel: expected {ch.recv_frag}, got {fragment}",
                    cid,
                )
        payload = frame.payload
        text = flags & FLAG_TEXT
        if fragment == 0:
            ch.parts_text = text
        elif text != ch.parts_text:
            raise FrameError("TEXT flag changed inside a message", cid)
        total = ch.parts_bytes + len(payload)
        if total > self._max_message_bytes:
            raise FrameError(f"message too large (over {self._max_message_bytes} bytes)", cid)
        if total > self._recv_limit:
            raise FrameError("receive buffer overflow", cid)
        if flags & FLAG_LAST:
            if fragment == 0:
                body = bytes(payload)
            else:
                ch.parts.append(payload)
                body = b"".join(ch.parts)
                ch.parts = []
                ch.parts_bytes = 0
            ch.recv_seq = (seq + 1) & SEQ_MASK
            ch.recv_frag = 0
            self._pending_acks[cid] = ch.recv_seq
            self._deliver(ch, body, text)
        else:
            ch.parts.append(payload)
            ch.parts_bytes = total
            ch.recv_frag = fragment + 1

    def _recv_unreliable(self, ch: Channel, frame: Frame, now: float) -> None:
        cid = ch.id
        seq = frame.seq
        flags = frame.flags
        if seq in ch.finished:
            ch.duplicates += 1
            return
        partial = ch.partials.get(seq)
        if partial is None:
            newest = ch.newest_seq
            if newest >= 0 and ((newest - seq) & SEQ_MASK) >= self._window and behind(seq, newest):
                ch.duplicates += 1  # too late: its message was given up already
                return
            partial = Partial(flags & FLAG_TEXT, now)
            ch.partials[seq] = partial
            self._timed.add(ch)
            ch.missing.pop(seq, None)
            if newest < 0 or behind(newest, seq):
                self._note_gap(ch, (newest + 1) & SEQ_MASK if newest >= 0 else 0, seq, now)
                ch.newest_seq = seq
                for old in [s for s in ch.partials if behind(s, seq)]:
                    if ((seq - old) & SEQ_MASK) >= self._window:
                        self._give_up(ch, old)
        elif (flags & FLAG_TEXT) != partial.text:
            raise FrameError("TEXT flag changed inside a message", cid)
        else:
            partial.touched = now
        fragment = frame.fragment
        if fragment in partial.fragments:
            raise FrameError(f"duplicate fragment {fragment} of message {seq}", cid)
        if (partial.last >= 0 and fragment > partial.last) or (
            flags & FLAG_LAST and partial.fragments and max(partial.fragments) > fragment
        ):
            raise FrameError(f"fragment {fragment} beyond the last fragment of message {seq}", cid)
        payload = frame.payload
        partial.size += len(payload)
        if partial.size > self._max_message_bytes:
            raise FrameError(f"message too large (over {self._max_message_bytes} bytes)", cid)
        partial.fragments[fragment] = payload
        if flags & FLAG_LAST:
            partial.last = fragment
        if partial.last >= 0 and len(partial.fragments) == partial.last + 1:
            del ch.partials[seq]
            self._remember_finished(ch, seq)
            frags = partial.fragments
            body = bytes(frags[0]) if partial.last == 0 else b"".join(
                [frags[i] for i in range(partial.last + 1)]
            )
            if ch.reliability.ordered:
                if ch.delivered_seq >= 0 and not behind(ch.delivered_seq, seq):
                    self._drop_inbound(ch, len(body), "late")
                    return
                ch.delivered_seq = seq
            self._deliver(ch, body, partial.text)
            return
        # Unreliable: over the buffer limit give up old partial messages first.
        if ch.partial_bytes() > self._recv_limit:
            for old in list(ch.partials):
                if old == seq:
                    continue
                self._give_up(ch, old)
                if ch.partial_bytes() <= self._recv_limit:
                    break
            else:
                raise FrameError("receive buffer overflow", cid)

    def _note_gap(self, ch: Channel, start: int, seq: int, now: float) -> None:
        """Unreliable: messages ``start`` .. ``seq - 1`` have not been seen yet.

        Each is either still on its way (reordering) or lost whole in transit,
        where no fragment arrives and reassembly never notices; once it is older
        than the reorder window (or ``reorder_timeout`` old, see
        :meth:`_expire_reassembly`) it is counted as lost, so no loss goes uncounted.
        """
        gap = (seq - start) & SEQ_MASK
        if gap > 4 * self._window:
            # Too far to track one by one (a burst of loss, or a peer skipping
            # numbers): everything beyond the window is lost already.
            lost = gap - self._window
            ch.messages_lost += lost
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))
            start = (seq - self._window) & SEQ_MASK
            gap = self._window
        missing = ch.missing
        for i in range(gap):
            missing[(start + i) & SEQ_MASK] = now
        for m in [m for m in missing if ((seq - m) & SEQ_MASK) >= self._window]:
            del missing[m]
            ch.messages_lost += 1
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))

    def _deliver(self, ch: Channel, body: bytes, text: int) -> None:
        message: bytes | str
        if text:
            try:
                message = str(body, "utf-8")
            except UnicodeDecodeError:
                raise FrameError("text message is not valid UTF-8", ch.id) from None
        else:
            message = body
        ch.messages_received += 1
        ch.bytes_received += len(body)
        self._events.append(MessageReceived(ch.id, message))

    def _give_up(self, ch: Channel, seq: int) -> None:
        partial = ch.partials.pop(seq)
        self._remember_finished(ch, seq)
        self._incomplete(ch, partial.size)

    def _remember_finished(self, ch: Channel, seq: int) -> None:
        ch.finished.add(seq)
        ch.finished_order.append(seq)
        if len(ch.finished_order) > 2 * self._window:
            ch.finished.discard(ch.finished_order.popleft())

    # ------------------------------------------------------------------ timers

    def _reassembly_deadline(self, ch: Channel) -> float | None:
        """When the oldest partial message or sequence gap of ``ch`` times out."""
        oldest: float | None = None
        if ch.partials:
            oldest = min(p.touched for p in ch.partials.values())
        if ch.missing:
            first_gap = min(ch.missing.values())
            oldest = first_gap if oldest is None else min(oldest, first_gap)
        return None if oldest is None else oldest + self._reorder_timeout

    def _expire_reassembly(self, ch: Channel, now: float) -> None:
        """Give up partial messages and gaps that saw nothing for ``reorder_timeout``.

        Without this a message that lost a fragment, or a lost message at the end
        of a burst, would wait for newer traffic forever, uncounted.
        """
        timeout = self._reorder_timeout  # compared as the same sum as the deadline
        for seq in [s for s, p in ch.partials.items() if p.touched + timeout <= now]:
            self._give_up(ch, seq)
        expired = [m for m, noted in ch.missing.items() if noted + timeout <= now]
        for m in expired:
            del ch.missing[m]
            ch.messages_lost += 1
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))
