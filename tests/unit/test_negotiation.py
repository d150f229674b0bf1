from __future__ import annotations

import pytest

from pyapp.core.negotiation import NegotiationState, is_polite

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("polite", "making_offer", "state", "setting_answer", "kind", "expected"),
    [
        (False, False, "stable", False, "offer", "accept"),
        (True, False, "stable", False, "offer", "accept"),
        (False, True, "have-local-offer", False, "offer", "ignore"),   # glare, impolite ignores
        (True, True, "have-local-offer", False, "offer", "accept"),    # glare, polite rolls back
        (False, False, "have-local-offer", False, "offer", "ignore"),
        (False, False, "have-local-offer", True, "offer", "accept"),   # answer being applied
        (False, True, "have-local-offer", False, "answer", "accept"),  # answers never collide
    ],
)
def test_glare_table(polite, making_offer, state, setting_answer, kind, expected):
    s = NegotiationState(polite=polite, making_offer=making_offer,
                         setting_remote_answer=setting_answer)
    assert s.on_remote_description(kind, state) == expected
    assert s.candidate_error_is_expected() == (expected == "ignore")


def test_roles_are_opposite_and_deterministic():
    assert is_polite("b", "a") is True
    assert is_polite("a", "b") is False
    with pytest.raises(ValueError):
        is_polite("a", "a")


def test_ignore_flag_resets_on_next_accepted_offer():
    s = NegotiationState(polite=False, making_offer=True)
    assert s.on_remote_description("offer", "have-local-offer") == "ignore"
    s.making_offer = False
    assert s.on_remote_description("offer", "stable") == "accept"
    assert s.ignore_offer is False
