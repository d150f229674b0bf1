"""The browser's SignalingClient when the server is not there: fail fast, back off, come back.

Real Pyodide in headless Chromium. The page is served by the shared ``server``; the
signaling server it talks to here is another real ``web.server`` process on a fixed
port that the test stops and starts again. The page side is tests/pyodide/signaling_cases.py.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.redis_server import free_port

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.signaling_cases"


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_closed_port_fails_fast_with_a_typed_error(pypage) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    result = pypage.call(f"{PAGE}:connect_closed_port", url=url, timeout=60)
    assert result.get("type") == "SignalingUnreachableError", result
    assert result["unreachable"] and result["connection_error"], result
    assert result["close_code"] == 1006, result
    assert url in result["str"] and "is it running" in result["str"], result
    # Refused at once, not after the 10 s timeout (generous bound: the machine is shared).
    assert result["elapsed"] < 5.0, result
    # No retries behind the caller's back; the next join says the same thing.
    assert result["state"] == "closed" and result["reconnects"] == 0, result
    assert result["join"] == "SignalingUnreachableError", result


def test_silent_server_times_out_with_operation_timeout(pypage, silent_listener: int) -> None:
    url = f"ws://127.0.0.1:{silent_listener}/ws"
    result = pypage.call(f"{PAGE}:connect_silent_listener", url=url, seconds=1.5, timeout=30)
    assert result.get("type") == "OperationTimeout", result
    assert result["timeout_error"] and result["timeout"] == 1.5, result
    assert result["operation"] == "signaling connect" and url in result["str"], result
    assert 1.4 <= result["elapsed"] < 10.0, result


def test_dropped_server_is_retried_with_backoff_and_rejoined_when_back(pypage) -> None:
    port = free_port()
    room = "back-" + uuid.uuid4().hex[:8]
    name = "outage-" + uuid.uuid4().hex[:6]
    first = ServerProcess("--port", str(port))
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        joined = pypage.call(f"{PAGE}:join_and_watch", name=name, url=url, room=room,
                             max_backoff=1.0)
        assert joined["state"] == "open", joined
    finally:
        first.stop()
    # Down for 4.5 s: attempts after 0.25, +0.5, +1.0, +1.0, ... (max_backoff 1.0).
    # Before the fix a failed attempt waited 10 s: one attempt in this window.
    outage = pypage.call(f"{PAGE}:watch_outage", name=name, seconds=4.5, timeout=30)
    failed = [e for e in outage["events"] if "type" in e]
    assert len(failed) >= 3, outage
    assert all(e["type"] == "SignalingUnreachableError" and e["close_code"] == 1006
               for e in failed), failed
    times = [e["t"] for e in failed]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.4, gaps  # the second wait is twice the first (0.5 s)
    assert all(g >= 0.9 for g in gaps[1:]), gaps  # then max_backoff (1.0 s)
    assert all(g < 4.0 for g in gaps), gaps  # never the old 10 s wait (loose: shared machine)
    assert outage["state"] == "reconnecting", outage
    second = ServerProcess("--port", str(port))
    try:
        back = pypage.call(f"{PAGE}:wait_rejoined", name=name, seconds=20.0, timeout=40)
    finally:
        second.stop()
    assert back["state"] == "open" and back["peer_id"] == joined["peer_id"], (back, joined)
    assert back["room"] == room, back
    assert back["after"] < 5.0, back  # the next attempt, at most max_backoff after it is up
