"""A tiny synchronous event emitter (pure Python, no I/O).

Browser wrappers use it to turn JS events into Python callbacks. A callback
that raises does not stop the others; the error is handed to ``on_error``
(by default it is stored in ``errors`` so tests and the UI can see it) — it
never escapes into the browser's event loop.

Example::

    >>> e = Emitter()
    >>> seen = []
    >>> _ = e.on("state", seen.append)   # on() returns the callback (decorator use)
    >>> e.emit("state", "connected")
    >>> seen
    ['connected']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

Callback = Callable[..., Any]


class Emitter:
    """Register callbacks with :meth:`on`; :meth:`emit` calls them in order."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callback]] = defaultdict(list)
        self.errors: list[BaseException] = []
        self.on_error: Callable[[str, BaseException], None] | None = None

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
                if self.on_error is not None:
                    self.on_error(event, exc)
                else:
                    self.errors.append(exc)

    def clear(self) -> None:
        """Drop every callback (used when the owning object closes)."""
        self._handlers.clear()
