"""The async pool, limiter and reconnect supervisor in real Pyodide, over real loopback WebRTC."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.pool"
"""The page side: tests/pyodide/pool.py (called with ``pypage.call``)."""


@pytest.fixture(scope="module")
def page(pypage):
    return pypage


def test_shared_dial_reuse_release_and_idle_close(page):
    out = page.call(f"{PAGE}:shared_dial_reuse_release_and_idle_close")
    assert out["is_facade"] is True      # dialers hand out Connections
    assert out["same"] is True
    assert out["reply"] == "echo:hi"
    assert out["dials"] == 1
    assert out["s1"] == [1, 1, 1, 0]
    assert out["s2"] == [1, 0]           # one lease (``again``) still out
    assert out["s3"] == [0, 1, 1]
    assert out["s4"] == [0, 0, 1]
    assert out["pc_state"] == "closed"
    assert "idle" in out["gone_error"]
    assert out["live"] == 0


def test_full_pool_evicts_lru_idle_then_waits_then_exhausts(page):
    out = page.call(f"{PAGE}:full_pool_evicts_waits_exhausts")
    assert out["after_evict"] == [True, True, 1]
    assert out["exhausted"] and "pool full" in out["exhausted"]
    assert 250 <= out["waited"] < 2000
    assert out["queued"] == 1
    assert out["served"] == ["f", True]
    assert out["waiting_after_cancel"] == 0
    assert out["size"] == 2
    assert out["exhausted_count"] == 1
    assert out["live"] == 0


def test_limiter_fifo_deadline_cap_and_cancellation(page):
    out = page.call(f"{PAGE}:limiter_fifo_deadline_cap_and_cancellation")
    assert out["order"] == ["p3"]
    assert out["errors"] == ["connection limiter: queue full", "connection limiter: inbound queue full"]
    assert out["held_mid"] == 2
    assert out["after_cancel"] == [2, 0]
    assert out["timed_out"] == "connection limiter: deadline passed"
    assert out["final"] == [0, 0, 3, 2, 1, 1]


def test_dial_failure_releases_the_slot_and_fails_every_sharer(page):
    out = page.call(f"{PAGE}:dial_failure_releases_the_slot_and_fails_every_sharer")
    assert out["errs"] == ["ConnectionClosedError:no route to peer"] * 2
    assert out["held"] == 0
    assert out["held2"] == 1
    assert out["size"] == 0
    assert out["failures"] == 1
    assert out["held_end"] == 0
    assert out["live"] == 0


def test_dial_timeout_is_its_own_error_and_leaves_nothing_open(page):
    out = page.call(f"{PAGE}:dial_timeout_is_its_own_error")
    assert out["type"] == "DialTimeout"
    assert out["timeout_error"] is True and out["operation_timeout"] is True
    assert out["peer"] == "slow" and "'slow'" in out["message"] and "dial_timeout" in out["message"]
    assert out["held"] == 0 and out["live"] == 0 and out["size"] == 0


def test_remote_close_leaves_the_pool_and_frees_the_slot(page):
    out = page.call(f"{PAGE}:remote_close_leaves_the_pool", timeout=60)
    assert out["reason"] == "peer closed the connection"
    assert out["ms"] < 3000          # SCTP abort, not the ICE consent timeout
    assert out["size"] == 0
    assert out["held"] == 0


def test_scale_24_connections_with_limiter_at_8(page):
    out = page.call(f"{PAGE}:scale", users=24, limit=8, timeout=90)
    assert out["ok"] is True
    assert out["dials"] == 24
    # At no moment more than 8 connections dialling or open, and the limiter saw 8 at once.
    assert out["peak_live"] == 8
    assert out["peak_held"] == 8
    assert out["max_sample"] <= 8
    assert out["size"] == 0 and out["held"] == 0 and out["live"] == 0
    assert out["idle_closes"] == 24


def test_churn_500_cycles_returns_to_baseline(page):
    cdp = page.page.context.new_cdp_session(page.page)

    def js_heap() -> int:
        cdp.send("HeapProfiler.collectGarbage")
        return int(cdp.send("Runtime.getHeapUsage")["usedSize"])

    page.call(f"{PAGE}:churn_setup")
    page.call(f"{PAGE}:churn", cycles=40, timeout=60)   # warm-up: caches, code paths
    base_proxies = page.call(f"{PAGE}:churn_state")["proxies"]
    base_heap = js_heap()
    ms = 0.0
    for _ in range(10):
        ms += page.call(f"{PAGE}:churn", cycles=50, timeout=120)
        # Chromium counts every RTCPeerConnection against a per-page limit (~500)
        # until V8 collects it, closed or not; a test page makes too little JS
        # garbage for V8 to get there by itself within 1000 connections.
        js_heap()
    out = page.call(f"{PAGE}:churn_state")
    proxies = out["proxies"]
    heap = js_heap()
    page.call(f"{PAGE}:churn_close")
    print(f"churn: 500 cycles in {ms:.0f} ms; JS heap {base_heap / 1e6:.1f} -> {heap / 1e6:.1f} MB")
    assert out["dials"] == 540
    assert out["size"] == 0 and out["held"] == 0 and out["queued"] == 0
    assert out["live"] == 0 and out["remotes"] == 0
    assert proxies == base_proxies
    # Bound: 4 MB of JS heap growth over 500 cycles (~8 KB per cycle); a leaked
    # RTCPeerConnection pair with its listeners costs far more than that.
    assert heap - base_heap < 4_000_000, (base_heap, heap)
