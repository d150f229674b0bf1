"""How much bulk data to keep in a transport's send buffer: enough to keep it busy, no more.

The browser's send buffer of a data channel (``bufferedAmount``) is one FIFO
per SCTP stream. Whatever sits there is out of the multiplexer's hands: a HIGH
message sent now waits behind all of it (Chromium has no SCTP message
interleaving by default, and all reliable logical channels share one stream).
So, as HTTP/2 servers do with ``TCP_NOTSENT_LOWAT``, the transmitter keeps that
buffer small and lets the scheduler decide what goes next -- but not so small
that the buffer runs dry before the page refills it, which would cost
throughput. How small that is depends on the machine (how long a refill takes
after ``bufferedamountlow``), so it is measured, not fixed:

* each time the buffer fell to its low-water mark and the page refills it, the
  transmitter reports how much was still buffered (:meth:`BufferTuner.refilled`);
* nothing left twice in a row (it ran dry; SCTP still has packets in flight
  after one such refill, but not after a run of them): both marks grow by half,
  up to ``max_high``;
* more than half the low-water mark left, 16 times in a row: the marks shrink
  by an eighth, down to ``min_high`` (a slow decay back after a busy spell).

Control frames and HIGH channels' DATA are not bound by these marks (see
``URGENT_HEADROOM`` in :mod:`pyapp.browser.mux_transport`).

Example::

    >>> from pyapp.core.mux_buffer import BufferTuner
    >>> tuner = BufferTuner(min_high=64 * 1024, max_high=256 * 1024)
    >>> tuner.high, tuner.low
    (65536, 24576)
    >>> tuner.refilled(0)           # ran dry before the refill
    False
    >>> tuner.refilled(0)           # and again: grow
    True
    >>> tuner.high, tuner.low
    (98304, 36864)
"""

from __future__ import annotations

from pyapp.exceptions import InvalidArgumentError

__all__ = ["BufferTuner"]

_LOW_SHARE = 3 / 8  # low-water mark = 3/8 of the high-water mark
_SHRINK_AFTER = 16  # comfortable refills in a row before shrinking


class BufferTuner:
    """High/low-water marks for a transport's send buffer, tuned by refill outcomes.

    :param min_high: smallest (and initial) high-water mark, in bytes.
    :param max_high: largest high-water mark, in bytes.
    """

    __slots__ = ("_comfortable", "_dry", "high", "low", "max_high", "min_high")

    def __init__(self, min_high: int = 64 * 1024, max_high: int = 256 * 1024) -> None:
        if not isinstance(min_high, int) or not isinstance(max_high, int) or not 0 < min_high <= max_high:
            raise InvalidArgumentError(
                f"need 0 < min_high <= max_high (bytes), got min_high={min_high!r}, max_high={max_high!r}")
        self.min_high = min_high
        self.max_high = max_high
        self.high = min_high
        """current high-water mark: bulk data is sent while the buffer is below it"""
        self.low = int(min_high * _LOW_SHARE)
        """current low-water mark: the browser's ``bufferedamountlow`` threshold"""
        self._comfortable = 0
        self._dry = 0

    def refilled(self, buffered: int) -> bool:
        """The buffer fell to the low-water mark and holds ``buffered`` bytes as the page
        refills it. Returns True when the marks changed (apply ``low`` to the browser)."""
        if buffered <= 0:
            self._comfortable = 0
            self._dry += 1
            if self._dry < 2 or self.high >= self.max_high:
                return False
            self._dry = 0
            self._set(min(self.max_high, self.high + self.high // 2))
            return True
        self._dry = 0
        if buffered * 2 <= self.low:
            self._comfortable = 0
            return False
        self._comfortable += 1
        if self._comfortable < _SHRINK_AFTER or self.high <= self.min_high:
            return False
        self._comfortable = 0
        self._set(max(self.min_high, self.high - self.high // 8))
        return True

    def _set(self, high: int) -> None:
        self.high = high
        self.low = int(high * _LOW_SHARE)

    def __repr__(self) -> str:
        return f"BufferTuner(high={self.high}, low={self.low}, range={self.min_high}..{self.max_high})"
