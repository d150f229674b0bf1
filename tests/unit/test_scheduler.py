"""Deficit round robin: weights, no starvation, bounded latency, round robin in a class."""

from __future__ import annotations

import doctest
from collections import Counter

import pytest

import pyapp.core.scheduler as scheduler
from pyapp.core.scheduler import WEIGHTS, DeficitRoundRobin, Priority

pytestmark = pytest.mark.unit

Q = 1000


def _run(drr: DeficitRoundRobin[str], rounds: int, cost: int = Q) -> list[str]:
    out = []
    for _ in range(rounds):
        item = drr.select()
        assert item is not None
        out.append(item)
        drr.served(item, cost, still_active=True)
    return out


def test_all_busy_share_by_weight() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    for p in Priority:
        drr.add(p.name, p)
    counts = Counter(_run(drr, 15 * 100))
    assert counts == {p.name: WEIGHTS[p] * 100 for p in Priority}


def test_lowest_class_is_never_starved() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    drr.add("high", Priority.HIGH)
    drr.add("low", Priority.VERY_LOW)
    picks = _run(drr, 900)
    # In every window of 9 consecutive frames the VERY_LOW class gets one.
    for start in range(0, 900 - 9):
        assert "low" in picks[start:start + 9]


def test_high_waits_at_most_one_fragment_behind_bulk() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    drr.add("bulk", Priority.VERY_LOW)
    _run(drr, 7)
    drr.add("chat", Priority.HIGH)
    assert "chat" in _run(drr, 2)


def test_round_robin_inside_a_class_and_remove() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    for name in "abc":
        drr.add(name, Priority.MEDIUM)
    assert _run(drr, 6) == list("abcabc")
    drr.remove("b", Priority.MEDIUM)
    drr.remove("zzz", Priority.MEDIUM)  # absent: no-op
    assert _run(drr, 4) == list("acac")
    assert len(drr) == 2


def test_served_inactive_drops_item_and_empty_select_is_none() -> None:
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    assert drr.select() is None
    drr.add("x", Priority.LOW)
    assert drr.select() == "x"
    drr.served("x", 10, still_active=False)
    assert drr.select() is None and len(drr) == 0


def test_large_charges_do_not_stall() -> None:
    # A charge up to the quantum (one full fragment with header) never leaves a
    # lone class without a pick.
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(Q)
    drr.add("v", Priority.VERY_LOW)
    assert _run(drr, 50, cost=Q) == ["v"] * 50


def test_bad_quantum() -> None:
    with pytest.raises(ValueError):
        DeficitRoundRobin(0)


def test_module_docstring_example_runs() -> None:
    assert doctest.testmod(scheduler).failed == 0
