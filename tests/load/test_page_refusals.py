"""A refusal reaches the page: the browser client raises / emits SignalingRefusedError.

Real Pyodide in headless Chromium against the real server process (the shared
``server`` fixture, default limits).
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.browser


def test_refused_join_raises_a_typed_error(pypage) -> None:
    room = "full-" + uuid.uuid4().hex[:8]
    result = pypage.pyjson(f"""
        import json
        from pyapp.browser.signaling import SignalingClient, default_url
        from pyapp.exceptions import SignalingRefusedError
        members = []
        for _ in range(16):
            c = SignalingClient(default_url(), reconnect=False)
            await c.join({room!r})
            members.append(c)
        extra = SignalingClient(default_url(), reconnect=False)
        try:
            await extra.join({room!r})
            outcome = {{"joined": True}}
        except SignalingRefusedError as exc:
            outcome = {{"code": exc.code, "ref": exc.ref, "close_code": exc.close_code,
                        "text": exc.text, "str": str(exc)}}
        for c in [*members, extra]:
            c.close()
        json.dumps(outcome)
    """, timeout=60)
    assert result["code"] == "room-full" and result["ref"] == "join", result
    assert result["close_code"] is None and "full" in result["text"], result
    assert "room-full" in result["str"], result


def test_flooding_page_sees_the_error_and_the_explained_close(pypage) -> None:
    room = "flood-" + uuid.uuid4().hex[:8]
    result = pypage.pyjson(f"""
        import asyncio, json
        from pyapp.browser.signaling import SignalingClient, default_url
        client = SignalingClient(default_url(), reconnect=False)
        errors = []
        client.events.on("error", lambda e: errors.append(
            {{"type": type(e).__name__, "code": e.code, "close_code": e.close_code}}))
        welcome = await client.join({room!r})
        for i in range(400):  # past the burst (100) and the strikes (20)
            await client.send_signal("nobody-here", {{"i": i}})
        for _ in range(100):
            if client.state == "closed":
                break
            await asyncio.sleep(0.05)
        json.dumps({{"state": client.state, "errors": errors,
                     "last": client.last_refusal.code if client.last_refusal else None}})
    """, timeout=60)
    assert result["state"] == "closed", result
    codes = [e["code"] for e in result["errors"]]
    assert all(e["type"] == "SignalingRefusedError" for e in result["errors"]), result
    assert "rate-limited" in codes and "flooding" in codes, codes
    # The close itself, with its reason, became the last error: code 1008.
    assert result["errors"][-1] == {"type": "SignalingRefusedError", "code": "flooding",
                                    "close_code": 1008}, result
    assert result["last"] == "flooding"
