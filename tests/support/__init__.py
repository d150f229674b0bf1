"""Test-only helpers shared by the unit tests (never imported by pyapp itself)."""

from __future__ import annotations

from collections.abc import Callable

from pyapp.core.security.handshake import Handshake, HandshakeState

Relay = Callable[[Handshake, bytes], bytes | None]


async def pump(a: Handshake, b: Handshake, *, now: float = 0.1, relay: Relay | None = None) -> None:
    """Carry messages between two started handshakes until neither has anything to send.

    ``relay(src, msg)`` may rewrite a message (a man in the middle) or drop it (``None``).
    """
    finished = (HandshakeState.DONE, HandshakeState.FAILED)
    while True:
        # Both sides transmit before either receives: the HELLOs cross on the wire.
        batches = [(src, dst, src.data_to_send()) for src, dst in ((a, b), (b, a))]
        if not any(msgs for _, _, msgs in batches):
            return
        for src, dst, msgs in batches:
            for msg in msgs:
                out = relay(src, msg) if relay else msg
                if out is not None and dst.state not in finished:
                    await dst.receive_message(out, now)
