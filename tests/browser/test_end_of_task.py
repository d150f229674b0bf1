"""The page's end-of-task queue (pyapp.browser.end_of_task) in real Pyodide (what the multiplexer pumps on)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_end_of_task_runs_a_batch_in_one_task_in_order(pypage):
    r = pypage.call("tests.pyodide.end_of_task_cases:end_of_task_batches")
    assert r["ran_synchronously"] == []           # nothing runs before the task ends
    assert r["order"] is True                     # the 50 calls, in the order queued
    # a raising callback is reported and the next one still runs; a call queued by a
    # callback waits for the next task
    assert r["tail"] == ["boom", "after boom", "queued from a callback"], r
    assert r["runs"] == 2 and r["calls"] == 53, r  # 52 in the first task, 1 in the second
    assert r["proxies_while_open"] == 1           # one long-lived proxy for the queue
    assert r["proxies_after_close"] == 0


def test_the_shared_queue_is_page_lifetime(pypage):
    r = pypage.call("tests.pyodide.end_of_task_cases:shared_queue_is_page_lifetime")
    assert r == {"ran": [True], "page_lifetime": True, "counted": 0}
