"""Multiplexed logical channels over real RTCDataChannels in Pyodide."""

from __future__ import annotations

import pytest

from tests.conftest import new_pypage

pytestmark = pytest.mark.browser

PAGE = "tests.pyodide.mux_cases"
"""The page side: tests/pyodide/mux_cases.py (called with ``pypage.call``)."""


def test_open_send_receive_both_ways_and_id_parity(pypage):
    result = pypage.call(f"{PAGE}:open_send_receive_both_ways_and_id_parity")
    a_id, b_id, explicit = result["ids"]
    assert a_id % 2 == 0 and b_id % 2 == 1 and explicit == 40
    assert result["labels"] == ["orders", "quotes"]
    assert result["prio"] == "HIGH"
    assert result["got_b"] == ["buy", "text too"]
    assert result["got_a"] == "quote"
    assert "parity" in result["parity_error"]
    assert result["stats"] == [2, 2]
    assert result["states"] == ["open", "open"]


def test_eight_channels_256_mib_mixed_priorities_and_reliabilities(pypage):
    result = pypage.call(f"{PAGE}:eight_channels_256_mib_mixed_priorities_and_reliabilities", timeout=300)
    chans = result["channels"]
    assert len(chans) == 8
    total = sum(c["bytes"] for c in chans.values())
    assert total >= 255 * 1024 * 1024, total
    for label, c in chans.items():
        assert c["corrupt"] == 0, label
        if c["kind"] == "reliable":
            assert c["hash_ok"], f"{label}: SHA-256 mismatch"
            assert c["received"] == c["sent"], label
        else:
            # Never more than was sent; whatever did not arrive was counted as dropped.
            assert c["received"] <= c["sent"], label
            assert c["received"] + c["dropped"] >= c["sent"], (label, c)
    assert result["errors"] == []


def test_garbage_frames_reset_one_channel_others_keep_flowing(pypage):
    result = pypage.call(f"{PAGE}:garbage_frames_reset_one_channel_others_keep_flowing")
    assert result["ticks"] == 20
    assert result["victim_error"] and "length" in result["victim_error"].lower()
    assert result["sender_state"] == "reset"
    assert result["healthy_state"] == "open"
    assert result["errors"] and all(e == "FrameError" for e in result["errors"])
    assert result["mux_errors"] >= 2


def test_priority_hint_is_feature_detected(pypage):
    result = pypage.call(f"{PAGE}:priority_hint_is_feature_detected")
    assert result["detected"] == result["has"]


def test_reliable_channels_resume_on_a_fresh_connection_without_loss_or_duplicates(pypage):
    result = pypage.call(f"{PAGE}:reliable_channels_resume_on_a_fresh_connection_without_loss_or_duplicates", timeout=120)
    assert result["count"] == 300
    assert result["unique"] == 300, "a message was delivered twice"
    assert result["in_order"]
    assert result["sha_ok"]
    assert result["unacked_at_loss"] > 0, "nothing was in flight: the test did not exercise replay"
    assert result["state"] == "open"


def test_peer_gone_for_good_fails_unacknowledged_sends_loudly(pypage):
    result = pypage.call(f"{PAGE}:peer_gone_for_good_fails_unacknowledged_sends_loudly")
    assert result["undelivered"] == [f"order {i}" for i in range(5)]
    assert result["error"] == "DeliveryError"
    assert result["late"] == "DeliveryError"
    assert result["state"] == "closed"


def test_power_saving_pauses_bulk_and_unreliable_low_priority(pypage):
    result = pypage.call(f"{PAGE}:power_saving_pauses_bulk_and_unreliable_low_priority")
    assert result == {"urgent": "urgent still flows", "was_blocked": True,
                      "bulk": "bulk while paused", "tick": "tick after", "paused_drops": 1}


def test_peer_creating_its_session_late_loses_nothing(pypage):
    result = pypage.call(f"{PAGE}:peer_creating_its_session_late_loses_nothing")
    assert result == {"got": [f"m{i}" for i in range(5)], "label": "early"}



def test_concurrent_receives_are_served_in_order_and_close_wakes_every_waiter(pypage):
    result = pypage.call(f"{PAGE}:concurrent_receive", timeout=60)
    for kind in ("mux", "raw"):
        assert result[kind]["got"] == ["one", "two"], kind
        assert result[kind]["ends"] == ["ConnectionClosedError"] * 2, kind


def test_closing_an_unreliable_channel_delivers_what_was_sent_before_it(pypage):
    rounds = pypage.call(f"{PAGE}:unreliable_close_drains", timeout=90)
    assert len(rounds) == 3
    for r in rounds:
        assert r["protocol_errors"] == [], r
        assert r["state"] == "closed" and r["error"] == "None", r
        assert r["received"] + r["lost"] == 60, r   # nothing vanishes uncounted
        assert r["received"] == r["distinct"] == 60, r  # loopback loses nothing


def test_reserved_channels_never_reach_accept(pypage):
    result = pypage.call(f"{PAGE}:reserved_channels_never_reach_accept", timeout=60)
    assert result == {"first": "app", "second": None, "served": ["pyapp-probe", "pyapp-probe"],
                      "labels": ["x", "y"]}


def test_protocol_errors_are_logged_once_per_channel(pypage):
    result = pypage.call(f"{PAGE}:protocol_errors_are_logged", timeout=60)
    assert result["state"] == "reset"
    assert len(result["logged"]) == 1, result["logged"]
    assert "reset" in result["logged"][0] and "never sent" in result["logged"][0]


def test_the_same_in_firefox(firefox, server):
    """Firefox's SCTP stack (usrsctp) reorders and schedules differently: the close
    drain point, concurrent readers and reserved labels must hold there too."""
    page = new_pypage(firefox, server)
    try:
        result = page.call(f"{PAGE}:concurrent_receive", timeout=60)
        for kind in ("mux", "raw"):
            assert result[kind]["got"] == ["one", "two"], kind
            assert result[kind]["ends"] == ["ConnectionClosedError"] * 2, kind
        for r in page.call(f"{PAGE}:unreliable_close_drains", timeout=90):
            assert r["protocol_errors"] == [] and r["state"] == "closed", r
            assert r["received"] + r["lost"] == 60, r
            assert r["received"] == r["distinct"] == 60, r
        reserved = page.call(f"{PAGE}:reserved_channels_never_reach_accept", timeout=60)
        assert reserved["first"] == "app" and reserved["second"] is None
    finally:
        page.page.context.close()


def test_urgent_frame_overtakes_a_full_send_buffer(pypage):
    result = pypage.call(f"{PAGE}:urgent_frame_overtakes_a_full_send_buffer", timeout=60)
    assert result["buffered"] + 16 * 1024 > result["high"], result  # the buffer was full
    assert result["bulk_queued"] > 0, result                      # and bulk still waiting
    assert result["urgent_sent"] == 1, result                     # the HIGH message left anyway
    assert (result["messages"], result["bytes"]) == (1, 16 + 4), result  # alone, nothing packed behind
    assert result["urgent_got"] == ["ping"]
    assert result["bulk_ok"] == [True] * 16
    assert result["errors"] == []


def test_received_batch_is_worked_through_high_first(pypage):
    result = pypage.call(f"{PAGE}:received_batch_is_worked_through_high_first", timeout=60)
    assert result["messages"] > 1, result  # the bulk and the HIGH message came as several messages
    assert result["order"] == ["urgent ping"] + [f"bulk 0{i} 40000" for i in range(4)]
    assert result["sent_before_bulk"] and result["sent_before_bulk"][0] >= 1, result  # echo already out
    assert result["echoes"] == ["ping"]
    assert result["unacked"] == 0
    assert result["errors"] == []


URGENT = "tests.pyodide.mux_urgent_cases"


def _went_on(result: dict, transport: str) -> None:
    """Every message of the round trip (OPEN, 3 DATA, ACCEPT, 3 DATA back, ACKs, CLOSEs)
    went on ``transport`` alone, in both directions."""
    for side in ("a_sent", "b_sent"):
        assert result[side][transport] >= 3, (side, result)
        assert sum(result[side].values()) == result[side][transport], (side, result)


def test_high_channels_ride_the_urgent_transport(pypage):
    result = pypage.call(f"{URGENT}:high_channels_ride_the_urgent_transport", timeout=60)
    assert result["up"] == [True, True]
    for kind in ("high", "medium", "unreliable_high"):
        r = result[kind]
        assert r["got_b"] == [f"{r['got_b'][0].split()[0]} {i}" for i in range(3)], r
        assert r["got_a"] == ["re 0", "re 1", "re 2"], r
        assert r["state"] == ["closed", "closed"], r
    high = result["high"]
    assert high["transport"] == high["peer_transport"] == "URGENT"
    _went_on(high, "urgent")
    medium = result["medium"]
    assert medium["transport"] == medium["peer_transport"] == "RELIABLE"
    _went_on(medium, "reliable")
    game = result["unreliable_high"]
    assert game["transport"] == "UNRELIABLE" and game["a_sent"]["urgent"] == 0
    assert game["a_sent"]["unreliable"] >= 1 and game["b_sent"]["unreliable"] >= 1
    assert game["b_sent"]["urgent"] == 0
    assert result["errors"] == []


@pytest.mark.parametrize("old_side", ["a", "b"])
def test_a_peer_without_the_urgent_transport_keeps_working(pypage, old_side):
    result = pypage.call(f"{URGENT}:a_peer_without_the_urgent_transport", timeout=60,
                         old_side=old_side)
    assert result["up"] == [False, False]
    for kind in ("a_opens", "b_opens"):
        r = result[kind]
        assert r["transport"] == r["peer_transport"] == "RELIABLE", r
        assert len(r["got_b"]) == 3 and r["got_a"] == ["re 0", "re 1", "re 2"], r
        assert r["state"] == ["closed", "closed"], r
        for side in ("a_sent", "b_sent"):
            assert r[side].get("urgent", 0) == 0 and r[side]["reliable"] >= 3, r
    assert result["errors"] == []


def test_urgent_message_skips_the_queued_bulk(pypage):
    result = pypage.call(f"{URGENT}:urgent_message_skips_the_queued_bulk", timeout=60)
    assert result["buffered"] + 16 * 1024 > result["high"], result  # the reliable buffer was full
    assert result["sent"] == {"reliable": 0, "unreliable": 0, "urgent": 1}, result
    assert result["count"] == 17 and result["bulk_sizes"] == [65536], result
    assert 0 <= result["position"] < 16, result          # it overtook bulk sent before it
    assert result["errors"] == []


def test_a_high_channel_on_the_urgent_transport_resumes_without_loss(pypage):
    result = pypage.call(
        f"{PAGE}:reliable_channels_resume_on_a_fresh_connection_without_loss_or_duplicates",
        timeout=120, priority="HIGH")
    assert result["transport"] == "URGENT"
    assert result["count"] == result["unique"] == 300 and result["in_order"] and result["sha_ok"]
    assert result["unacked_at_loss"] > 0
    assert result["state"] == "open"


def test_urgent_inbox_is_taken_before_a_bulk_batch(pypage):
    result = pypage.call(f"{URGENT}:urgent_inbox_is_taken_before_a_bulk_batch", timeout=60)
    assert result["order"] == ["urgent 'ping'"] + ["bulk 40000"] * 3, result
    assert result["transport"] == "URGENT"
    assert result["echoes_before_bulk"] == [1], result   # the echo left on pyapp-mux-h first
    assert result["errors"] == []
