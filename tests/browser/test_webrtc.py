"""The Python WebRTC layer in real Pyodide in headless Chromium.

The page side is tests/pyodide/webrtc.py (called with ``pypage.call``).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.webrtc"


def test_page_loads_only_from_its_own_origin(pypage):
    assert pypage.call(f"{PAGE}:version") == "0.1.0"
    assert pypage.requests, "no requests were recorded"
    assert pypage.foreign_requests() == []
    # The runtime really came from our server, not a CDN.
    assert any(u.endswith("/pyodide/pyodide.asm.wasm") for u in pypage.requests)


def test_connect_and_exchange_both_ways(pypage):
    result = pypage.call(f"{PAGE}:exchange_both_ways")
    assert result["b"] == ["hi from a", [0, 1, *b"bytes"]]
    assert result["a"] == "hi from b"
    assert result["states"] == ["connected", "connected"]
    assert result["label"] == "chat"
    assert result["mms"] >= 65536


def test_in_order_delivery_of_1000_messages(pypage):
    assert pypage.call(f"{PAGE}:in_order", count=1000) is True


def test_glare_both_sides_open_channels_at_once(pypage):
    result = pypage.call(f"{PAGE}:glare")
    assert "timeout" not in result, result
    assert result["seen"] == {"a": ["from-b"], "b": ["from-a"]}
    assert result["state"] == ["connected", "connected"]
    assert result["errors"] == []


def test_glare_on_an_ice_restart_rolls_the_polite_offer_back(pypage):
    result = pypage.call(f"{PAGE}:glare_on_ice_restart", timeout=60)
    story = result["story"]
    # Both offered; the polite side (b) rolled its offer back and answered a's.
    assert "a have-local-offer" in story and "b have-local-offer" in story, story
    assert story.index("b have-remote-offer") > story.index("b have-local-offer"), story
    assert result["signaling"] == ["stable", "stable"], result
    assert result["reply"] is True and result["errors"] == [], result


def test_backpressure_bounds_buffered_amount(pypage):
    result = pypage.call(f"{PAGE}:backpressure", high_water=256 * 1024, chunk_size=64 * 1024,
                         chunks=128, timeout=90)
    assert result["received"] == 8 * 1024 * 1024
    # Never more than one message above the high-water mark.
    assert result["peak"] <= 256 * 1024 + 64 * 1024


def test_oversize_send_raises_and_channel_survives(pypage):
    result = pypage.call(f"{PAGE}:oversize_send")
    assert result["error"] == [result["limit"] + 1, result["limit"]]
    assert result["after"] == "still alive"
    assert result["state"] == "open"


def test_js_errors_become_pyapp_exceptions(pypage):
    result = pypage.call(f"{PAGE}:js_errors")
    assert result["browser"] in ("InvalidStateError", "OperationError")
    assert result["local"].startswith("InvalidArgumentError: ") and "exclusive" in result["local"]
    assert result["is_local"] == "True"
    assert result["closed"] == "ConnectionClosedError"


def test_close_releases_every_proxy(pypage):
    result = pypage.call(f"{PAGE}:close_releases_proxies", rounds=5, timeout=60)
    assert result["during"] > result["before"]
    assert result["after"] == result["before"]


def test_changed_page_module_is_reimported(pypage, tmp_path):
    """The mechanism itself: a module edited between two calls is re-imported in the page."""
    from tests.conftest import PYODIDE_TESTS

    module = PYODIDE_TESTS / "_scratch_reimport.py"
    try:
        module.write_text("def value() -> int:\n    return 1\n", encoding="utf-8")
        assert pypage.call("tests.pyodide._scratch_reimport:value") == 1
        module.write_text("def value() -> int:\n    return 2\n", encoding="utf-8")
        assert pypage.call("tests.pyodide._scratch_reimport:value") == 2
    finally:
        module.unlink()


def test_connection_facade_holds_the_features_and_tears_them_down(pypage):
    out = pypage.call("tests.pyodide.connection:facade_features_and_teardown", timeout=60)
    assert out["types"] == ["Connection", "PeerConnection"]
    assert out["alias"] is True and out["bound"] is True
    assert out["none_yet"] == [True, True, True]
    assert out["security"] == "unverified"
    assert out["same_mux"] is True
    assert out["accepted"] == ["orders", "ticks"]
    assert out["monitor"] == [True, True, True]
    assert "orders" in out["stats_channels"]
    assert out["after_close"] == [True, True, True, False, True]
    assert out["late_send"] in ("ConnectionClosedError", "DeliveryError", "ChannelResetError")
    assert out["proxies_delta"] == 0


def test_a_bare_peer_connection_gets_one_facade(pypage):
    out = pypage.call("tests.pyodide.connection:bare_peer_gets_a_facade")
    assert out == {"type": "Connection", "same": True, "owns_wrapper": True, "closed": True}
