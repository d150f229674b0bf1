"""The ReconnectSupervisor in real Pyodide: one redial in flight at a time."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_one_redial_at_a_time_and_each_attempt_ends_once(pypage):
    out = pypage.call("tests.pyodide.reconnect_cases:one_redial_at_a_time", timeout=60)
    # The second "transport dead" (as the old connection's association closes) starts nothing.
    assert out["after_double_report"] == {"redials": 1, "started": 1}, out
    # Attempt 1 outlived its deadline; attempt 2 followed one backoff later. Never two
    # dials at once, and attempt 1's end counted once (its own timeout, or the policy's
    # timer first and then a cancel): never against attempt 2.
    assert out["calls"]["max_active"] == 1, out
    assert out["calls"]["started"] == 2 and out["calls"]["cancelled"] == 1, out
    assert out["failures"] in ([], ["TimeoutError()"]), out
    assert out["redial_attempts"] == [1, 2], out
    first, second = (i for i, kind in enumerate(out["history"]) if kind == "Redial")
    assert out["history"][first + 1:second] == ["BackoffStarted"], out["history"]
    assert out["recovered"] and out["now_on_spare"] and not out["closed"], out
