"""The receive fast paths give exactly what the general path gives.

``MuxReceiver._receive_whole`` takes the common frame (a whole, in-sequence
message on a reliable channel) without building a Frame, and
``MuxReceiver._receive_run`` takes a run of them packed in one message. These
tests feed the same peer bytes -- valid frames, and frames with any header byte
or payload byte changed, one per message or packed several to a message -- to a
multiplexer with the fast paths and to one whose fast paths are switched off,
and compare every event and counter.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import FLAG_FIRST, FLAG_LAST, FLAG_TEXT, HEADER, FrameType
from pyapp.core.mux import MessageReceived, Multiplexer, Priority, Reliability, Role
from pyapp.core.mux_receive import MuxReceiver
from tests.support.mux_pull import pack, take

pytestmark = pytest.mark.unit


class _GeneralOnly(Multiplexer):
    """The multiplexer with its fast receive path switched off."""

    def _receive_whole(self, data: Any) -> bool:
        return False

    def _receive_run(self, view: memoryview, offset: int, size: int) -> int:
        return offset


def _opened(cls: type[Multiplexer]) -> Multiplexer:
    """A RESPONDER that has accepted channels 0 (reliable), 2 (reliable, HIGH) and 4 (unreliable)."""
    peer = Multiplexer(Role.INITIATOR)
    peer.open_channel("r")
    peer.open_channel("h", priority=Priority.HIGH)
    peer.open_channel("u", Reliability(ordered=False, max_retransmits=0))
    mux = cls(Role.RESPONDER, max_message_bytes=1 << 20)
    while (frame := peer.next_frame(0.0)) is not None:
        mux.receive_frame(frame.data, 0.0)
    take(mux)
    while mux.next_frame(0.0) is not None:
        pass
    return mux


def _data(cid: int, seq: int, payload: bytes, flags: int = FLAG_FIRST | FLAG_LAST) -> bytes:
    return HEADER.pack(1, FrameType.DATA, cid, flags, 0, seq, 0, len(payload)) + payload


def _outcome(mux: Multiplexer) -> tuple[Any, ...]:
    frames = []
    while (frame := mux.next_frame(0.0)) is not None:
        frames.append(bytes(frame.data))
    channels = tuple(mux.channel_stats(cid) for cid in mux.channel_ids)
    events = tuple(repr(e) for e in take(mux))
    return events, frames, mux.stats(), channels


def _both(frames: list[bytes]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    fast, general = _opened(Multiplexer), _opened(_GeneralOnly)
    for data in frames:
        fast.receive_frame(data, 1.0)
        general.receive_frame(memoryview(data), 1.0)  # memoryview and bytes take the same path
    return _outcome(fast), _outcome(general)


def test_the_fast_path_is_taken_for_whole_in_sequence_messages() -> None:
    mux = _opened(Multiplexer)
    assert isinstance(mux, MuxReceiver)
    assert mux._receive_whole(_data(0, 0, b"abc"))
    assert not mux._receive_whole(_data(0, 0, b"abc"))  # seq 0 again: not next in sequence
    assert not mux._receive_whole(_data(4, 0, b"abc"))  # unreliable channel: general path
    assert mux._receive_whole(_data(2, 0, "hé".encode(), FLAG_FIRST | FLAG_LAST | FLAG_TEXT))
    assert not mux._receive_whole(_data(0, 1, b"\xff", FLAG_FIRST | FLAG_LAST | FLAG_TEXT))
    events = take(mux)
    assert [(e.channel_id, e.data) for e in events if isinstance(e, MessageReceived)] == [(0, b"abc"), (2, "hé")]
    assert len(events) == 2


def test_valid_traffic_gives_the_same_events_acks_and_counters() -> None:
    frames = [_data(0, i, bytes([i]) * i) for i in range(20)]
    frames += [_data(2, i, f"m{i}".encode(), FLAG_FIRST | FLAG_LAST | FLAG_TEXT) for i in range(5)]
    fast, general = _both(frames)
    assert fast == general
    assert len(fast[0]) == 25


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 2, 4, 6]),          # channel (6 was never opened)
            st.integers(0, 3),                      # sequence number
            st.binary(max_size=40),                 # payload
            st.sampled_from([3, 7, 1, 2, 11, 0]),   # flags
            st.integers(-1, 40),                    # byte to corrupt (-1: none)
            st.integers(0, 255),                    # its new value
        ),
        max_size=12,
    )
)
def test_any_peer_bytes_give_the_same_outcome(steps: list[tuple[int, int, bytes, int, int, int]]) -> None:
    frames = []
    for cid, seq, payload, flags, at, value in steps:
        raw = bytearray(_data(cid, seq, payload, flags))
        if 0 <= at < len(raw):
            raw[at] = value
        frames.append(bytes(raw))
    fast, general = _both(frames)
    assert fast == general


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 0, 0, 2, 4, 6]),    # channel (6 was never opened)
            st.integers(0, 4),                      # sequence number (in order when < 0 below)
            st.binary(max_size=40),                 # payload
            st.sampled_from([3, 3, 7, 1, 2, 11]),   # flags
            st.integers(-1, 60),                    # byte to corrupt (-1 or past the end: none)
            st.integers(0, 255),                    # its new value
        ),
        max_size=16,
    ),
    cuts=st.lists(st.integers(0, 16), max_size=4),  # where one message ends and the next starts
    in_order=st.booleans(),
)
def test_packed_peer_bytes_give_the_same_outcome(steps: list[tuple[int, int, bytes, int, int, int]],
                                                 cuts: list[int], in_order: bool) -> None:
    frames = []
    seqs: dict[int, int] = {}
    for cid, seq, payload, flags, at, value in steps:
        if in_order:  # mostly valid runs, so the fast path runs long before something breaks it
            seq = seqs.get(cid, 0)
            seqs[cid] = seq + 1
        raw = bytearray(_data(cid, seq, payload, flags))
        if 0 <= at < len(raw):
            raw[at] = value
        frames.append(bytes(raw))
    messages = pack(frames, cuts)
    fast, general = _opened(Multiplexer), _opened(_GeneralOnly)
    for data in messages:
        fast.receive_datagram(data, 1.0)
        general.receive_datagram(data, 1.0)
    assert _outcome(fast) == _outcome(general)
