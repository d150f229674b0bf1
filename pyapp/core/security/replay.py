"""Replay protection for envelope counters (sans-I/O, no crypto).

Two policies, chosen per logical channel:

* :class:`StrictCounter` for reliable, ordered channels: each counter must be
  strictly greater than the last accepted one. Anything else is a replay (or a
  reorder, which an ordered channel never produces honestly).
* :class:`ReplayWindow` for unreliable/unordered channels: a sliding window of
  the last ``size`` counters (default 1024), each accepted at most once, in the
  spirit of RFC 6479 / RFC 4303 section 3.4.3. Counters older than the window
  are rejected because the window cannot remember them.

Both split the decision in two so a forged message cannot move the window:
``check(counter)`` before decryption, ``commit(counter)`` only after the
AEAD tag verified.

Example::

    from pyapp.core.security.replay import ReplayWindow

    w = ReplayWindow(size=4)
    for c in (5, 3, 5):
        if w.check(c):
            w.commit(c)
    assert w.check(4) and not w.check(5) and not w.check(1)
"""

from __future__ import annotations

from typing import Protocol

from pyapp.exceptions import LocalProtocolError

__all__ = ["DEFAULT_WINDOW", "ReplayGuard", "ReplayWindow", "StrictCounter"]

DEFAULT_WINDOW = 1024
MAX_COUNTER = 2**64 - 1


class ReplayGuard(Protocol):
    """What the envelope opener needs from a replay policy."""

    def check(self, counter: int) -> bool:
        """Would ``counter`` be accepted now? Does not change state."""
        ...

    def commit(self, counter: int) -> None:
        """Record ``counter`` as accepted (call only after it authenticated)."""
        ...


def _check_range(counter: int) -> None:
    if not 0 <= counter <= MAX_COUNTER:
        raise LocalProtocolError(f"counter {counter} is outside 0..2**64-1")


class StrictCounter:
    """Accept only counters strictly above the highest accepted so far."""

    def __init__(self) -> None:
        self.highest: int | None = None

    def check(self, counter: int) -> bool:
        _check_range(counter)
        return self.highest is None or counter > self.highest

    def commit(self, counter: int) -> None:
        if not self.check(counter):
            raise LocalProtocolError("commit of a counter that check() rejects")
        self.highest = counter


class ReplayWindow:
    """Sliding-window anti-replay: each counter once, within ``size`` of the highest.

    The window is a Python int used as a bitmap: bit ``i`` set means counter
    ``highest - i`` was accepted. Exact (no RFC 6479 block rounding), so the
    property test can compare it with a plain set.
    """

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise LocalProtocolError("window size must be at least 1")
        self.size = size
        self.highest: int | None = None
        self._bits = 0

    def check(self, counter: int) -> bool:
        _check_range(counter)
        if self.highest is None or counter > self.highest:
            return True
        offset = self.highest - counter
        if offset >= self.size:
            return False  # too old: we no longer know whether it was seen
        return not (self._bits >> offset) & 1

    def commit(self, counter: int) -> None:
        if not self.check(counter):
            raise LocalProtocolError("commit of a counter that check() rejects")
        if self.highest is None:
            self.highest, self._bits = counter, 1
        elif counter > self.highest:
            shift = counter - self.highest
            mask = (1 << self.size) - 1
            self._bits = ((self._bits << shift) | 1) & mask if shift < self.size else 1
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)
