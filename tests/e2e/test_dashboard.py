"""End to end: two real pages in a room; the connection-quality card fills itself."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import new_pypage, wait_until

pytestmark = pytest.mark.e2e

PAGE = "tests.pyodide.app_page_cases"
"""The page side of this test (a real module, ruff and mypy checked)."""


def test_dashboard_charts_table_and_export(chromium, server):
    room = "dash-" + uuid.uuid4().hex[:10]
    first = new_pypage(chromium, server, f"/?room={room}")
    second = new_pypage(chromium, server, f"/?room={room}")
    pages = (first, second)
    try:
        for p in pages:
            wait_until(lambda p=p: p.page.locator("#peers li .state").all_inner_texts() == ["connected"],
                       timeout=30)
        # An application channel on the multiplexer the dashboard set up, so the table has
        # a row the test controls (besides the probe channel).
        first.call(f"{PAGE}:send_on_new_channel", label="orders", count=5, size=100)
        for p in pages:
            wait_until(lambda p=p: _points(p) >= 3, timeout=20)
        counts = first.page.evaluate("() => pyappDashboard.pointCounts()")
        assert set(counts) == {"rtt", "loss", "jitter", "score", "throughput"}
        assert min(counts.values()) >= 3
        # Every chart drew something: its canvas has non-background pixels.
        inked = first.page.evaluate("""() => [...document.querySelectorAll('#charts .chart canvas')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
            return n; })""")
        assert len(inked) == 5 and all(n > 100 for n in inked), inked

        rows = wait_until(lambda: _rows_with(first, "orders"), timeout=10)
        orders = next(r for r in rows if r[1] == "orders")
        assert orders[2] == "5/0" and orders[3] == "500/0" and orders[4] == "0"
        assert not any(r[1].startswith("pyapp-") for r in rows)   # internal channels are hidden
        assert any(r[1] == "chat (native)" for r in rows)
        peer_rows = wait_until(lambda: _rows_with(second, "orders"), timeout=10)
        assert next(r for r in peer_rows if r[1] == "orders")[2:4] == ["0/5", "0/500"]

        quality = first.call(f"{PAGE}:dashboard_quality")
        assert quality[0] == "probe" and quality[1] in ("excellent", "good")
        assert quality[2] is not None and quality[2] < 500 and quality[4] == 0

        with first.page.expect_download() as info:
            first.page.locator("#export-timeline").click()
        download = info.value
        assert download.suggested_filename.startswith("pyapp-timeline-")
        data = json.loads(open(download.path(), encoding="utf-8").read())
        assert data["format"] == "pyapp-quality-timeline"
        [(peer_id, timeline)] = data["peers"].items()
        # The export names the peer by its signaling id (the list shows its PeerId and name).
        assert peer_id in first.call(f"{PAGE}:peer_sessions")
        assert len(timeline["points"]) >= 3
        point = timeline["points"][-1]
        assert set(point) >= {"t", "wall", "rtt_ms", "loss_pct", "jitter_ms", "score", "label",
                              "send_bps", "recv_bps", "source"}
        assert 0 <= point["score"] <= 100 and point["source"] == "probe"
    finally:
        for p in pages:
            foreign = p.foreign_requests()
            errors = [c for c in p.console if c.startswith(("pageerror", "error"))]
            p.page.context.close()
            assert not foreign, f"requests to other origins: {foreign}"
            assert not errors, errors


def _points(page) -> int:
    counts = page.page.evaluate("() => globalThis.pyappDashboard ? pyappDashboard.pointCounts() : {}")
    return min(counts.values()) if len(counts) == 5 else 0


def _rows_with(page, label: str) -> list[list[str]] | None:
    rows = page.page.evaluate("""() => [...document.querySelectorAll('#channel-table tbody tr')]
        .map(tr => [...tr.cells].map(td => td.textContent))""")
    return rows if any(r[1] == label for r in rows) else None
