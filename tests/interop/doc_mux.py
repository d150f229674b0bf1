"""pyapp's multiplexer, implemented a second time from docs/wire-format.md alone.

Nothing here comes from ``pyapp.core.mux`` or ``pyapp.core.framing``: if the
page's multiplexer and this one interoperate, the document is complete enough
for a third party. It runs on aiortc data channels (:mod:`tests.support.aiortc_peer`).

Covered: the two negotiated transports (ids 1000/1001), the transport hello
(repeated until the peer's arrives, then once more), OPEN/ACCEPT, reliable DATA
with fragmentation and the TEXT flag, cumulative ACKs, unreliable channels (DATA on
the unreliable transport, only after ACCEPT, never ACKed), CLOSE, RESET, packed
frames. Not covered: replay after a transport loss, priorities, unreliable
reassembly of out-of-order fragments (single-fragment messages only). The optional
urgent transport (``pyapp-mux-h``, id 1002, OPEN flag URGENT_STREAM) only with
``urgent=True``; without it this is the "peer without the urgent stream" of the
interop tests (the page keeps its HIGH channels on ``pyapp-mux``).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.aiortc_peer import AiortcPeer, Channel

HEADER = struct.Struct(">BBHBBIIH")  # version, type, channel, flags, reserved, seq, fragment, length
VERSION = 1
OPEN, ACCEPT, DATA, CLOSE, RESET, ACK = 1, 2, 3, 4, 5, 6
FIRST, LAST, TEXT, REPLAY = 0x01, 0x02, 0x04, 0x08
URGENT_STREAM = 0x20  # OPEN: every frame of the channel rides pyapp-mux-h
MAX_FRAGMENT = 16384
HELLO = b"PYMX\x01"
RELIABLE_ID, UNRELIABLE_ID, URGENT_ID = 1000, 1001, 1002


def frame(ftype: int, cid: int, *, flags: int = 0, seq: int = 0, fragment: int = 0,
          payload: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, ftype, cid, flags, 0, seq, fragment, len(payload)) + payload


def open_payload(label: str, priority: int = 2, *, ordered: bool = True,
                 max_retransmits: int | None = None, lifetime_ms: int | None = None) -> bytes:
    rel = (0x01 if ordered else 0) | (0x02 if max_retransmits is not None else 0) \
        | (0x04 if lifetime_ms is not None else 0)
    return struct.pack(">BBHH", priority, rel, max_retransmits or 0, lifetime_ms or 0) \
        + label.encode()


def frames(message: bytes) -> Iterator[tuple[int, int, int, int, int, bytes]]:
    """(type, channel, flags, seq, fragment, payload) for each frame packed in one message."""
    off = 0
    while off < len(message):
        version, ftype, cid, flags, reserved, seq, frag, length = HEADER.unpack_from(message, off)
        if version != VERSION or reserved:
            raise ValueError(f"bad frame header at {off}")
        start = off + HEADER.size
        if start + length > len(message):
            raise ValueError("frame runs past the end of its message")
        yield ftype, cid, flags, seq, frag, message[start:start + length]
        off = start + length


@dataclass
class LogicalChannel:
    cid: int
    label: str
    reliable: bool
    urgent: bool = False  # rides pyapp-mux-h (all of its frames)
    send_seq: int = 0
    recv_seq: int = 0
    parts: list[bytes] = field(default_factory=list)
    text: bool = False
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    closed_by_peer: bool = False
    close_sent: bool = False
    reset_reason: str | None = None
    inbox: asyncio.Queue[bytes | str] = field(default_factory=asyncio.Queue)


class DocMux:
    """One side of the multiplexer on an aiortc peer connection.

    ``even``: this side allocates even channel ids (it is the impolite peer /
    the one whose handshake role is OFFERER, see the document).
    """

    def __init__(self, peer: AiortcPeer, *, even: bool, urgent: bool = False) -> None:
        self.even = even
        self.next_id = 0 if even else 1
        self.reliable: Channel = peer.create_channel("pyapp-mux", negotiated=True, id=RELIABLE_ID)
        self.unreliable: Channel = peer.create_channel(
            "pyapp-mux-u", negotiated=True, id=UNRELIABLE_ID, ordered=False, maxRetransmits=0)
        # Created with the others, before any hello (the document's rule).
        self.urgent: Channel | None = (peer.create_channel("pyapp-mux-h", negotiated=True, id=URGENT_ID)
                                       if urgent else None)
        self.urgent_up = False  # something arrived on pyapp-mux-h
        self.arrivals: list[tuple[str, int, int]] = []  # (transport, frame type, channel)
        self.session_id = os.urandom(8)
        self.peer_session_id: bytes | None = None
        self.channels: dict[int, LogicalChannel] = {}
        self.incoming: asyncio.Queue[LogicalChannel] = asyncio.Queue()
        self.hellos_sent = 0
        self.acks_received: list[tuple[int, int]] = []
        self._peer_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 10.0) -> None:
        """Open the transports and exchange hellos; frames may flow afterwards."""
        await self.reliable.wait_open(timeout)
        await self.unreliable.wait_open(timeout)
        transports = {"reliable": self.reliable, "unreliable": self.unreliable}
        if self.urgent is not None:
            await self.urgent.wait_open(timeout)
            transports["urgent"] = self.urgent
        for name, transport in transports.items():
            self._tasks.append(asyncio.ensure_future(self._read(transport, name)))
        delay = 0.02
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._peer_ready.is_set():
            self._hello()
            if loop.time() > deadline:
                raise TimeoutError("no transport hello from the peer")
            try:
                await asyncio.wait_for(self._peer_ready.wait(), delay)
            except TimeoutError:
                delay = min(0.25, delay * 1.5)
        self._hello()  # once more: the peer may have dropped every earlier one

    def _hello(self) -> None:
        if self.urgent is not None:
            self.urgent.send(HELLO + self.session_id)  # just before each reliable one
        self.reliable.send(HELLO + self.session_id)
        self.hellos_sent += 1

    async def _read(self, transport: Channel, name: str) -> None:
        while True:
            try:
                message = await transport.receive(timeout=3600)
            except ConnectionError:
                return
            assert isinstance(message, bytes), "a text message on a mux transport"
            if name == "urgent":
                self.urgent_up = True  # the peer has pyapp-mux-h
            if message[:5] == HELLO and len(message) in (5, 13):
                self.peer_session_id = message[5:] or None
                self._peer_ready.set()
                continue
            self._peer_ready.set()  # the peer sends frames only once it heard us
            for ftype, cid, flags, seq, frag, payload in frames(message):
                self.arrivals.append((name, ftype, cid))
                self._on_frame(ftype, cid, flags, seq, frag, payload)

    def _send(self, data: bytes, *, reliable: bool = True, urgent: bool = False) -> None:
        if urgent:
            assert self.urgent is not None
            self.urgent.send(data)
            return
        (self.reliable if reliable else self.unreliable).send(data)

    def _on_frame(self, ftype: int, cid: int, flags: int, seq: int, frag: int,
                  payload: bytes) -> None:
        if ftype == OPEN:
            assert (cid % 2 == 0) != self.even, f"peer opened {cid} with our parity"
            priority, rel, _mr, _life = struct.unpack_from(">BBHH", payload)
            assert priority <= 3
            ch = LogicalChannel(cid, payload[6:].decode(), reliable=(rel & 0x06) == 0,
                                urgent=bool(flags & URGENT_STREAM))
            assert not ch.urgent or (self.urgent_up and ch.reliable), "URGENT_STREAM not allowed"
            self.channels[cid] = ch
            self._send(frame(ACCEPT, cid), urgent=ch.urgent)
            self.incoming.put_nowait(ch)
        elif ftype == ACCEPT:
            self.channels[cid].accepted.set()
        elif ftype == DATA:
            ch = self.channels[cid]
            if flags & FIRST:
                assert frag == 0 and not ch.parts
                ch.text = bool(flags & TEXT)
            if ch.reliable:
                assert seq == ch.recv_seq and frag == len(ch.parts), (seq, frag, ch.recv_seq)
            else:
                assert flags & FIRST and flags & LAST, "multi-fragment unreliable: not covered"
            ch.parts.append(payload)
            if flags & LAST:
                data = b"".join(ch.parts)
                ch.parts.clear()
                ch.inbox.put_nowait(data.decode() if ch.text else data)
                if ch.reliable:
                    ch.recv_seq = (seq + 1) & 0xFFFFFFFF
                    self._send(frame(ACK, cid, seq=ch.recv_seq), urgent=ch.urgent)
        elif ftype == ACK:
            self.acks_received.append((cid, seq))
        elif ftype == CLOSE:
            ch = self.channels[cid]
            ch.closed_by_peer = True
            if not ch.close_sent:
                self.close_channel(cid)
            ch.inbox.put_nowait(b"")  # wake a reader; closed_by_peer tells it apart
        elif ftype == RESET:
            ch = self.channels[cid]
            ch.reset_reason = payload.decode(errors="replace")
            ch.inbox.put_nowait(b"")
        else:
            raise ValueError(f"unknown frame type {ftype}")

    def open_channel(self, label: str, priority: int = 2, *, reliable: bool = True) -> LogicalChannel:
        cid = self.next_id
        self.next_id += 2
        # Reliable HIGH channels ride pyapp-mux-h once the peer was heard there.
        urgent = reliable and priority == 3 and self.urgent_up
        ch = LogicalChannel(cid, label, reliable=reliable, urgent=urgent)
        self.channels[cid] = ch
        payload = (open_payload(label, priority) if reliable
                   else open_payload(label, priority, ordered=False, max_retransmits=0))
        # Control frames: the channel's own stream (urgent) or the reliable transport.
        self._send(frame(OPEN, cid, flags=URGENT_STREAM if urgent else 0, payload=payload),
                   urgent=urgent)
        return ch

    def send(self, ch: LogicalChannel, message: bytes | str) -> int:
        """Send one message (reliable DATA may follow OPEN at once); returns its fragments.

        Unreliable channels: call after ``ch.accepted`` is set (DATA on the other
        transport could overtake the OPEN).
        """
        if not ch.reliable:
            assert ch.accepted.is_set(), "unreliable DATA before ACCEPT"
        data = message.encode() if isinstance(message, str) else message
        chunks = [data[i:i + MAX_FRAGMENT] for i in range(0, len(data), MAX_FRAGMENT)] or [b""]
        packed = b""
        for i, chunk in enumerate(chunks):
            flags = (FIRST if i == 0 else 0) | (LAST if i == len(chunks) - 1 else 0) \
                | (TEXT if isinstance(message, str) else 0)
            packed += frame(DATA, ch.cid, flags=flags, seq=ch.send_seq, fragment=i, payload=chunk)
            if len(packed) >= 48 * 1024 or i == len(chunks) - 1:
                # Several whole frames per message are allowed (<= 64 KiB).
                self._send(packed, reliable=ch.reliable, urgent=ch.urgent)
                packed = b""
        ch.send_seq = (ch.send_seq + 1) & 0xFFFFFFFF
        return len(chunks)

    def close_channel(self, cid: int) -> None:
        ch = self.channels[cid]
        ch.close_sent = True
        self._send(frame(CLOSE, cid), urgent=ch.urgent)

    async def accept(self, timeout: float = 10.0) -> LogicalChannel:
        return await asyncio.wait_for(self.incoming.get(), timeout)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
