"""The event queue behind ``next_event()`` in the sans-I/O cores that emit actions.

pyapp's cores share one convention: inputs return nothing (or only their direct
result), and what follows from them is pulled with ``next_event()`` until it
returns None. :func:`emits` turns a method that computes its actions into an
input that queues them; :class:`EventQueue` holds them.

Example::

    >>> from pyapp.core._queue import EventQueue, emits
    >>> class Counter:
    ...     def __init__(self) -> None:
    ...         self._events: EventQueue[str] = EventQueue()
    ...     @emits
    ...     def bump(self, n: int) -> list[str]:
    ...         return [f"tick {i}" for i in range(n)]
    ...     def next_event(self) -> str | None:
    ...         return self._events.next_event()
    >>> c = Counter()
    >>> c.bump(2) is None
    True
    >>> [c.next_event(), c.next_event(), c.next_event()]
    ['tick 0', 'tick 1', None]
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Concatenate, Generic, ParamSpec, Protocol, TypeVar

__all__ = ["EventQueue", "emits"]

E = TypeVar("E")
P = ParamSpec("P")


class EventQueue(Generic[E]):
    """FIFO of events waiting to be pulled."""

    def __init__(self) -> None:
        self._queue: deque[E] = deque()

    def extend(self, events: Iterable[E]) -> None:
        self._queue.extend(events)

    def next_event(self) -> E | None:
        """The oldest event, or None when there is none."""
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


class _HasEvents(Protocol[E]):
    _events: EventQueue[E]


S = TypeVar("S", bound=_HasEvents)


def emits(method: Callable[Concatenate[S, P], Iterable[E]]) -> Callable[Concatenate[S, P], None]:
    """Make ``method`` queue the actions it computes (on ``self._events``) and return None."""

    @functools.wraps(method)
    def input_(self: S, /, *args: P.args, **kwargs: P.kwargs) -> None:
        self._events.extend(method(self, *args, **kwargs))

    input_.emits_events = True  # type: ignore[attr-defined]  # marks an input for tools and tests
    return input_
