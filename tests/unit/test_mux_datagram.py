"""Several frames packed into one data-channel message (receive_datagram)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.framing import HEADER_SIZE
from pyapp.core.mux import (
    ChannelOpened,
    MessageReceived,
    Multiplexer,
    ProtocolErrorEvent,
    Reliability,
    Role,
)
from pyapp.exceptions import RemoteProtocolError
from tests.support.mux_pull import feed_datagram

pytestmark = pytest.mark.unit





def _frames(sender: Multiplexer) -> list[bytes]:
    out = []
    while (frame := sender.next_frame(0.0)) is not None:
        out.append(frame.data)
    return out


def _messages(events) -> list[bytes | str]:
    return [e.data for e in events if isinstance(e, MessageReceived)]


def test_packed_frames_deliver_like_single_frames():
    a = Multiplexer(Role.INITIATOR)
    cid = a.open_channel("x")
    payloads = [b"a" * 40_000, "text", b"", b"z" * 16_384]
    for p in payloads:
        a.send(cid, p, 0.0)
    frames = _frames(a)
    assert len(frames) > 5
    single, packed = Multiplexer(Role.RESPONDER), Multiplexer(Role.RESPONDER)
    one = [e for f in frames for e in feed_datagram(single, f, 0.0)]
    # Pack greedily into <= 64 KiB messages.
    batches, cur = [], b""
    for f in frames:
        if cur and len(cur) + len(f) > 65536:
            batches.append(cur)
            cur = b""
        cur += f
    batches.append(cur)
    assert len(batches) < len(frames)
    two = [e for b in batches for e in feed_datagram(packed, b, 0.0)]
    assert _messages(one) == _messages(two) == payloads
    assert isinstance(two[0], ChannelOpened)


def test_overlong_length_in_a_batch_is_a_counted_error_and_later_frames_still_work():
    a = Multiplexer(Role.INITIATOR)
    cid = a.open_channel("x", Reliability.RELIABLE)
    a.send(cid, b"first", 0.0)
    frames = _frames(a)
    b = Multiplexer(Role.RESPONDER)
    good = b"".join(frames)
    lying = bytearray(frames[-1])
    lying[14:16] = (9000).to_bytes(2, "big")  # claims more payload than there is
    events = feed_datagram(b, good + bytes(lying) + b"tail", 0.0)
    assert _messages(events) == [b"first"]
    errors = [e for e in events if isinstance(e, ProtocolErrorEvent)]
    assert len(errors) == 1 and "length field 9000" in errors[0].error.reason
    assert errors[0].channel_id == cid  # attributed: that channel is reset, not the connection
    assert b.stats().protocol_errors == 1
    other = a.open_channel("y")
    a.send(other, b"second", 0.0)
    assert _messages(feed_datagram(b, b"".join(_frames(a)), 0.0)) == [b"second"]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=HEADER_SIZE + 40), max_size=6))
def test_arbitrary_datagrams_only_produce_typed_events(chunks):
    b = Multiplexer(Role.RESPONDER)
    events = feed_datagram(b, b"".join(chunks), 0.0)
    assert isinstance(events, list)
    for e in events:
        if isinstance(e, ProtocolErrorEvent):
            assert isinstance(e.error, RemoteProtocolError)
