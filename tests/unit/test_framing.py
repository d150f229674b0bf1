"""Golden bytes for every frame type, and typed errors for malformed frames."""

from __future__ import annotations

import doctest

import pytest

import pyapp.core.framing as framing
from pyapp.core.framing import (
    FLAG_FIRST,
    FLAG_LAST,
    FLAG_REPLAY,
    FLAG_TEXT,
    FrameType,
    Reliability,
    Transport,
    decode_frame,
    decode_open,
    decode_reason,
    encode_accept,
    encode_ack,
    encode_close,
    encode_data,
    encode_frame,
    encode_open,
    encode_reset,
)
from pyapp.core.scheduler import Priority
from pyapp.exceptions import FrameError, LocalProtocolError

pytestmark = pytest.mark.unit

# The same vectors are printed in docs/wire-format.md.
GOLDEN = {
    "open_reliable": (
        encode_open(2, "chat", Reliability.RELIABLE, Priority.HIGH),
        "01 01 00 02 00 00 00 00 00 00 00 00 00 00 00 0a 03 01 00 00 00 00 63 68 61 74",
    ),
    "open_unreliable": (
        encode_open(3, "game", Reliability(ordered=False, max_retransmits=0), Priority.LOW),
        "01 01 00 03 00 00 00 00 00 00 00 00 00 00 00 0a 01 02 00 00 00 00 67 61 6d 65",
    ),
    "open_lifetime_replay": (
        encode_open(4, "v", Reliability(max_packet_life_time=500), Priority.VERY_LOW, replay=True),
        "01 01 00 04 08 00 00 00 00 00 00 00 00 00 00 07 00 05 00 00 01 f4 76",
    ),
    "open_urgent_stream": (
        encode_open(6, "px", Reliability.RELIABLE, Priority.HIGH, urgent_stream=True),
        "01 01 00 06 20 00 00 00 00 00 00 00 00 00 00 08 03 01 00 00 00 00 70 78",
    ),
    "accept": (encode_accept(3), "01 02 00 03 00 00 00 00 00 00 00 00 00 00 00 00"),
    "data_first": (
        encode_data(2, seq=1, fragment=0, flags=FLAG_FIRST, payload=b"ab"),
        "01 03 00 02 01 00 00 00 00 01 00 00 00 00 00 02 61 62",
    ),
    "data_last_text": (
        encode_data(2, seq=1, fragment=1, flags=FLAG_LAST | FLAG_TEXT, payload="hé".encode()),
        "01 03 00 02 06 00 00 00 00 01 00 00 00 01 00 03 68 c3 a9",
    ),
    "close": (encode_close(2), "01 04 00 02 00 00 00 00 00 00 00 00 00 00 00 00"),
    "close_drain": (encode_close(3, drain=60), "01 04 00 03 10 00 00 00 00 3c 00 00 00 00 00 00"),
    "reset": (encode_reset(2, "bye"), "01 05 00 02 00 00 00 00 00 00 00 00 00 00 00 03 62 79 65"),
    "ack": (encode_ack(2, 0x01020304), "01 06 00 02 00 00 01 02 03 04 00 00 00 00 00 00"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_encoding(name: str) -> None:
    wire, expected = GOLDEN[name]
    assert wire.hex(" ") == expected


def test_golden_decoding() -> None:
    frame = decode_frame(bytes.fromhex(GOLDEN["open_reliable"][1]))
    assert (frame.type, frame.channel_id, frame.flags, frame.seq, frame.fragment) == (
        FrameType.OPEN, 2, 0, 0, 0)
    assert decode_open(frame.payload) == ("chat", Reliability.RELIABLE, Priority.HIGH)

    frame = decode_frame(bytes.fromhex(GOLDEN["open_unreliable"][1]))
    params = decode_open(frame.payload)
    assert params.reliability == Reliability(ordered=False, max_retransmits=0)
    assert params.reliability.transport is Transport.UNRELIABLE
    assert params.priority is Priority.LOW

    frame = decode_frame(bytes.fromhex(GOLDEN["open_lifetime_replay"][1]))
    assert frame.flags == FLAG_REPLAY
    assert decode_open(frame.payload).reliability.max_packet_life_time == 500

    frame = decode_frame(bytes.fromhex(GOLDEN["accept"][1]))
    assert (frame.type, frame.channel_id, len(frame.payload)) == (FrameType.ACCEPT, 3, 0)

    frame = decode_frame(bytes.fromhex(GOLDEN["data_first"][1]))
    assert (frame.type, frame.flags, frame.seq, frame.fragment, bytes(frame.payload)) == (
        FrameType.DATA, FLAG_FIRST, 1, 0, b"ab")
    frame = decode_frame(bytes.fromhex(GOLDEN["data_last_text"][1]))
    assert (frame.flags, frame.fragment, str(frame.payload, "utf-8")) == (
        FLAG_LAST | FLAG_TEXT, 1, "hé")

    assert decode_frame(bytes.fromhex(GOLDEN["close"][1])).type == FrameType.CLOSE
    frame = decode_frame(bytes.fromhex(GOLDEN["reset"][1]))
    assert (frame.type, decode_reason(frame.payload)) == (FrameType.RESET, "bye")
    frame = decode_frame(bytes.fromhex(GOLDEN["ack"][1]))
    assert (frame.type, frame.seq) == (FrameType.ACK, 0x01020304)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    wire = GOLDEN["data_first"][0]
    for data in (bytearray(wire), memoryview(wire)):
        assert bytes(decode_frame(data).payload) == b"ab"


def _corrupt(wire: bytes, index: int, value: int) -> bytes:
    data = bytearray(wire)
    data[index] = value
    return bytes(data)


DATA = GOLDEN["data_first"][0]
BAD = {
    "empty": (b"", None, "truncated"),
    "truncated header": (DATA[:15], None, "truncated"),
    "version": (_corrupt(DATA, 0, 2), None, "version"),
    "unknown type": (_corrupt(DATA, 1, 9), 2, "unknown frame type"),
    "reserved": (_corrupt(DATA, 5, 1), 2, "reserved"),
    "unknown flag": (_corrupt(DATA, 4, 0x41), 2, "flags"),
    "length too long": (DATA[:-1], 2, "length"),
    "length too short": (DATA + b"x", 2, "length"),
    "first flag wrong": (encode_data(2, seq=0, fragment=1, flags=FLAG_FIRST, payload=b"x"), 2, "FIRST"),
    "first flag missing": (encode_data(2, seq=0, fragment=0, flags=FLAG_LAST, payload=b"x"), 2, "FIRST"),
    "empty middle": (encode_data(2, seq=0, fragment=1, flags=0, payload=b""), 2, "empty"),
    "oversize": (encode_data(2, seq=0, fragment=0, flags=3, payload=bytes(16385)), 2, "oversize"),
    "seq on control": (encode_frame(FrameType.CLOSE, 2, seq=5), 2, "control"),
    "payload on close": (encode_frame(FrameType.CLOSE, 2, payload=b"x"), 2, "no payload"),
    "flag on ack": (encode_frame(FrameType.ACK, 2, flags=FLAG_REPLAY), 2, "flags"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_frames_raise_frame_error(name: str) -> None:
    wire, channel_id, words = BAD[name]
    with pytest.raises(FrameError, match=words) as info:
        decode_frame(wire)
    assert info.value.channel_id == channel_id


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\x03\x01\x00\x00\x00", "truncated"),
        (b"\x04\x01\x00\x00\x00\x00", "priority"),
        (b"\x03\x81\x00\x00\x00\x00", "reliability flags"),
        (b"\x03\x06\x00\x01\x00\x01", "both"),
        (b"\x03\x01\x00\x05\x00\x00", "absent"),
        (b"\x03\x01\x00\x00\x00\x00\xff", "UTF-8"),
    ],
)
def test_malformed_open_payload(payload: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words) as info:
        decode_open(payload, 7)
    assert info.value.channel_id == 7


def test_reliability_validation() -> None:
    with pytest.raises(LocalProtocolError):
        Reliability(max_retransmits=1, max_packet_life_time=1)
    with pytest.raises(LocalProtocolError):
        Reliability(max_retransmits=70000)
    assert Reliability.RELIABLE.reliable and not Reliability.UNRELIABLE.reliable
    assert Reliability.UNRELIABLE.transport is Transport.UNRELIABLE


def test_reset_reason_is_truncated_on_a_character_boundary() -> None:
    frame = decode_frame(encode_reset(1, "é" * 300))
    assert len(frame.payload) <= framing.MAX_REASON
    assert decode_reason(frame.payload) == "é" * 100


def test_reset_reason_bad_utf8_is_replaced() -> None:
    assert decode_reason(b"a\xffb") == "a\ufffdb"


def test_module_docstring_example_runs() -> None:
    assert doctest.testmod(framing).failed == 0
