"""Perfect negotiation: who gives way when both peers send an offer at once (glare).

This is the decision logic of the W3C "perfect negotiation" pattern
(webrtc-pc §10.7), kept here so it can be tested without a browser. One peer is
*polite* (it rolls back its own offer and accepts the other's); the other is
*impolite* (it ignores the colliding offer). Roles are decided once per pair,
e.g. with :func:`is_polite` from the two peer ids, so they always differ.

Example::

    >>> state = NegotiationState(polite=False)
    >>> state.making_offer = True
    >>> state.on_remote_description("offer", signaling_state="have-local-offer")
    'ignore'
    >>> NegotiationState(polite=True).on_remote_description("offer", "have-local-offer")
    'accept'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyapp.exceptions import InvalidArgumentError

__all__ = ["NegotiationState", "is_polite", "Decision"]

Decision = Literal["accept", "ignore"]


def is_polite(local_id: str, remote_id: str) -> bool:
    """A deterministic, opposite role for each side: the larger id is polite."""
    if local_id == remote_id:
        raise InvalidArgumentError(
            f"a peer cannot negotiate with itself (both ids are {local_id!r}); give each side its own id")
    return local_id > remote_id


@dataclass
class NegotiationState:
    """Per-connection flags of perfect negotiation."""

    polite: bool
    """Whether this side gives way on glare."""
    making_offer: bool = False
    """True from ``setLocalDescription()`` (for an offer) until the offer is sent."""
    ignore_offer: bool = False
    """True after an offer was ignored, so its ICE candidates may fail silently."""
    setting_remote_answer: bool = False
    """True while ``setRemoteDescription(answer)`` runs (the state is briefly not stable)."""

    def on_remote_description(self, kind: str, signaling_state: str) -> Decision:
        """Decide what to do with a remote description of type ``kind``."""
        ready_for_offer = not self.making_offer and (
            signaling_state == "stable" or self.setting_remote_answer
        )
        collision = kind == "offer" and not ready_for_offer
        self.ignore_offer = not self.polite and collision
        return "ignore" if self.ignore_offer else "accept"

    def candidate_error_is_expected(self) -> bool:
        """An ``addIceCandidate`` failure is expected (and dropped) for an ignored offer."""
        return self.ignore_offer
