"""Micro-benchmark of the multiplexer's per-fragment cost in CPython.

Pushes one large message (64 MiB by default) through ``next_frame`` on the
sender and ``receive_frame`` on the receiver, separately timed, and a mixed
run of small messages; prints fragments/s and MB/s. The browser target is
~15 MB/s, i.e. ~1,000 16 KiB fragments/s, so anything in the 100k/s range
leaves the mux a negligible share of the per-fragment budget.

Example::

    >>> from benchmarks.mux_cpython import bench_bulk
    >>> result = bench_bulk(size=1 << 20)
    >>> result["fragments"]
    64
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyapp.core.mux import MessageReceived, Multiplexer, Priority, Reliability, Role

__all__ = ["bench_bulk", "bench_recv_fragments", "bench_small"]


def _pair(**options: int) -> tuple[Multiplexer, Multiplexer, int]:
    a = Multiplexer(Role.INITIATOR, max_message_size=262144, **options)
    b = Multiplexer(Role.RESPONDER, max_message_size=262144, **options)
    cid = a.open_channel("bulk", Reliability.RELIABLE, Priority.MEDIUM)
    for _ in range(2):
        for src, dst in ((a, b), (b, a)):
            while (f := src.next_frame(0.0)) is not None:
                dst.receive_frame(f.data, 0.0)
            while dst.next_event() is not None:
                pass
    return a, b, cid


def bench_bulk(size: int = 64 << 20) -> dict[str, float]:
    """One ``size``-byte message, 16 KiB fragments.

    ``send``: next_frame with the frames discarded (as the adapter hands each to
    JS at once); ``recv``: receive_frame over pre-built frames, reassembly and
    the final join included; ``baseline``: the unavoidable header+payload
    concatenation alone, for comparison.
    """
    a, b, cid = _pair()
    # Written memory: bytes(size) would be untouched calloc pages, whose first
    # read page-faults and would be charged to the mux.
    payload = b"\x5a" * size
    t0 = time.perf_counter()
    a.send(cid, payload, 0.0)
    n = 0
    while a.next_frame(0.0) is not None:
        n += 1
    t1 = time.perf_counter()
    a2, _, cid2 = _pair()
    a2.send(cid2, payload, 0.0)
    frames = []
    while (f := a2.next_frame(0.0)) is not None:
        frames.append(f.data)
    t2 = time.perf_counter()
    delivered = 0
    receive, next_event = b.receive_frame, b.next_event
    for data in frames:
        receive(data, 0.0)
        while (event := next_event()) is not None:
            if isinstance(event, MessageReceived):
                delivered += len(event.data)
    t3 = time.perf_counter()
    assert delivered == size and n == len(frames)
    view = memoryview(payload)
    header = bytes(16)
    for offset in range(0, size, 16384):
        header + view[offset:offset + 16384]
    t4 = time.perf_counter()
    return {
        "fragments": n,
        "send_fragments_per_s": n / (t1 - t0),
        "send_us_per_fragment": (t1 - t0) / n * 1e6,
        "recv_fragments_per_s": n / (t3 - t2),
        "recv_us_per_fragment": (t3 - t2) / n * 1e6,
        "baseline_concat_us_per_fragment": (t4 - t3) / n * 1e6,
    }


def bench_recv_fragments(count: int = 4096) -> dict[str, float]:
    """receive_frame on 16 KiB single-fragment messages: per-fragment cost without the big join.

    No in-flight window (``inflight_limit=0``): all ``count`` frames are built up
    front, without ACKs coming back (with the default window only the first
    256 KiB would be).
    """
    a, b, cid = _pair(inflight_limit=0)
    a._send_limit = 1 << 30  # benchmark only: queue everything up front
    chunk = b"\x5a" * 16384
    for _ in range(count):
        a.send(cid, chunk, 0.0)
    frames = []
    while (f := a.next_frame(0.0)) is not None:
        frames.append(f.data)
    assert len(frames) == count
    receive, next_event = b.receive_frame, b.next_event
    t0 = time.perf_counter()
    for data in frames:
        receive(data, 0.0)
        while next_event() is not None:
            pass
    elapsed = time.perf_counter() - t0
    return {"recv_fragments_per_s": count / elapsed, "recv_us_per_fragment": elapsed / count * 1e6}


def bench_small(count: int = 200_000, size: int = 100) -> dict[str, float]:
    """Many small messages (one fragment each) round trip, ACKs included."""
    a, b, cid = _pair()
    payload = bytes(size)
    t0 = time.perf_counter()
    for i in range(count):
        a.send(cid, payload, float(i))
        f = a.next_frame(float(i))
        assert f is not None
        b.receive_frame(f.data, float(i))
        while b.next_event() is not None:
            pass
        ack = b.next_frame(float(i))
        assert ack is not None
        a.receive_frame(ack.data, float(i))
        while a.next_event() is not None:
            pass
    elapsed = time.perf_counter() - t0
    return {"messages_per_s": count / elapsed, "us_per_message_round_trip": elapsed / count * 1e6}


if __name__ == "__main__":
    bulk = bench_bulk()
    print("64 MiB bulk:", {k: round(v, 2) for k, v in bulk.items()})
    recv = bench_recv_fragments()
    print("16 KiB messages received:", {k: round(v, 2) for k, v in recv.items()})
    small = bench_small()
    print("100-byte messages (+ACK):", {k: round(v, 2) for k, v in small.items()})
