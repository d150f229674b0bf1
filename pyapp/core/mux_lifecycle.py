"""The life cycle of logical channels: open, accept, close, reset, tombstones.

:class:`MuxLifecycle` holds the multiplexer's state and is the one place where
a channel changes state; :class:`~pyapp.core.mux.Multiplexer` builds on it.

Logical channel states (the only transitions; anything else is an error)::

    state           event                                   next state
    --------------  --------------------------------------  -----------------------------
    (none)          open_channel()                          OPENING  (OPEN queued)
    (none)          peer OPEN (peer's id parity)            OPEN     (ACCEPT queued, ChannelOpened)
    OPENING         peer ACCEPT                             OPEN     (ChannelAccepted)
    OPENING, OPEN   close_channel()                         CLOSING  (CLOSE sent after queued DATA)
    OPENING, OPEN   peer CLOSE                              CLOSE_RECEIVED (ChannelClosed by_peer)
    CLOSING         peer CLOSE, our CLOSE already sent      CLOSED   (ChannelClosed)
    CLOSING         peer CLOSE, our CLOSE not yet sent      CLOSE_RECEIVED (ChannelClosed)
    CLOSE_RECEIVED  our CLOSE sent, all DATA acked          CLOSED
    CLOSE_RECEIVED  our CLOSE sent, DATA unacked            (lingers until ACK or peer CLOSE)
    (unreliable)    peer CLOSE(DRAIN n), messages < n       (unchanged; the CLOSE waits: applied as
                    still missing                           above once they arrived or drain_timeout
                                                            passed, the missing counted as lost)
    any             reset_channel() / bad peer input        RESET    (RESET queued, ChannelReset)
    any             peer RESET                              RESET    (ChannelReset by_peer)

CLOSED and RESET channels are forgotten; their id is remembered (a bounded
"tombstone" list) so frames that crossed the close/reset are ignored, not
treated as errors, and ids are not reused while tombstoned.

Example::

    >>> from pyapp.core.mux import Multiplexer, Role
    >>> from pyapp.core.mux_events import ChannelState
    >>> a = Multiplexer(Role.INITIATOR)
    >>> cid = a.open_channel("chat")
    >>> a.channel_state(cid) is ChannelState.OPENING
    True
"""

from __future__ import annotations

import logging
from collections import deque

from pyapp.core.framing import (
    FLAG_DRAIN,
    FLAG_REPLAY,
    FLAG_URGENT_STREAM,
    HEADER_SIZE,
    MAX_FRAGMENT_PAYLOAD,
    OPEN_FIXED,
    SEQ_MASK,
    Frame,
    FrameType,
    Transport,
    decode_open,
    decode_reason,
    encode_accept,
    encode_close,
    encode_reset,
)
from pyapp.core.mux_channel import Channel, behind
from pyapp.core.mux_events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    ChannelState,
    Event,
    MessageDropped,
    ProtocolErrorEvent,
    Role,
)
from pyapp.core.scheduler import DeficitRoundRobin
from pyapp.exceptions import (
    ConnectionClosedError,
    FrameError,
    InvalidArgumentError,
    LocalProtocolError,
    RemoteProtocolError,
)

# Internal module: the public names are exported by pyapp.core.mux (no __all__ here,
# so the API reference documents them once, there).

_DATA = FrameType.DATA
_RELIABLE = Transport.RELIABLE
_URGENT = Transport.URGENT

log = logging.getLogger("pyapp.mux")
"""Peer protocol errors are logged as warnings: once per channel (the channel is
reset, later frames for it are ignored), and at most ``_LOG_BURST`` per
``_LOG_INTERVAL`` seconds of the caller's clock overall; the next one logged
says how many were left out."""
_LOG_INTERVAL = 10.0
_LOG_BURST = 5


class MuxLifecycle:
    """State of a multiplexer and its channel state machine (see the module docstring).

    Parameters are documented on :class:`~pyapp.core.mux.Multiplexer`.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int = 65536,
        send_queue_limit: int = 1 << 20,
        max_message_bytes: int = 128 << 20,
        receive_buffer_limit: int = 128 << 20,
        replay_buffer_limit: int = 128 << 20,
        max_channels: int = 1024,
        reorder_window: int = 16,
        inflight_limit: int = 256 << 10,
        reorder_timeout: float = 5.0,
        drain_timeout: float = 1.0,
        batch_events: bool = False,
    ) -> None:
        if not isinstance(role, Role):
            raise InvalidArgumentError(f"role must be a Role, got {role!r}")
        for name, value in (("send_queue_limit", send_queue_limit),
                            ("max_message_bytes", max_message_bytes),
                            ("receive_buffer_limit", receive_buffer_limit),
                            ("replay_buffer_limit", replay_buffer_limit),
                            ("max_channels", max_channels), ("reorder_window", reorder_window)):
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(inflight_limit, int) or inflight_limit < 0:
            raise InvalidArgumentError(
                f"inflight_limit must be an int >= 0 (0 disables it), got {inflight_limit!r}")
        for name, timeout in (("reorder_timeout", reorder_timeout),
                              ("drain_timeout", drain_timeout)):
            if not isinstance(timeout, int | float) or not timeout > 0:
                raise InvalidArgumentError(f"{name} must be > 0 seconds, got {timeout!r}")
        self.role = role
        self._parity = 0 if role is Role.INITIATOR else 1
        self._next_id = self._parity
        self._fragment_size = MAX_FRAGMENT_PAYLOAD
        self._max_message_size = 0
        self._apply_max_message_size(max_message_size)
        self._send_limit = send_queue_limit
        self._max_message_bytes = max_message_bytes
        self._recv_limit = receive_buffer_limit
        self._replay_limit = replay_buffer_limit
        self._max_channels = max_channels
        self._window = reorder_window
        self._reorder_timeout = float(reorder_timeout)
        self._drain_timeout = float(drain_timeout)
        self._batch_events = bool(batch_events)
        # Channels that may have a deadline (see Multiplexer.get_timer): a send
        # queue with a lifetime, unreliable reassembly in progress, a pending drain.
        self._timed: set[Channel] = set()
        self._log_window_end = float("-inf")  # rate limit of protocol-error logging
        self._log_budget = 0
        self._log_suppressed = 0
        # Reliable DATA sent and not yet acknowledged, connection-wide. Below HIGH,
        # channels wait while it is at the limit: ACKs leave the receiver only when
        # its application has taken the message, so this bounds the receiver's
        # backlog (a browser delivers data-channel messages to the page however
        # far behind the page is) and with it the latency of HIGH messages.
        self._inflight_limit = inflight_limit
        self._inflight = 0
        self._window_parked: list[Channel] = []

        self._channels: dict[int, Channel] = {}
        # Recently ended channels, oldest first (a dict keeps insertion order).
        self._tombstones: dict[int, ChannelState] = {}
        self._recent_resets: deque[tuple[int, str]] = deque(maxlen=256)
        self._control: deque[bytes] = deque()
        self._pending_acks: dict[int, int] = {}
        # The URGENT transport (see Multiplexer.use_urgent_transport): whether the
        # peer announced it, and the channels -- live or tombstoned, so a late RESET
        # still follows the channel's frames -- whose every frame rides it.
        self._urgent_peer = False
        self._urgent_ids: set[int] = set()
        self._sched: DeficitRoundRobin[Channel] = DeficitRoundRobin(
            MAX_FRAGMENT_PAYLOAD + HEADER_SIZE
        )
        self._waiting: set[Channel] = set()
        self._events: deque[Event] = deque()
        self._replay_bytes = 0
        self._up = True
        self._failed = False
        # counters
        self._frames_sent = self._bytes_sent = 0
        self._frames_received = self._bytes_received = self._frames_ignored = 0
        self._errors = self._unattributed = self._resets = 0

    def _apply_max_message_size(self, size: int) -> None:
        if size < HEADER_SIZE + OPEN_FIXED.size + 64:
            raise InvalidArgumentError(
                f"max_message_size must be at least {HEADER_SIZE + OPEN_FIXED.size + 64}, "
                f"got {size!r}")
        self._max_message_size = size
        self._fragment_size = min(MAX_FRAGMENT_PAYLOAD, size - HEADER_SIZE)

    # ------------------------------------------------------------------ peer control frames

    def _on_open(self, frame: Frame) -> None:
        cid = frame.channel_id
        params = decode_open(frame.payload, cid)
        urgent = bool(frame.flags & FLAG_URGENT_STREAM)
        ch = self._channels.get(cid)
        if ch is not None:
            if (
                frame.flags & FLAG_REPLAY and not ch.local
                and (ch.label, ch.reliability, ch.priority) == tuple(params)
                and (ch.transport is _URGENT) == urgent
            ):
                self._control.append(encode_accept(cid, replay=True))  # our ACCEPT was lost
                return
            raise FrameError(f"duplicate OPEN for channel {cid}", cid)
        if cid in self._tombstones:
            if frame.flags & FLAG_REPLAY:
                self._frames_ignored += 1
                return
            del self._tombstones[cid]
        self._urgent_ids.discard(cid)  # a fresh channel: _route below decides again
        if cid & 1 == self._parity:
            self._control.append(encode_reset(cid, "wrong channel id parity"))
            raise FrameError(f"OPEN with channel id {cid} of the wrong parity", cid)
        if len(self._channels) >= self._max_channels:
            self._control.append(encode_reset(cid, "too many channels"))
            raise FrameError(f"OPEN beyond the limit of {self._max_channels} channels", cid)
        if urgent and not (self._urgent_peer and params.reliability.reliable):
            # Unreliable DATA has its own transport. And the urgent transport is up
            # for a frame that needs it only once a message came on it (the adapter
            # calls use_urgent_transport first): a peer that sets the flag sooner
            # sent the OPEN on another stream, or to a side that has no such stream.
            # The RESET goes where the answer goes without the flag: RELIABLE.
            why = ("it is unreliable" if not params.reliability.reliable
                   else "that transport is not up (nothing arrived on it)")
            self._control.append(encode_reset(cid, "urgent transport refused"))
            raise FrameError(f"OPEN of channel {cid} asks for the urgent transport, but {why}", cid)
        ch = Channel(cid, params.label, params.reliability, params.priority, False,
                      ChannelState.OPEN)
        self._channels[cid] = ch
        self._route(ch, urgent)
        ch.frames_received += 1
        self._control.append(encode_accept(cid))
        self._events.append(ChannelOpened(cid, params.label, params.reliability, params.priority))

    def _on_accept(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frame_for_missing_channel(frame, "ACCEPT")
            return
        ch.frames_received += 1
        if not ch.local:
            raise FrameError(f"ACCEPT for channel {cid}, which the peer opened", cid)
        if ch.accepted:
            if frame.flags & FLAG_REPLAY:
                return
            raise FrameError(f"duplicate ACCEPT for channel {cid}", cid)
        ch.accepted = True
        if ch.state is ChannelState.OPENING:
            ch.state = ChannelState.OPEN
        self._events.append(ChannelAccepted(cid))
        if not ch.scheduled:
            self._wake(ch)  # unreliable DATA waits for ACCEPT: see _wake

    def _on_close(self, frame: Frame, now: float) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            if cid in self._tombstones and frame.flags & FLAG_REPLAY:
                # The peer re-sent CLOSE after a restore but we had finished: confirm
                # (without REPLAY, so this can never ping-pong).
                self._control.append(encode_close(cid))
                self._frames_ignored += 1
                return
            self._frame_for_missing_channel(frame, "CLOSE")
            return
        ch.frames_received += 1
        if ch.drain_deadline is not None:  # a CLOSE already waits for its drain point
            if frame.flags & FLAG_REPLAY:
                return
            raise FrameError(f"duplicate CLOSE for channel {cid}", cid)
        if frame.flags & FLAG_DRAIN and ch.state is not ChannelState.CLOSE_RECEIVED:
            if ch.reliable:
                raise FrameError(f"CLOSE with a drain point on reliable channel {cid}", cid)
            # The CLOSE rode the reliable transport and may have overtaken the last
            # DATA (unordered, other transport): it takes effect once every message
            # before its drain point has arrived or been counted as lost.
            if ch.newest_seq >= 0 and behind((frame.seq - 1) & SEQ_MASK, ch.newest_seq):
                raise FrameError(f"CLOSE drain point {frame.seq} is before DATA already "
                                 f"received ({ch.newest_seq})", cid)
            ch.drain_end = frame.seq
            if not self._drained(ch):
                ch.drain_deadline = now + self._drain_timeout
                self._timed.add(ch)
                return
        self._apply_close(ch, frame.flags)

    def _drained(self, ch: Channel) -> bool:
        """Every message before the peer's drain point arrived or was counted as lost."""
        if ch.partials or ch.missing:
            return False
        if ch.newest_seq < 0:
            return ch.drain_end == 0
        return (ch.newest_seq + 1) & SEQ_MASK == ch.drain_end

    def _complete_drain(self, ch: Channel) -> None:
        """Apply the waiting CLOSE; what has not arrived by now is counted, never dropped silently."""
        ch.drain_deadline = None
        for partial in ch.partials.values():
            self._incomplete(ch, partial.size)
        ch.partials.clear()
        newest = ch.newest_seq
        start = (newest + 1) & SEQ_MASK if newest >= 0 else 0
        lost = len(ch.missing) + ((ch.drain_end - start) & SEQ_MASK)
        ch.missing.clear()
        if lost:
            ch.messages_lost += lost
            self._events.append(MessageDropped(ch.id, True, "lost in transit", 0))
        if ch.drain_end:
            ch.newest_seq = (ch.drain_end - 1) & SEQ_MASK
        self._apply_close(ch, FLAG_DRAIN)

    def _apply_close(self, ch: Channel, flags: int) -> None:
        cid = ch.id
        state = ch.state
        if state is ChannelState.OPEN or state is ChannelState.OPENING:
            self._close_received(ch, by_peer=True)
        elif state is ChannelState.CLOSING:
            if ch.close_sent:
                self._finish_close(ch)
            else:
                self._close_received(ch, by_peer=False)
        elif ch.close_sent:  # CLOSE_RECEIVED, lingering for ACKs: the peer is done
            self._finish_close(ch)
        elif not flags & FLAG_REPLAY:
            raise FrameError(f"duplicate CLOSE for channel {cid}", cid)

    def _on_reset(self, frame: Frame) -> None:
        cid = frame.channel_id
        ch = self._channels.get(cid)
        if ch is None:
            self._frames_ignored += 1  # resets cross each other; never an error
            return
        reason = decode_reason(frame.payload)
        undelivered = ch.undelivered()
        self._remove(ch, ChannelState.RESET)
        self._pending_acks.pop(cid, None)
        self._events.append(ChannelReset(cid, reason, True, undelivered, ch.snapshot()))

    def _frame_for_missing_channel(self, frame: Frame, what: str) -> None:
        cid = frame.channel_id
        kind = self._tombstones.get(cid)
        if kind is not None:
            # Frames that crossed our RESET, unreliable stragglers, or replays of
            # data the close handshake already settled.
            self._frames_ignored += 1
            return
        if frame.type == _DATA:
            self._control.append(encode_reset(cid, "unknown channel"))
        raise FrameError(f"{what} for unknown channel {cid}", cid)

    def _protocol_error(self, exc: RemoteProtocolError, now: float) -> None:
        self._errors += 1
        cid = exc.channel_id if isinstance(exc, FrameError) else None
        self._events.append(ProtocolErrorEvent(exc, cid))
        ch = self._channels.get(cid) if cid is not None else None
        if ch is None:
            self._unattributed += 1
            self._log_protocol_error(now, f"frame dropped: {exc}")
            return
        # The channel is reset below, so later frames for it are ignored (tombstone):
        # this logs once per channel.
        self._log_protocol_error(now, f"channel {ch.id} {ch.label!r} reset: {exc}")
        ch.errors += 1
        undelivered = ch.undelivered()
        self._queue_reset(ch.id, exc.reason)
        self._remove(ch, ChannelState.RESET)
        self._events.append(ChannelReset(ch.id, exc.reason, False, undelivered, ch.snapshot()))

    def _log_protocol_error(self, now: float, text: str) -> None:
        if now >= self._log_window_end:
            self._log_window_end = now + _LOG_INTERVAL
            self._log_budget = _LOG_BURST
        if self._log_budget <= 0:
            self._log_suppressed += 1
            return
        self._log_budget -= 1
        more = (f" ({self._log_suppressed} more protocol errors were not logged)"
                if self._log_suppressed else "")
        self._log_suppressed = 0
        log.warning("mux (%s): protocol error from the peer, %s%s", self.role.value, text, more)

    def _close_sent(self, ch: Channel) -> None:
        ch.close_sent = True
        ch.close_replay = False
        if ch.state is ChannelState.CLOSE_RECEIVED and not ch.unacked:
            self._finish_close(ch)

    def _close_received(self, ch: Channel, by_peer: bool) -> None:
        ch.state = ChannelState.CLOSE_RECEIVED
        ch.close_requested = True
        self._waiting.discard(ch)
        if ch.parts or ch.partials:
            for partial in ch.partials.values():
                self._incomplete(ch, partial.size)
            ch.partials.clear()
            if ch.parts:
                raise FrameError("CLOSE inside a fragmented message", ch.id)
        ch.closed_reported = True
        self._events.append(ChannelClosed(ch.id, by_peer, ch.snapshot()))
        if not ch.scheduled:
            self._wake(ch)

    def _finish_close(self, ch: Channel) -> None:
        self._remove(ch, ChannelState.CLOSED)
        if not ch.closed_reported:
            ch.closed_reported = True
            self._events.append(ChannelClosed(ch.id, False, ch.snapshot()))

    def _queue_reset(self, cid: int, reason: str) -> None:
        self._control.append(encode_reset(cid, reason))
        self._recent_resets.append((cid, reason))

    def _remove(self, ch: Channel, final: ChannelState) -> None:
        del self._channels[ch.id]
        ch.state = final
        ch.drain_deadline = None
        self._timed.discard(ch)
        if final is ChannelState.RESET:
            self._resets += 1
        if ch.scheduled:
            self._sched.remove(ch, ch.priority)
            ch.scheduled = False
        self._waiting.discard(ch)
        self._replay_bytes -= ch.unacked_bytes
        self._inflight -= sum(m.offset for m in ch.unacked)
        if ch in self._window_parked:
            self._window_parked.remove(ch)
        if self._window_parked and self._inflight < self._inflight_limit:
            self._unpark()
        ch.queued_bytes = 0
        ch.queue.clear()
        ch.unacked_bytes = 0
        ch.unacked.clear()
        ch.parts = []
        ch.partials.clear()
        tombstones = self._tombstones
        tombstones.pop(ch.id, None)  # re-inserted as the newest
        tombstones[ch.id] = final
        if len(tombstones) > 4096:
            oldest = next(iter(tombstones))
            del tombstones[oldest]
            if oldest not in self._channels:
                self._urgent_ids.discard(oldest)

    def _incomplete(self, ch: Channel, size: int) -> None:
        self._drop_inbound(ch, size, "incomplete")

    def _drop_inbound(self, ch: Channel, size: int, reason: str) -> None:
        ch.messages_incomplete += 1
        self._events.append(MessageDropped(ch.id, True, reason, size))

    def _unpark(self) -> None:
        parked, self._window_parked = self._window_parked, []
        for ch in parked:
            if not ch.scheduled and ch.id in self._channels:
                self._wake(ch)

    def _wake(self, ch: Channel) -> None:
        # Unreliable DATA must not overtake the OPEN (it travels on the other
        # transport), so it waits for ACCEPT; reliable DATA may follow OPEN at once.
        if ch.queue:
            if not (ch.reliable or ch.accepted):
                return
        elif not ch.close_requested or ch.close_sent:
            return
        ch.scheduled = True
        self._sched.add(ch, ch.priority)

    def _route(self, ch: Channel, urgent: bool) -> None:
        """Fix the transport of a new channel's frames (all of them, both ways)."""
        if urgent:
            ch.transport = _URGENT
            self._urgent_ids.add(ch.id)
        else:
            self._urgent_ids.discard(ch.id)

    def _transport_of(self, cid: int) -> Transport:
        """Where a control frame (OPEN, ACCEPT, ACK, CLOSE, RESET) of channel ``cid`` goes.

        The channel's own stream when it rides URGENT, so each of its frames stays
        in order with its DATA exactly as on one shared stream (OPEN before DATA,
        CLOSE after it, RESET after both); the reliable transport otherwise
        (unreliable channels' CLOSE carries a drain point instead).
        """
        return _URGENT if cid in self._urgent_ids else _RELIABLE

    def _allocate_id(self) -> int:
        for _ in range(0x8000):
            cid = self._next_id
            self._next_id = (cid + 2) & 0xFFFF
            if cid not in self._channels and cid not in self._tombstones:
                return cid
        raise LocalProtocolError("no free channel id: close some channels first")

    def _channel(self, channel_id: int) -> Channel:
        self._check_usable()
        ch = self._channels.get(channel_id)
        if ch is None:
            raise LocalProtocolError(f"unknown channel {channel_id}")
        return ch

    def _check_usable(self) -> None:
        if self._failed:
            raise ConnectionClosedError("the multiplexer has failed")
