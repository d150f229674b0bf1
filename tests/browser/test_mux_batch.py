"""Many small messages through the multiplexer over real RTCDataChannels: ``send_many``,
packed frames and the ``messages`` event (page side: tests/pyodide/mux_batch_cases.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.mux_batch_cases"


def test_send_many_delivers_everything_in_order_in_few_messages(pypage):
    result = pypage.call(f"{PAGE}:send_many_delivers_everything_in_order_in_few_messages", timeout=120)
    for mode in ("messages", "message", "inbox"):
        r = result[mode]
        assert r["same"], (mode, r["count"])
        assert r["stats_sent"] == 6000, mode
        # Packed: ~140 small messages per 16 KiB frame, several frames per SCTP message.
        assert r["transport_messages"] < 6000 / 20, (mode, r)
    # The messages event hands over runs, not one message at a time.
    assert result["messages"]["batches"] < 6000 / 20
    assert result["messages"]["largest_batch"] > 50
    assert "exceeds the limit" in result["too_large"]["error"]
    assert result["too_large"]["first"] == repr(b"before")
