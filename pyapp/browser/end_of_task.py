"""The page's end-of-task queue: work that must run once the current browser task ends.

The multiplexer pumps on it, so what a burst of sends queued leaves packed into
a few data-channel messages. It enters Python once per task through one
long-lived proxy; Pyodide's ``call_soon`` costs a promise-wrapped entry per
callback (measured ~200-360 us of main-thread time each in Chromium, against
~20 us for a JS callback into a long-lived proxy).

Example (in the page)::

    from pyapp.browser.end_of_task import end_of_task

    end_of_task().call(lambda: print("after this task"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import js

from pyapp.browser._ffi import ProxyOwner, _report, guard

__all__ = ["EndOfTask", "end_of_task"]


# One MessageChannel: a message is a task of its own, queued behind the current
# one (what Pyodide's call_soon uses too), without a timer's clamping.
_JS_END_OF_TASK = """
const channel = new MessageChannel();
let posted = false;
channel.port1.onmessage = () => { posted = false; run(); };
return {
  post() { if (!posted) { posted = true; channel.port2.postMessage(null); } },
  close() { channel.port1.onmessage = null; channel.port1.close(); channel.port2.close(); },
};"""


class EndOfTask:
    """Callbacks run, in order, in one browser task queued behind the current one.

    :meth:`call` queues a callback; the first one of a batch posts one
    MessageChannel message, and its handler (one proxy, made on first use and
    kept by the queue's :class:`~pyapp.browser._ffi.ProxyOwner` until
    :meth:`close`) runs every callback queued by then. A callback that raises
    is reported and the rest still run. A callback queued while the batch runs
    waits for the next task.
    """

    def __init__(self, name: str = "end-of-task queue", *, page_lifetime: bool = False) -> None:
        self.name = name
        self.page_lifetime = page_lifetime
        self._queue: list[Callable[[], None]] = []
        self._owner: ProxyOwner | None = None
        self._js: Any = None
        self.runs = 0
        """Tasks that ran a batch (one entry into Python each)."""
        self.calls = 0
        """Callbacks run."""

    def call(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current task ends."""
        self._queue.append(callback)
        if len(self._queue) == 1:
            if self._js is None:
                self._owner = ProxyOwner(self.name, page_lifetime=self.page_lifetime)
                self._js = js.Function.new("run", _JS_END_OF_TASK)(
                    self._owner.proxy(guard(self._run, self.name)))
            self._js.post()

    def _run(self) -> None:
        batch, self._queue = self._queue, []
        self.runs += 1
        for callback in batch:
            self.calls += 1
            try:
                callback()
            except Exception as exc:  # one callback's bug must not stop the others
                _report(self.name, exc)

    def close(self) -> None:
        """Release the proxy and the channel; callbacks still queued are dropped."""
        self._queue.clear()
        if self._js is not None:
            self._js.close()
            self._js = None
        if self._owner is not None:
            self._owner.close()
            self._owner = None


_SHARED: EndOfTask | None = None


def end_of_task() -> EndOfTask:
    """The page's shared :class:`EndOfTask` queue (its one proxy lives as long as the page)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = EndOfTask(page_lifetime=True)
    return _SHARED
