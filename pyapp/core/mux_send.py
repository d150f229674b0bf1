"""The send side's bookkeeping: acknowledgements, the send window, queue lifetimes.

:class:`MuxSender` sits between the receive path and the public
:class:`~pyapp.core.mux.Multiplexer`: it applies the peer's cumulative ACKs
(freeing the replay buffer and the in-flight window), decides when a refused
sender may try again (SendWindowOpened), makes room on a full unreliable queue
by dropping whole old messages, and expires queued messages past their
``max_packet_life_time`` on the timer.

Example::

    >>> from pyapp.core.mux import Multiplexer, Reliability, Role
    >>> a = Multiplexer(Role.INITIATOR)
    >>> cid = a.open_channel("ticks", Reliability(ordered=False, max_packet_life_time=100))
    >>> a.send(cid, b"tick", now=1.0)          # waits for ACCEPT, so it stays queued
    >>> a.get_timer()                          # when its lifetime runs out
    1.1
"""

from __future__ import annotations

from pyapp.core.framing import (
    FLAG_FIRST,
    FLAG_LAST,
    HEADER,
    HEADER_SIZE,
    SEQ_MASK,
    VERSION,
    Frame,
    FrameType,
)
from pyapp.core.mux_channel import Channel, behind
from pyapp.core.mux_events import ChannelState, MessageDropped, OutgoingFrame, SendWindowOpened
from pyapp.core.mux_receive import MuxReceiver
from pyapp.core.scheduler import Priority
from pyapp.exceptions import FrameError

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).

_pack_header = HEADER.pack
_DATA = FrameType.DATA
_WHOLE = FLAG_FIRST | FLAG_LAST
_HALF_SEQ = 1 << 31
_HIGH = Priority.HIGH


class MuxSender(MuxReceiver):
    """ACKs, send window and queue expiry (see the module docstring)."""

    def _data_frame(self, ch: Channel, now: float, pack: bool = False) -> OutgoingFrame | None:
        """The next DATA fragment of ``ch`` (the scheduler picked it; its queue is not empty).

        None when an unreliable message at the head had outlived its lifetime in
        our queue: it is dropped (MessageDropped) and the caller picks again.
        ``pack``: on a reliable channel, whole messages queued behind a whole one
        follow it in the same data (see :meth:`_pack_whole`).
        """
        sched = self._sched
        queue = ch.queue
        msg = queue[0]
        offset = msg.offset
        if offset == 0 and not ch.reliable:
            if ch.lifetime is not None and now - msg.enqueued > ch.lifetime:
                # maxPacketLifeTime also covers time spent in our queue.
                queue.popleft()
                ch.queued_bytes -= msg.size
                ch.messages_dropped += 1
                self._events.append(MessageDropped(ch.id, False, "lifetime expired", msg.size))
                if not queue and not ch.close_requested:
                    sched.served(ch, 0, False)
                    ch.scheduled = False
                return None
            if msg.seq < 0:
                msg.seq = ch.next_seq
                ch.next_seq = (ch.next_seq + 1) & SEQ_MASK
        end = offset + self._fragment_size
        size = msg.size
        flags = msg.flags
        if offset == 0:
            flags |= FLAG_FIRST
        if end >= size:
            end = size
            flags |= FLAG_LAST
        n = end - offset
        payload = msg.data if n == size else memoryview(msg.data)[offset:end]  # no copy but the one below
        data = _pack_header(VERSION, _DATA, ch.id, flags, 0, msg.seq, msg.fragment, n) + payload
        msg.fragment += 1
        msg.offset = end
        if ch.reliable:
            self._inflight += n
        ch.queued_bytes -= n
        ch.frames_sent += 1
        ch.bytes_sent += n
        cost = n + HEADER_SIZE
        if flags & FLAG_LAST:
            queue.popleft()
            msg.done = True
            ch.messages_sent += 1
            delay = now - msg.enqueued
            ch.delay_total += delay
            if delay > ch.delay_max:
                ch.delay_max = delay
            if pack and queue and offset == 0 and ch.reliable:
                data, more = self._pack_whole(ch, data, now)
                cost += more
        active = bool(queue) or ch.close_requested
        sched.served(ch, cost, active)
        if not active:
            ch.scheduled = False
        if ch.wanted and self._fits(ch, ch.wanted):
            self._window_opened(ch)
        self._frames_sent += 1
        self._bytes_sent += len(data)
        return OutgoingFrame(ch.transport, data, ch.id, ch.priority is _HIGH)

    def _pack_whole(self, ch: Channel, first: bytes, now: float) -> tuple[bytes, int]:
        """``first`` (a whole message's frame) and the whole messages queued behind it.

        Each follows as its own DATA frame (FIRST|LAST), back to back, while they
        fit in one fragment's room (``HEADER_SIZE + fragment_size`` bytes in all, so
        the data stays within the SCTP message size, and a channel's scheduler turn
        is no bigger than one bulk fragment) and the in-flight window lets this
        channel send (HIGH channels are exempt, as in next_frame). Returns the data
        and the bytes added. Per message the same bookkeeping as one frame.
        """
        queue = ch.queue
        room = HEADER_SIZE + self._fragment_size - len(first)
        limit = self._inflight_limit if ch.priority is not _HIGH else 0
        cid = ch.id
        parts = [first]
        added = sent = 0
        delay_total = 0.0
        delay_max = ch.delay_max
        while queue:
            msg = queue[0]
            size = msg.size
            if msg.offset or HEADER_SIZE + size > room:
                break
            if limit and self._inflight + sent >= limit:
                break
            parts.append(_pack_header(VERSION, _DATA, cid, msg.flags | _WHOLE, 0, msg.seq, 0, size))
            parts.append(msg.data)
            queue.popleft()
            msg.fragment = 1
            msg.offset = size
            msg.done = True
            room -= HEADER_SIZE + size
            sent += size
            added += size + HEADER_SIZE
            delay = now - msg.enqueued
            delay_total += delay
            if delay > delay_max:
                delay_max = delay
        count = (len(parts) - 1) >> 1
        if not count:
            return first, 0
        self._inflight += sent
        ch.queued_bytes -= sent
        ch.frames_sent += count
        ch.bytes_sent += sent
        ch.messages_sent += count
        ch.delay_total += delay_total
        ch.delay_max = delay_max
        self._frames_sent += count
        return b"".join(parts), added


    def _on_ack(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "ACK")
            return
        ch.frames_received += 1
        if not ch.reliable:
            raise FrameError("ACK on an unreliable channel", cid)
        ack = frame.seq
        if ack != ch.next_seq and not behind(ack, ch.next_seq):
            raise FrameError(f"ACK {ack} for a message never sent (next is {ch.next_seq})", cid)
        unacked = ch.unacked
        queue = ch.queue
        freed = 0
        # The unacknowledged messages carry consecutive numbers: the ACK frees the
        # first (ack - first) of them (none when ack is not past the first).
        covered = (ack - unacked[0].seq) & SEQ_MASK if unacked else 0
        if covered >= _HALF_SEQ:
            covered = 0
        inflight = self._inflight
        for _ in range(min(covered, len(unacked))):
            msg = unacked[0]
            if not msg.done:
                self._inflight = inflight
                raise FrameError(f"ACK {ack} covers a message not yet sent", cid)
            unacked.popleft()
            freed += msg.size
            inflight -= msg.offset
            if queue and queue[0] is msg:
                # Being replayed after a restore, but the peer had it already.
                queue.popleft()
                ch.queued_bytes -= msg.size - msg.offset
        self._inflight = inflight
        if freed:
            ch.unacked_bytes -= freed
            self._replay_bytes -= freed
            if self._window_parked and self._inflight < self._inflight_limit:
                self._unpark()
            if self._waiting:
                for other in list(self._waiting):
                    if other.wanted and self._fits(other, other.wanted):
                        self._window_opened(other)
        if ch.state is ChannelState.CLOSE_RECEIVED and ch.close_sent and not unacked:
            self._finish_close(ch)

    def _fits(self, ch: Channel, size: int) -> bool:
        queued = ch.queued_bytes
        if queued and queued + size > self._send_limit:
            return False
        if ch.reliable and self._replay_bytes and self._replay_bytes + size > self._replay_limit:
            return False
        return True

    def _window_opened(self, ch: Channel) -> None:
        ch.wanted = 0
        self._waiting.discard(ch)
        if ch.state is ChannelState.OPEN or ch.state is ChannelState.OPENING:
            self._events.append(
                SendWindowOpened(ch.id, max(0, self._send_limit - ch.queued_bytes))
            )

    def _make_room(self, ch: Channel, size: int) -> bool:
        """Unreliable channel under pressure: drop the oldest unstarted messages."""
        queue = ch.queue
        head = queue.popleft() if queue and queue[0].fragment else None
        while queue and ch.queued_bytes + size > self._send_limit:
            old = queue.popleft()
            ch.queued_bytes -= old.size
            ch.messages_dropped += 1
            self._events.append(MessageDropped(ch.id, False, "send queue full", old.size))
        if head is not None:
            queue.appendleft(head)
        return not ch.queued_bytes or ch.queued_bytes + size <= self._send_limit

    # ------------------------------------------------------------------ timers

    def _deadline(self, ch: Channel) -> float | None:
        deadline = self._reassembly_deadline(ch) if ch.partials or ch.missing else None
        if ch.lifetime is not None:
            for msg in ch.queue:
                if msg.offset == 0:  # the oldest message not started yet
                    expiry = msg.enqueued + ch.lifetime
                    if deadline is None or expiry < deadline:
                        deadline = expiry
                    break
        drain = ch.drain_deadline
        if drain is not None and (deadline is None or drain < deadline):
            deadline = drain
        return deadline

    def _expire_queue(self, ch: Channel, now: float) -> None:
        """Drop queued messages past ``max_packet_life_time`` that were never started."""
        lifetime = ch.lifetime
        assert lifetime is not None
        queue = ch.queue
        head = queue.popleft() if queue and queue[0].offset else None
        while queue and now >= queue[0].enqueued + lifetime:  # same sum as _deadline
            msg = queue.popleft()
            ch.queued_bytes -= msg.size
            ch.messages_dropped += 1
            self._events.append(MessageDropped(ch.id, False, "lifetime expired", msg.size))
        if head is not None:
            queue.appendleft(head)
        if ch.wanted and self._fits(ch, ch.wanted):
            self._window_opened(ch)
