"""A refusal reaches the page: the browser client raises / emits SignalingRefusedError.

Real Pyodide in headless Chromium against the real server process (the shared
``server`` fixture, default limits). The page side is tests/pyodide/refusal_cases.py.
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.refusal_cases"


def test_refused_join_raises_a_typed_error(pypage) -> None:
    room = "full-" + uuid.uuid4().hex[:8]
    result = pypage.call(f"{PAGE}:join_full_room", room=room, members=16, timeout=60)
    assert result["code"] == "room-full" and result["ref"] == "join", result
    assert result["close_code"] is None and "full" in result["text"], result
    assert "room-full" in result["str"], result


def test_flooding_page_sees_the_error_and_the_explained_close(pypage) -> None:
    room = "flood-" + uuid.uuid4().hex[:8]
    # 400 signals: past the burst (100) and the strikes (20).
    result = pypage.call(f"{PAGE}:flood", room=room, signals=400, timeout=60)
    assert result["state"] == "closed", result
    codes = [e["code"] for e in result["errors"]]
    assert all(e["type"] == "SignalingRefusedError" for e in result["errors"]), result
    assert "rate-limited" in codes and "flooding" in codes, codes
    # The close itself, with its reason, became the last error: code 1008.
    assert result["errors"][-1] == {"type": "SignalingRefusedError", "code": "flooding",
                                    "close_code": 1008}, result
    assert result["last"] == "flooding"
