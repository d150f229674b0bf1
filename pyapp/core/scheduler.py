"""Send scheduling across logical channels: weighted deficit round robin.

Policy (see ``docs/scheduling.md``): channels are grouped by :class:`Priority`.
The four classes are served in a fixed cycle HIGH → MEDIUM → LOW → VERY_LOW;
on each visit a busy class earns ``weight × quantum`` bytes of credit (weights
8/4/2/1, quantum = one full 16 KiB fragment) and sends fragments while its
credit is positive; the overshoot of the last fragment is carried as debt.
Inside a class, channels take turns one fragment at a time. So when every
class is busy they share bandwidth 8:4:2:1 (nobody starves), and a HIGH message
waits behind at most the credit of the classes visited before it -- one
fragment when only a VERY_LOW bulk transfer is running.

Example::

    >>> from pyapp.core.scheduler import DeficitRoundRobin, Priority
    >>> drr = DeficitRoundRobin(quantum=100)
    >>> drr.add("bulk", Priority.VERY_LOW)
    >>> drr.add("chat", Priority.HIGH)
    >>> picked = []
    >>> for _ in range(10):
    ...     item = drr.select()
    ...     picked.append(item)
    ...     drr.served(item, 100, still_active=True)
    >>> picked.count("chat"), picked.count("bulk")
    (8, 2)
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

from pyapp.exceptions import InvalidArgumentError

__all__ = ["WEIGHTS", "DeficitRoundRobin", "Priority"]


class Priority(enum.IntEnum):
    """W3C ``RTCPriorityType``; the value is the OPEN frame's priority byte."""

    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3


#: Share of the send bandwidth each class gets when all are busy.
WEIGHTS: dict[Priority, int] = {
    Priority.HIGH: 8,
    Priority.MEDIUM: 4,
    Priority.LOW: 2,
    Priority.VERY_LOW: 1,
}

# Service cycle, as indices into the per-class tables (index = 3 - priority).
_CYCLE = (Priority.HIGH, Priority.MEDIUM, Priority.LOW, Priority.VERY_LOW)

T = TypeVar("T")


class DeficitRoundRobin(Generic[T]):
    """Deficit round robin over four priority classes, round robin inside a class.

    The caller owns the items (channels). Protocol: ``add`` an item when it has
    something to send, ``select()`` the next item to serve (the head of the
    current class), send one unit of it, then ``served(item, cost, still_active)``
    -- which charges the cost and rotates (or drops) the item. ``remove`` takes an
    item out at any time (e.g. a reset channel).
    """

    __slots__ = ("_current", "_deficit", "_quantum", "_queues")

    def __init__(self, quantum: int) -> None:
        if quantum <= 0:
            raise InvalidArgumentError(f"quantum must be a positive number of bytes, got {quantum!r}")
        self._queues: tuple[deque[T], ...] = tuple(deque() for _ in _CYCLE)
        self._quantum = tuple(WEIGHTS[p] * quantum for p in _CYCLE)
        self._deficit = [0, 0, 0, 0]
        self._current = 0

    def add(self, item: T, priority: Priority) -> None:
        """Make ``item`` eligible; it must not already be in the scheduler."""
        self._queues[3 - priority].append(item)

    def remove(self, item: T, priority: Priority) -> None:
        """Take ``item`` out (no-op when absent)."""
        queue = self._queues[3 - priority]
        try:
            queue.remove(item)
        except ValueError:
            return
        if not queue:
            self._deficit[3 - priority] = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues)

    def select(self) -> T | None:
        """The item to serve next, or None when nothing is eligible."""
        queues = self._queues
        deficit = self._deficit
        index = self._current
        queue = queues[index]
        if queue and deficit[index] > 0:
            return queue[0]
        # Move on through the cycle; a busy class earns its quantum on arrival.
        # Nine steps always suffice: the caller's quantum is at least the
        # largest single charge, so a class in debt is positive after at most
        # two quanta.
        for _ in range(9):
            if not queue:
                deficit[index] = 0
            index = (index + 1) & 3
            queue = queues[index]
            if queue:
                deficit[index] += self._quantum[index]
                if deficit[index] > 0:
                    self._current = index
                    return queue[0]
        self._current = index
        return None

    def select_high(self) -> T | None:
        """The head of the HIGH class out of turn, or None when it is idle.

        For a transmitter that can take only urgent frames just now (its transport
        is full of bulk data): HIGH becomes the current class, so ``served`` charges
        it, and the cycle goes on from there. The class that was current keeps its
        credit until its next visit.
        """
        queue = self._queues[0]
        if not queue:
            return None
        if self._current != 0:
            self._current = 0
            if self._deficit[0] <= 0:
                self._deficit[0] += self._quantum[0]
        return queue[0]

    def served(self, item: T, cost: int, still_active: bool) -> None:
        """Charge ``cost`` to the current class; rotate or drop ``item`` (its head)."""
        index = self._current
        self._deficit[index] -= cost
        queue = self._queues[index]
        if still_active:
            if len(queue) > 1:
                queue.rotate(-1)
        else:
            queue.popleft()
            if not queue:
                self._deficit[index] = 0
