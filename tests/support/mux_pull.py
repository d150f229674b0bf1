"""The sans-I/O pull around a Multiplexer, for tests and the fuzzer.

Each helper feeds one input (or fails every channel) and returns every event the
multiplexer left, in order, via ``next_event()`` until it returns None.
"""

from __future__ import annotations

from pyapp.core.mux import Event, Multiplexer


def take(m: Multiplexer) -> list[Event]:
    """Every event waiting in ``m``."""
    return list(iter(m.next_event, None))


def feed(m: Multiplexer, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
    """``receive_frame``, then every event it left."""
    m.receive_frame(data, now)
    return take(m)


def feed_datagram(m: Multiplexer, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
    """``receive_datagram``, then every event it left."""
    m.receive_datagram(data, now)
    return take(m)


def fail(m: Multiplexer, reason: str) -> list[Event]:
    """``fail_all``, then every event it left."""
    m.fail_all(reason)
    return take(m)


def pack(frames: list[bytes], cuts: list[int]) -> list[bytes]:
    """Frames packed back to back into messages, a message ending after each index in ``cuts``
    (and after the last frame), the way a transmitter may pack them."""
    messages, current = [], b""
    for i, frame in enumerate(frames):
        current += frame
        if i in cuts or i == len(frames) - 1:
            messages.append(current)
            current = b""
    return messages
