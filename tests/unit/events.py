"""Test adapter for the cores whose inputs queue actions (``next_event()`` until None).

``returning_events(Core)`` is a subclass whose inputs (the methods marked by
:func:`pyapp.core._queue.emits`) return the list of events they queued, pulled
with ``next_event()`` exactly as the browser wrappers pull them. Most tests
read better that way; ``test_*_convention`` tests check the raw convention.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def drain(core: Any) -> list[Any]:
    """Every event ``core`` has queued, oldest first."""
    return list(iter(core.next_event, None))


def returning_events(cls: T) -> T:
    def adapter(name: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
            result = getattr(cls, name)(self, *args, **kwargs)
            assert result is None, f"{cls.__name__}.{name} returned {result!r}; inputs return None"
            return drain(self)

        method.__name__ = name
        return method

    inputs = {name: adapter(name) for name in dir(cls)
              if getattr(getattr(cls, name), "emits_events", False)}
    assert inputs, f"{cls.__name__} has no inputs marked with @emits"
    return type(cls.__name__, (cls,), inputs)  # type: ignore[return-value]
