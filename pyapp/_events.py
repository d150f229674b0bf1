"""A tiny synchronous event emitter (pure Python, no I/O).

Browser wrappers use it to turn JS events into Python callbacks. A callback
that raises does not stop the others and never escapes into the browser's
event loop: like :func:`pyapp.browser._ffi.guard`, the emitter reports it —
it is logged with its traceback (logger ``pyapp.events``, level ERROR; in the
page that reaches the console), counted in ``error_count``, the last few are
kept in ``recent_errors`` (bounded), and ``on_error`` is called when set.

Example::

    >>> e = Emitter()
    >>> seen = []
    >>> _ = e.on("state", seen.append)   # on() returns the callback (decorator use)
    >>> e.emit("state", "connected")
    >>> seen
    ['connected']
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

Callback = Callable[..., Any]

log = logging.getLogger("pyapp.events")

RECENT_ERRORS = 16
"""How many callback errors an emitter keeps in ``recent_errors``."""


class Emitter:
    """Register callbacks with :meth:`on`; :meth:`emit` calls them in order."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callback]] = defaultdict(list)
        self.error_count = 0
        """callback errors since the emitter was made"""
        self.recent_errors: deque[BaseException] = deque(maxlen=RECENT_ERRORS)
        """the last few callback errors, oldest first"""
        self.on_error: Callable[[str, BaseException], None] | None = None
        """called with (event, error) for every callback error, after it is logged"""

    def on(self, event: str, callback: Callback) -> Callback:
        """Call ``callback(*args)`` on every ``event``; returns it (usable as a decorator)."""
        self._handlers[event].append(callback)
        return callback

    def off(self, event: str, callback: Callback) -> None:
        """Stop calling ``callback`` for ``event`` (no error if it was not registered)."""
        handlers = self._handlers.get(event, [])
        if callback in handlers:
            handlers.remove(callback)

    def has_listeners(self, event: str) -> bool:
        """Whether any callback is registered for ``event``."""
        return bool(self._handlers.get(event))

    def emit(self, event: str, *args: Any) -> None:
        """Call every callback registered for ``event`` with ``args``, in registration order."""
        for callback in list(self._handlers.get(event, ())):
            try:
                callback(*args)
            except Exception as exc:  # a user callback must not break the emitter
                self._report(event, callback, exc)

    def _report(self, event: str, callback: Callback, exc: Exception) -> None:
        self.error_count += 1
        self.recent_errors.append(exc)
        name = getattr(callback, "__qualname__", None) or repr(callback)
        log.error("pyapp: error in the %r callback %s: %s", event, name, exc, exc_info=exc)
        if self.on_error is not None:
            self.on_error(event, exc)

    def clear(self) -> None:
        """Drop every callback (used when the owning object closes)."""
        self._handlers.clear()
