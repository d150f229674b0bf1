"""The FFI boundary: proxy ownership, JS→Python error translation, option objects.

Rules this module enforces for the rest of ``pyapp.browser``:

* Every ``create_proxy`` belongs to a :class:`ProxyOwner`, which removes the
  event listener and destroys the proxy when the owner closes. ``live_proxies()``
  counts what is still alive, so tests can check that a churn of connections
  returns to its baseline.
* A JS error (a rejected Promise or a thrown exception) becomes a pyapp
  exception at this boundary (:func:`call_js`, :func:`await_js`), with the JS
  error's ``name`` kept.
* Python callbacks invoked from JS never let an exception escape into the
  browser's event loop: :func:`guard` logs it and reports it to a handler.

Example::

    owner = ProxyOwner("demo")
    owner.listen(js_channel, "message", on_message)
    ...
    owner.close()          # removes the listener, destroys the proxy
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import js
from pyodide.ffi import JsException, create_proxy, jsnull, to_js

from pyapp.exceptions import (
    BrowserError,
    ConnectionClosedError,
    PyAppError,
    UnsupportedFeatureError,
)

__all__ = [
    "ProxyOwner",
    "live_proxies",
    "js_object",
    "await_js",
    "call_js",
    "translate_js_error",
    "guard",
    "spawn",
    "to_bytes",
    "to_js_bytes",
    "is_null",
    "opt",
]

_LIVE = 0
_FIELD_LISTENERS: dict[str, Any] = {}


def _field_listener(field: str) -> Any:
    maker = _FIELD_LISTENERS.get(field)
    if maker is None:
        maker = js.Function.new("cb", f"return (event) => cb(event.{field});")
        _FIELD_LISTENERS[field] = maker
    return maker


def live_proxies() -> int:
    """Number of proxies created through a :class:`ProxyOwner` and not yet destroyed.

    Owners made with ``page_lifetime=True`` (one per page, e.g. the shared
    end-of-task queue: made on first use, kept while the page lives) are not
    counted, so a leak check around an operation sees only what it made.
    """
    return _LIVE


class ProxyOwner:
    """Owns JS event listeners and callback proxies; :meth:`close` releases all of them."""

    def __init__(self, name: str, *, page_lifetime: bool = False) -> None:
        self.name = name
        self.page_lifetime = page_lifetime
        self._listeners: list[tuple[Any, str, Any]] = []
        self._proxies: list[Any] = []
        self.closed = False

    def proxy(self, fn: Callable[..., Any]) -> Any:
        """A JS-callable proxy of ``fn`` owned by this object."""
        global _LIVE
        if self.closed:
            raise ConnectionClosedError(f"{self.name} is closed")
        p = create_proxy(fn)
        self._proxies.append(p)
        if not self.page_lifetime:
            _LIVE += 1
        return p

    def listen(self, target: Any, event: str, fn: Callable[[Any], Any], *,
               field: str | None = None) -> None:
        """``target.addEventListener(event, fn)`` until this owner closes.

        With ``field``, a small JS closure passes ``event[field]`` instead of the
        event, which saves an FFI round trip per event on hot paths (messages).
        """
        p = self.proxy(guard(fn, f"{self.name} {event} handler"))
        listener = p if field is None else _field_listener(field)(p)
        target.addEventListener(event, listener)
        self._listeners.append((target, event, listener))

    def close(self) -> None:
        """Remove every listener and destroy every proxy. Safe to call twice."""
        global _LIVE
        if self.closed:
            return
        self.closed = True
        for target, event, p in self._listeners:
            try:
                target.removeEventListener(event, p)
            except JsException:
                pass  # the target is already gone; the proxy is destroyed below all the same
        self._listeners.clear()
        for p in self._proxies:
            p.destroy()
            if not self.page_lifetime:
                _LIVE -= 1
        self._proxies.clear()


def translate_js_error(exc: BaseException) -> PyAppError:
    """Map a JS error to a pyapp exception (keeping the JS error's name)."""
    name = str(getattr(exc, "name", "") or type(exc).__name__)
    message = str(getattr(exc, "message", "") or exc)
    if name == "InvalidStateError":
        return ConnectionClosedError(f"{name}: {message}")
    if name in ("NotSupportedError", "NotFoundError") and "not supported" in message.lower():
        return UnsupportedFeatureError(f"{name}: {message}")
    return BrowserError(name, message)


async def await_js(awaitable: Any) -> Any:
    """Await a JS Promise, turning its rejection into a pyapp exception."""
    try:
        return await awaitable
    except JsException as exc:
        raise translate_js_error(exc) from None


def call_js(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a JS function, turning a thrown JS error into a pyapp exception."""
    try:
        return fn(*args)
    except JsException as exc:
        raise translate_js_error(exc) from None


def js_object(d: dict[str, Any]) -> Any:
    """A plain JS object from a dict (nested dicts and lists converted too)."""
    return to_js(d, dict_converter=js.Object.fromEntries)


def to_bytes(value: Any) -> bytes:
    """Bytes from an ArrayBuffer / typed array proxy."""
    return bytes(value.to_bytes())


def to_js_bytes(data: bytes | bytearray | memoryview) -> Any:
    """A JS Uint8Array holding a copy of ``data``."""
    return to_js(data)


def _report(where: str, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    js.console.error(f"pyapp: error in {where}:\n{text}")
    handler: Any = getattr(js.globalThis, "pyappShowError", None)
    if not is_null(handler):
        try:
            handler(f"{where}: {exc}")
        except JsException:
            pass  # the page has no error banner (e.g. a bare test page)


def guard(fn: Callable[..., Any], where: str) -> Callable[..., Any]:
    """Wrap a callback invoked from JS so no exception escapes into the event loop."""

    def wrapper(*args: Any) -> Any:
        try:
            result = fn(*args)
        except Exception as exc:
            _report(where, exc)
            return None
        if asyncio.iscoroutine(result):
            return spawn(result, where)
        return result

    return wrapper


_TASKS: set[asyncio.Task[Any]] = set()


def spawn(coro: Awaitable[Any], where: str) -> asyncio.Task[Any]:
    """Run a coroutine as a task whose failure is reported, never lost."""
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    _TASKS.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _TASKS.discard(t)
        if not t.cancelled() and t.exception() is not None:
            _report(where, t.exception())  # type: ignore[arg-type]

    task.add_done_callback(done)
    return task


def is_null(value: Any) -> bool:
    """True for JS ``undefined`` (None in Python) and JS ``null`` (``jsnull``)."""
    return value is None or value is jsnull


def opt(value: Any) -> Any:
    """``value`` with JS ``null`` mapped to None."""
    return None if value is jsnull else value
