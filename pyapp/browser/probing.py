"""Answering the peer's quality probes on the reserved ``pyapp-probe`` channel.

A peer's :class:`~pyapp.browser.monitor.QualityMonitor` measures the path with
sequence-numbered pings (:mod:`pyapp.core.probe`) on UNRELIABLE logical
channels labelled :data:`PROBE_LABEL`. :func:`answer_probes` installs a
:class:`ProbeResponder` on a MuxSession that echoes them; the label is
reserved, so those channels never reach the application's ``accept()``.

Example (in the page)::

    from pyapp.browser.loopback import connected_pair
    from pyapp.browser.probing import answer_probes

    a, b = await connected_pair()
    a.multiplexer()
    responder = answer_probes(b.multiplexer())
    monitor = a.start_connection_quality_monitoring(1.0, probe=True)
    ...
    print(responder.echoed)
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from pyapp.core.probe import respond
from pyapp.exceptions import LocalProtocolError, ProbeError, PyAppError

if TYPE_CHECKING:
    from pyapp.browser.mux import MultiplexedChannel, MuxSession

__all__ = ["PROBE_LABEL", "ProbeResponder", "answer_probes"]

PROBE_LABEL = "pyapp-probe"
"""The reserved label of the probe channels."""


class ProbeResponder:
    """Echoes the pings that arrive on ``pyapp-probe`` channels of one MuxSession.

    Malformed probes are counted in ``errors`` (the last few in ``recent_errors``)
    and dropped; an echo the mux cannot queue is counted in ``send_failures``.
    """

    def __init__(self, session: MuxSession) -> None:
        self.session = session
        self.echoed = 0
        self.errors = 0
        self.send_failures = 0
        self.recent_errors: deque[ProbeError] = deque(maxlen=20)
        self.closed = False
        # The label is reserved: the session hands such channels (also those opened
        # before we were installed) to us, never to the application's accept().
        session.serve_reserved(PROBE_LABEL, self._on_channel)

    def _on_channel(self, channel: MultiplexedChannel) -> None:
        if self.closed:
            return
        channel.events.on("message", lambda data: self._on_ping(channel, data))

    def _on_ping(self, channel: MultiplexedChannel, data: bytes | str) -> None:
        try:
            if isinstance(data, str):
                raise ProbeError("probe arrived as a text message")
            echo = respond(data)
        except ProbeError as exc:
            self.errors += 1
            self.recent_errors.append(exc)
            return
        try:
            channel.send_nowait(echo)
        except (LocalProtocolError, PyAppError):
            self.send_failures += 1  # queue full or channel gone: the pinger counts a loss
            return
        self.echoed += 1

    def close(self) -> None:
        """Stop answering new probe channels (they stay reserved: never accepted)."""
        self.closed = True


def answer_probes(session: MuxSession) -> ProbeResponder:
    """Make ``session`` echo the peer's probes (idempotent: one responder per session).

    The responder is kept by the session's :class:`~pyapp.browser.connection.Connection`
    (``probe_responder``), which hands it on when the session resumes on a new
    connection.

    Example::

        answer_probes(conn.multiplexer())
    """
    connection = session.pc.connection
    responder = connection.probe_responder
    if responder is None or responder.closed or responder.session is not session:
        responder = connection.probe_responder = ProbeResponder(session)
    return responder
