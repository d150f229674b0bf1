"""Replay guards: strict counters and the sliding window (property-tested against a set model)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp.core.security.replay import ReplayWindow, StrictCounter
from pyapp.exceptions import LocalProtocolError

pytestmark = pytest.mark.unit


def accept(guard: ReplayWindow | StrictCounter, counter: int) -> bool:
    if guard.check(counter):
        guard.commit(counter)
        return True
    return False


def test_strict_counter() -> None:
    g = StrictCounter()
    assert [accept(g, c) for c in (0, 1, 1, 5, 3, 6)] == [True, True, False, True, False, True]


def test_window_accepts_reorder_once_and_rejects_old() -> None:
    w = ReplayWindow(1024)
    assert accept(w, 2000)
    assert accept(w, 1990) and not accept(w, 1990)
    assert accept(w, 2000 - 1023)  # oldest still inside the window
    assert not accept(w, 2000 - 1024)  # just outside
    assert accept(w, 5000)  # big jump clears the bitmap
    assert not accept(w, 2000)
    assert accept(w, 4999)


def test_rejected_counter_does_not_change_state() -> None:
    w = ReplayWindow(8)
    accept(w, 10)
    before = (w.highest, w._bits)
    assert not w.check(10) and not w.check(1)
    assert (w.highest, w._bits) == before


def test_commit_without_check_is_misuse() -> None:
    w = ReplayWindow(8)
    w.commit(3)
    with pytest.raises(LocalProtocolError):
        w.commit(3)
    with pytest.raises(LocalProtocolError):
        w.check(-1)
    with pytest.raises(LocalProtocolError):
        StrictCounter().check(2**64)


@settings(max_examples=300)
@given(
    size=st.integers(1, 70),
    counters=st.lists(st.integers(0, 300) | st.integers(0, 2**64 - 1), max_size=200),
)
def test_window_matches_set_model(size: int, counters: list[int]) -> None:
    w = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for c in counters:
        expected = c not in seen and c > highest - size
        assert accept(w, c) == expected, (c, highest)
        if expected:
            seen.add(c)
            highest = max(highest, c)


@given(st.lists(st.integers(0, 2**64 - 1), max_size=100))
def test_strict_matches_model(counters: list[int]) -> None:
    g = StrictCounter()
    highest = -1
    for c in counters:
        assert accept(g, c) == (c > highest)
        highest = max(highest, c)
