"""Fuzz the multiplexer's receive path: only typed, reported errors are allowed.

Valid frames are recorded from a scripted conversation (OPEN, ACCEPT, text,
binary and multi-fragment DATA on reliable/unreliable channels, ACK, CLOSE,
RESET), then fed to a fresh receiver either as they are (out of order,
duplicated) or mutated: bytes flipped, truncated, extended, header fields
overwritten, frames spliced, or pure garbage. ``receive_frame`` must never
raise and leave only typed events (``next_event``), timers included; any
exception is a bug.

Example::

    >>> from benchmarks.fuzz_mux import run_fuzz
    >>> run_fuzz(200, seed=1)
    200

Run ``python benchmarks/fuzz_mux.py [cases] [seed]`` for the long run (1,000,000
cases by default); it prints the count, the time and cases/s.
"""

from __future__ import annotations

import logging
import random
import struct
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``pyapp`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyapp.core.framing import HEADER, HEADER_SIZE, encode_ack
from pyapp.core.mux import (
    Event,
    Multiplexer,
    OutgoingFrame,
    Priority,
    Reliability,
    Role,
)
from tests.support.mux_pull import feed

__all__ = ["FuzzFailure", "build_corpus", "run_fuzz"]

_U32 = struct.Struct("!I")





class FuzzFailure(AssertionError):
    """``receive_frame`` or ``handle_timer`` raised, or left something other than events."""


def _drain(m: Multiplexer) -> list[OutgoingFrame]:
    out = []
    while (frame := m.next_frame(0.0)) is not None:
        out.append(frame)
    return out


def _pump(a: Multiplexer, b: Multiplexer) -> None:
    while True:
        fa, fb = _drain(a), _drain(b)
        if not fa and not fb:
            return
        for f in fa:
            feed(b, f.data, 0.0)
        for f in fb:
            feed(a, f.data, 0.0)


def _setup() -> tuple[Multiplexer, Multiplexer]:
    """A connected pair with one channel of each kind, opened by both sides."""
    kw = {"max_message_bytes": 200_000, "receive_buffer_limit": 150_000, "reorder_window": 4}
    a = Multiplexer(Role.INITIATOR, **kw)
    b = Multiplexer(Role.RESPONDER, **kw)
    a.open_channel("rel", Reliability.RELIABLE, Priority.HIGH)  # 0
    a.open_channel("unrel", Reliability.UNRELIABLE, Priority.LOW)  # 2
    a.open_channel("ordered-unrel", Reliability(ordered=True, max_retransmits=1))  # 4
    b.open_channel("b-rel", Reliability.RELIABLE, Priority.VERY_LOW)  # 1
    _pump(a, b)
    return a, b


def build_corpus() -> list[bytes]:
    """Valid frames a fresh ``_setup()`` receiver (``b``) may see from ``a``."""
    a, _b = _setup()
    corpus: list[bytes] = []
    for cid in (0, 2, 4):
        for msg in (b"x", "text é", b"", bytes(range(256)) * 150):
            a.send(cid, msg, 0.0)
    a.open_channel("late", Reliability(max_packet_life_time=50), Priority.MEDIUM)  # 6
    a.send(6, b"late data", 0.0)
    corpus += [f.data for f in _drain(a)]
    a.send(1, b"reply", 0.0)
    a.close_channel(0)
    a.reset_channel(2, "fuzz reset")
    corpus += [f.data for f in _drain(a)]  # DATA on 1, CLOSE 0, RESET 2
    corpus.append(encode_ack(1, 0))  # the receiver has sent nothing on 1 yet
    return corpus


def _fix_length(data: bytes) -> bytes:
    """Make the length field agree, so the mutation reaches the deeper checks."""
    if len(data) < HEADER_SIZE or len(data) - HEADER_SIZE > 0xFFFF:
        return data
    fixed = bytearray(data)
    fixed[14:16] = (len(data) - HEADER_SIZE).to_bytes(2, "big")
    return bytes(fixed)


def _mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    base = rng.choice(corpus)
    kind = rng.randrange(10)
    if kind <= 1:
        return base  # valid frame, but out of order / duplicated
    if kind == 2:  # flip bytes, mostly in the header
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(min(len(data), HEADER_SIZE + 8)) if rng.random() < 0.8 else \
                rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data) if rng.random() < 0.3 else _fix_length(bytes(data))
    if kind == 3:
        cut = base[:rng.randrange(len(base) + 1)]
        return cut if rng.random() < 0.5 else _fix_length(cut)
    if kind == 4:
        longer = base + rng.randbytes(rng.randint(1, 40))
        return longer if rng.random() < 0.5 else _fix_length(longer)
    if kind == 5:  # overwrite one header field with a random but plausible value
        fields = list(HEADER.unpack_from(base))
        i = rng.randrange(len(fields) - 1)
        limits = (3, 9, 12, 16, 2, 8, 8)
        fields[i] = rng.randrange(limits[i]) if rng.random() < 0.7 else rng.getrandbits(8)
        if i in (5, 6) and rng.random() < 0.3:
            fields[i] = rng.getrandbits(32)
        return HEADER.pack(*fields) + base[HEADER_SIZE:]
    if kind == 6:  # splice two frames
        other = rng.choice(corpus)
        return _fix_length(base[:rng.randrange(len(base) + 1)] + other[rng.randrange(len(other) + 1):])
    if kind == 7:
        return rng.randbytes(rng.randrange(64))
    if kind == 8:  # a correct header around a random payload
        return _fix_length(base[:HEADER_SIZE] + rng.randbytes(rng.randrange(24)))
    # re-sequence a DATA/ACK frame
    data = bytearray(base)
    _U32.pack_into(data, 6, rng.choice((0, 1, 2, 3, 0xFFFFFFFF, rng.getrandbits(32))))
    return bytes(data)


def run_fuzz(cases: int, seed: int) -> int:
    """Feed ``cases`` valid/mutated frames to fresh receivers; return how many ran.

    Raises :class:`FuzzFailure` (with the seed, case number and frame) on the first
    untyped exception or malformed return value.
    """
    # Every case is a protocol error by design: keep the (rate-limited, per
    # multiplexer) warnings of logger "pyapp.mux" out of the run's output.
    logger = logging.getLogger("pyapp.mux")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _run_fuzz(cases, seed)
    finally:
        logger.setLevel(level)


def _run_fuzz(cases: int, seed: int) -> int:
    rng = random.Random(seed)
    corpus = build_corpus()
    receiver: Multiplexer | None = None
    for case in range(cases):
        if receiver is None or case % 64 == 0:
            receiver = _setup()[1]
        frame = _mutate(rng, corpus)
        try:
            if rng.random() < 0.05:  # let some state build up: a valid run first
                start = rng.randrange(len(corpus))
                for valid in corpus[start:start + rng.randint(1, 6)]:
                    feed(receiver, valid, float(case))
            events = feed(receiver, frame, float(case))
            if rng.random() < 0.1:
                _drain(receiver)
            if rng.random() < 0.002:
                receiver.transport_lost()
                receiver.transport_restored()
            if rng.random() < 0.02:  # timers: lifetimes, reorder timeout, drain deadline
                deadline = receiver.get_timer()
                if deadline is not None and type(deadline) is not float:
                    raise FuzzFailure(f"seed {seed} case {case}: get_timer() gave {deadline!r}")
                receiver.handle_timer(float(case) + rng.random() * 10.0)
                events += list(iter(receiver.next_event, None))
        except Exception as exc:
            raise FuzzFailure(
                f"seed {seed} case {case}: {type(exc).__name__}: {exc}\n"
                f"frame {frame.hex()}\n{traceback.format_exc()}"
            ) from exc
        if type(events) is not list or not all(isinstance(e, Event) for e in events):
            raise FuzzFailure(f"seed {seed} case {case}: bad return value {events!r}")
    return cases


def main(argv: list[str]) -> None:
    cases = int(argv[1]) if len(argv) > 1 else 1_000_000
    seed = int(argv[2]) if len(argv) > 2 else 0
    start = time.perf_counter()
    ran = run_fuzz(cases, seed)
    elapsed = time.perf_counter() - start
    print(f"{ran} cases in {elapsed:.1f} s ({ran / elapsed:,.0f} cases/s), no untyped errors")


if __name__ == "__main__":
    main(sys.argv)
