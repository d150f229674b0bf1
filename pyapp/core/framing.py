"""Wire format of the channel multiplexer: frames packed into SCTP messages.

A frame is a fixed 16-byte header followed by the payload (at most 16 KiB for
DATA). An underlying RTCDataChannel message carries one frame, or several
consecutive frames for the same transport packed back to back (each header's
``length`` field delimits its frame). Packing cuts the number of browser
``send()`` calls — each one is a blocking hop to the WebRTC thread — without
changing the 16 KiB scheduling quantum. The full byte-by-byte layout, with a golden example
per frame type, is in ``docs/wire-format.md``.

Example::

    >>> from pyapp.core.framing import (
    ...     FLAG_FIRST, FLAG_LAST, FrameType, decode_frame, encode_data)
    >>> wire = encode_data(4, seq=7, fragment=0, flags=FLAG_FIRST | FLAG_LAST, payload=b"hi")
    >>> wire.hex(" ")
    '01 03 00 04 03 00 00 00 00 07 00 00 00 00 00 02 68 69'
    >>> frame = decode_frame(wire)
    >>> frame.type == FrameType.DATA, frame.channel_id, frame.seq, bytes(frame.payload)
    (True, 4, 7, b'hi')
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from pyapp.core.scheduler import Priority
from pyapp.exceptions import FrameError, InvalidArgumentError

__all__ = [
    "ALLOWED_FLAGS",
    "FLAG_DRAIN",
    "FLAG_FIRST",
    "FLAG_LAST",
    "FLAG_REPLAY",
    "FLAG_TEXT",
    "FLAG_URGENT_STREAM",
    "HEADER",
    "HEADER_SIZE",
    "MAX_FRAGMENT_PAYLOAD",
    "MAX_PAYLOAD",
    "OPEN_FIXED",
    "SEQ_MASK",
    "VERSION",
    "Frame",
    "FrameType",
    "OpenParams",
    "Reliability",
    "Transport",
    "decode_frame",
    "decode_open",
    "decode_reason",
    "encode_accept",
    "encode_ack",
    "encode_close",
    "encode_data",
    "encode_frame",
    "encode_open",
    "encode_reset",
]

VERSION = 1

#: version u8, type u8, channel u16, flags u8, reserved u8, seq u32, fragment u32, length u16
HEADER = struct.Struct("!BBHBBIIH")
HEADER_SIZE = HEADER.size  # 16

#: Largest DATA payload in one frame. 16 KiB is the size every browser has
#: delivered interoperably since before RFC 8831's max-message-size existed.
MAX_FRAGMENT_PAYLOAD = 16384
#: Largest payload of any frame (the length field is a u16).
MAX_PAYLOAD = 0xFFFF
SEQ_MASK = 0xFFFFFFFF


class FrameType(enum.IntEnum):
    """The ``type`` byte of a frame."""

    OPEN = 1
    ACCEPT = 2
    DATA = 3
    CLOSE = 4
    RESET = 5
    ACK = 6


FLAG_FIRST = 0x01  #: DATA: first fragment of a message (fragment index 0)
FLAG_LAST = 0x02  #: DATA: last fragment of a message
FLAG_TEXT = 0x04  #: DATA: the message is UTF-8 text (a ``str``), not binary
FLAG_REPLAY = 0x08  #: re-sent after a transport was restored; may be a duplicate
#: CLOSE of an unreliable channel: ``seq`` is the drain point, the sequence number
#: after the sender's last DATA message (its count of messages sent, mod 2**32).
FLAG_DRAIN = 0x10
#: OPEN: every frame of this channel, in both directions, travels on the URGENT
#: transport (its own SCTP stream), not the shared reliable one. Sent only to a
#: peer that announced that transport (a hello on it); reliable channels only.
FLAG_URGENT_STREAM = 0x20

#: Flag bits each frame type may carry; any other bit is a protocol error.
ALLOWED_FLAGS: dict[int, int] = {
    FrameType.OPEN: FLAG_REPLAY | FLAG_URGENT_STREAM,
    FrameType.ACCEPT: FLAG_REPLAY,
    FrameType.DATA: FLAG_FIRST | FLAG_LAST | FLAG_TEXT | FLAG_REPLAY,
    FrameType.CLOSE: FLAG_REPLAY | FLAG_DRAIN,
    FrameType.RESET: FLAG_REPLAY,
    FrameType.ACK: 0,
}


class Transport(enum.Enum):
    """Which of the underlying RTCDataChannels carries a frame."""

    RELIABLE = "reliable"
    """ordered, fully reliable: control frames and reliable channels' DATA"""
    UNRELIABLE = "unreliable"
    """``ordered: false`` with a retransmit/lifetime limit: unreliable channels' DATA"""
    URGENT = "urgent"
    """ordered, fully reliable, its own SCTP stream: every frame of the channels opened
    with FLAG_URGENT_STREAM (HIGH reliable channels, once the peer announced it), so
    they do not wait behind bulk data queued on the RELIABLE stream"""


@dataclass(frozen=True, slots=True)
class Reliability:
    """W3C ``RTCDataChannelInit`` reliability knobs of one logical channel.

    A channel is reliable when neither limit is set; it then rides the reliable
    transport. Otherwise its DATA rides the shared unreliable transport, whose
    own limits are fixed when the adapter creates it: ``max_packet_life_time``
    is additionally enforced here (queued messages older than it are dropped
    before their first fragment goes out), ``ordered`` makes the receiver drop
    messages older than the newest delivered one, and ``max_retransmits`` is
    carried to the peer for information.
    """

    ordered: bool = True
    """deliver messages in send order"""
    max_retransmits: int | None = None
    """W3C maxRetransmits (u16), or None"""
    max_packet_life_time: int | None = None
    """W3C maxPacketLifeTime in milliseconds (u16), or None"""

    RELIABLE: ClassVar[Reliability]
    UNRELIABLE: ClassVar[Reliability]

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_life_time is not None:
            # W3C createDataChannel throws TypeError for this combination.
            raise InvalidArgumentError("set max_retransmits or max_packet_life_time, not both")
        for name in ("max_retransmits", "max_packet_life_time"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFF:
                raise InvalidArgumentError(f"{name} must be in 0..65535, got {value!r}")

    @property
    def reliable(self) -> bool:
        """True when neither retransmit nor lifetime limit is set."""
        return self.max_retransmits is None and self.max_packet_life_time is None

    @property
    def transport(self) -> Transport:
        """The transport that carries this channel's DATA frames."""
        return Transport.RELIABLE if self.reliable else Transport.UNRELIABLE


Reliability.RELIABLE = Reliability()
Reliability.UNRELIABLE = Reliability(ordered=False, max_retransmits=0)


class Frame(NamedTuple):
    """A decoded frame. ``payload`` is a zero-copy view into the input."""

    type: int
    channel_id: int
    flags: int
    seq: int
    fragment: int
    payload: memoryview


class OpenParams(NamedTuple):
    """The payload of an OPEN frame."""

    label: str
    reliability: Reliability
    priority: Priority


# OPEN payload: priority u8, reliability flags u8, max_retransmits u16,
# max_packet_life_time u16, then the UTF-8 label up to the end of the frame.
OPEN_FIXED = struct.Struct("!BBHH")
_REL_ORDERED = 0x01
_REL_HAS_RTX = 0x02
_REL_HAS_LIFETIME = 0x04

_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


def encode_frame(
    ftype: int, channel_id: int, flags: int = 0, seq: int = 0, fragment: int = 0,
    payload: bytes | memoryview = b"",
) -> bytes:
    """Encode one frame (no validation beyond ``struct``'s range checks)."""
    return _pack_header(VERSION, ftype, channel_id, flags, 0, seq, fragment, len(payload)) + payload


def encode_data(
    channel_id: int, *, seq: int, fragment: int, flags: int, payload: bytes | memoryview
) -> bytes:
    """Encode one DATA fragment."""
    return _pack_header(
        VERSION, FrameType.DATA, channel_id, flags, 0, seq, fragment, len(payload)
    ) + payload


def encode_open(
    channel_id: int, label: str, reliability: Reliability, priority: Priority,
    *, replay: bool = False, urgent_stream: bool = False,
) -> bytes:
    """Encode an OPEN frame (``urgent_stream``: FLAG_URGENT_STREAM, see there)."""
    rel_flags = _REL_ORDERED if reliability.ordered else 0
    rtx = reliability.max_retransmits
    life = reliability.max_packet_life_time
    if rtx is not None:
        rel_flags |= _REL_HAS_RTX
    if life is not None:
        rel_flags |= _REL_HAS_LIFETIME
    payload = OPEN_FIXED.pack(int(priority), rel_flags, rtx or 0, life or 0) + label.encode()
    if len(payload) > MAX_PAYLOAD:
        raise InvalidArgumentError(
            f"label must be at most {MAX_PAYLOAD - OPEN_FIXED.size} UTF-8 bytes, "
            f"got {len(payload) - OPEN_FIXED.size}")
    flags = (FLAG_REPLAY if replay else 0) | (FLAG_URGENT_STREAM if urgent_stream else 0)
    return encode_frame(FrameType.OPEN, channel_id, flags, payload=payload)


def encode_accept(channel_id: int, *, replay: bool = False) -> bytes:
    """Encode an ACCEPT frame (answer to OPEN)."""
    return encode_frame(FrameType.ACCEPT, channel_id, FLAG_REPLAY if replay else 0)


def encode_close(channel_id: int, *, replay: bool = False, drain: int | None = None) -> bytes:
    """Encode a CLOSE frame (graceful, after all of the channel's DATA).

    ``drain`` (unreliable channels): the sequence number after the last DATA
    message sent, carried in ``seq`` with FLAG_DRAIN, so the receiver can wait
    for DATA that the CLOSE overtook on the other transport.
    """
    flags = FLAG_REPLAY if replay else 0
    if drain is None:
        return encode_frame(FrameType.CLOSE, channel_id, flags)
    return encode_frame(FrameType.CLOSE, channel_id, flags | FLAG_DRAIN, drain & SEQ_MASK)


#: Reasons are cut to this many UTF-8 bytes so a RESET always fits any frame size.
MAX_REASON = 200


def encode_reset(channel_id: int, reason: str, *, replay: bool = False) -> bytes:
    """Encode a RESET frame; ``reason`` is truncated to ``MAX_REASON`` bytes."""
    raw = reason.encode()
    if len(raw) > MAX_REASON:
        raw = raw[:MAX_REASON].decode(errors="ignore").encode()
    return encode_frame(FrameType.RESET, channel_id, FLAG_REPLAY if replay else 0, payload=raw)


def encode_ack(channel_id: int, next_seq: int) -> bytes:
    """Encode an ACK: every reliable message with sequence < ``next_seq`` arrived."""
    return encode_frame(FrameType.ACK, channel_id, 0, next_seq & SEQ_MASK)


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Parse and validate one frame; raise :class:`FrameError` on anything malformed.

    ``FrameError.channel_id`` is None when the header itself cannot be trusted
    (too short, unknown version): such a frame is attributed to no channel.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise FrameError(f"truncated frame: {size} bytes, the header needs {HEADER_SIZE}")
    version, ftype, cid, flags, reserved, seq, fragment, length = _unpack_header(data)
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version}")
    allowed = ALLOWED_FLAGS.get(ftype)
    if allowed is None:
        raise FrameError(f"unknown frame type {ftype}", cid)
    if reserved:
        raise FrameError(f"reserved header byte is {reserved}, must be 0", cid)
    if flags & ~allowed:
        raise FrameError(f"flags 0x{flags:02x} not allowed on frame type {ftype}", cid)
    if length != size - HEADER_SIZE:
        raise FrameError(f"length field {length} != payload size {size - HEADER_SIZE}", cid)
    if ftype == FrameType.DATA:
        if length > MAX_FRAGMENT_PAYLOAD:
            raise FrameError(f"oversize fragment: {length} > {MAX_FRAGMENT_PAYLOAD} bytes", cid)
        if (fragment == 0) != bool(flags & FLAG_FIRST):
            raise FrameError("FIRST flag disagrees with fragment index", cid)
        if not length and not flags & FLAG_LAST:
            raise FrameError("empty non-final fragment", cid)
    else:
        if fragment or (seq and ftype != FrameType.ACK and not flags & FLAG_DRAIN):
            raise FrameError("sequence/fragment fields must be 0 on control frames", cid)
        if length and ftype in (FrameType.ACCEPT, FrameType.CLOSE, FrameType.ACK):
            raise FrameError(f"frame type {ftype} carries no payload", cid)
    view = data if type(data) is memoryview else memoryview(data)
    return Frame(ftype, cid, flags, seq, fragment, view[HEADER_SIZE:])


def decode_open(payload: memoryview | bytes, channel_id: int | None = None) -> OpenParams:
    """Parse an OPEN payload; raise :class:`FrameError` when malformed."""
    if len(payload) < OPEN_FIXED.size:
        raise FrameError("truncated OPEN payload", channel_id)
    prio, rel_flags, rtx, life = OPEN_FIXED.unpack_from(payload)
    if prio > Priority.HIGH:
        raise FrameError(f"unknown priority {prio}", channel_id)
    if rel_flags & ~(_REL_ORDERED | _REL_HAS_RTX | _REL_HAS_LIFETIME):
        raise FrameError(f"unknown reliability flags 0x{rel_flags:02x}", channel_id)
    has_rtx = bool(rel_flags & _REL_HAS_RTX)
    has_life = bool(rel_flags & _REL_HAS_LIFETIME)
    if has_rtx and has_life:
        raise FrameError("OPEN sets both max_retransmits and max_packet_life_time", channel_id)
    if (rtx and not has_rtx) or (life and not has_life):
        raise FrameError("OPEN carries a value for an absent reliability limit", channel_id)
    try:
        label = str(payload[OPEN_FIXED.size:], "utf-8")
    except UnicodeDecodeError:
        raise FrameError("OPEN label is not valid UTF-8", channel_id) from None
    reliability = Reliability(
        ordered=bool(rel_flags & _REL_ORDERED),
        max_retransmits=rtx if has_rtx else None,
        max_packet_life_time=life if has_life else None,
    )
    return OpenParams(label, reliability, Priority(prio))


def decode_reason(payload: memoryview | bytes) -> str:
    """Decode a RESET reason; it is informational, so bad UTF-8 is replaced, not fatal."""
    return str(payload, "utf-8", "replace")
