"""parse_stats / compute_rates against real getStats dumps and hand-made edge cases."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.stats import (
    CANDIDATE_TYPES,
    ChannelStatistics,
    ConnectionStatistics,
    compute_rates,
    parse_stats,
)
from pyapp.exceptions import LocalProtocolError

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "getstats"
ENGINES = ["chromium", "firefox"]


def load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def meta(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.meta.json").read_text())
    return data


# -- real fixtures --------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["data", "media"])
def test_fixture_counters_match_what_the_recorder_did(engine: str, kind: str) -> None:
    name = f"{engine}-{kind}"
    info = meta(name)
    stats = parse_stats(load(name), now=5.0)
    assert stats.timestamp == 5.0
    assert stats.bytes_sent is not None
    # Transport bytes include DTLS/SCTP overhead, so at least the payload.
    assert stats.bytes_sent >= info["bytesSentByScript"]
    assert stats.bytes_received is not None and stats.bytes_received > 0
    assert stats.data_channels_opened == info["channelsOpened"] == 3
    assert stats.data_channels_closed == info["channelsClosed"] == 1
    assert stats.round_trip_time is not None and stats.round_trip_time >= 0
    assert stats.local_candidate_type in CANDIDATE_TYPES
    assert stats.remote_candidate_type in CANDIDATE_TYPES
    assert stats.candidate_protocol == "udp"
    assert stats.ice_state == "connected"
    assert stats.dtls_state == "connected"
    assert stats.selected_candidate_pair_id is not None


@pytest.mark.parametrize("engine", ENGINES)
def test_fixture_native_data_channels(engine: str) -> None:
    stats = parse_stats(load(f"{engine}-data"), now=0.0)
    info = meta(f"{engine}-data")
    by_label = {dc.label: dc for dc in stats.data_channels}
    # The closed channel drops out of the report in both engines.
    assert set(by_label) == {"chan-0", "chan-1"}
    assert by_label["chan-0"].messages_sent == info["messagesSent"] == 200
    assert by_label["chan-0"].bytes_sent == info["bytesSentByScript"]
    assert by_label["chan-0"].state == "open"
    assert by_label["chan-1"].messages_sent == 0
    assert by_label["chan-0"].data_channel_identifier is not None


def test_chromium_rtt_and_available_bitrate() -> None:
    data = parse_stats(load("chromium-data"), now=0.0)
    media = parse_stats(load("chromium-media"), now=0.0)
    assert data.round_trip_time is not None and data.round_trip_time > 0
    assert media.available_outgoing_bitrate is not None
    assert media.available_outgoing_bitrate > 100_000


def test_chromium_bytes_come_from_the_transport_not_the_selected_pair() -> None:
    # In this dump the selected pair switched after the traffic: it carried 0 bytes.
    report = load("chromium-data")
    stats = parse_stats(report, now=0.0)
    transport = next(s for s in report if s["type"] == "transport")
    pair = next(s for s in report if s["id"] == transport["selectedCandidatePairId"])
    assert stats.selected_candidate_pair_id == pair["id"]
    assert stats.bytes_sent == transport["bytesSent"]
    assert stats.bytes_sent > pair["bytesSent"]


def test_firefox_has_no_transport_bytes_so_pairs_are_summed() -> None:
    report = load("firefox-data")
    transport = next(s for s in report if s["type"] == "transport")
    assert "bytesSent" not in transport
    pairs = [s for s in report if s["type"] == "candidate-pair"]
    stats = parse_stats(report, now=0.0)
    assert stats.bytes_sent == sum(p["bytesSent"] for p in pairs)
    assert stats.available_outgoing_bitrate is None


@pytest.mark.parametrize("name", ["firefox-data", "firefox-media", "firefox-media-receiver"])
def test_firefox_selected_flag_used_without_selected_pair_id(name: str) -> None:
    report = load(name)
    expected = parse_stats(report, now=0.0).selected_candidate_pair_id
    stripped = copy.deepcopy(report)
    for stat in stripped:
        if stat["type"] == "transport":
            del stat["selectedCandidatePairId"]
    stats = parse_stats(stripped, now=0.0)
    assert stats.selected_candidate_pair_id == expected
    selected = next(s for s in report if s["type"] == "candidate-pair" and s.get("selected"))
    assert stats.selected_candidate_pair_id == selected["id"]
    assert stats.round_trip_time == selected["currentRoundTripTime"] * 1000


def test_chromium_without_transport_falls_back_to_busiest_nominated_pair() -> None:
    report = [s for s in load("chromium-media") if s["type"] != "transport"]
    stats = parse_stats(report, now=0.0)
    nominated = [
        s for s in report
        if s["type"] == "candidate-pair" and s["nominated"] and s["state"] == "succeeded"
    ]
    busiest = max(nominated, key=lambda p: p["bytesSent"] + p["bytesReceived"])
    assert stats.selected_candidate_pair_id == busiest["id"]
    assert stats.bytes_sent == sum(s["bytesSent"] for s in report if s["type"] == "candidate-pair")
    assert stats.ice_state is None


@pytest.mark.parametrize(
    ("engine", "width", "height"), [("chromium", 640, 480), ("firefox", 480, 360)]
)
def test_fixture_outbound_video(engine: str, width: int, height: int) -> None:
    stats = parse_stats(load(f"{engine}-media"), now=0.0)
    media = stats.media
    assert media.has_media
    video = media.outbound_video
    assert video is not None
    assert (video.frame_width, video.frame_height) == (width, height)
    assert video.frames_per_second is not None and video.frames_per_second > 5
    assert video.bytes_sent is not None and video.bytes_sent > 10_000
    assert {s.kind for s in media.outbound} == {"audio", "video"}
    assert media.packets_sent is not None and media.packets_sent > 100
    assert len(media.remote_inbound) == 2
    assert media.remote_packets_lost == 0
    assert media.jitter_ms is not None  # from remote-inbound-rtp: nothing inbound here
    assert media.inbound == ()


@pytest.mark.parametrize("engine", ENGINES)
def test_fixture_inbound_rtp_on_the_receiver(engine: str) -> None:
    stats = parse_stats(load(f"{engine}-media-receiver"), now=0.0)
    media = stats.media
    assert {s.kind for s in media.inbound} == {"audio", "video"}
    assert media.packets_received is not None and media.packets_received > 100
    assert media.packets_lost == 0
    assert media.jitter_ms is not None and media.jitter_ms >= 0
    video = next(s for s in media.inbound if s.kind == "video")
    assert video.frame_width is not None and video.frame_width > 0
    assert video.bytes_received is not None and video.bytes_received > 10_000


def test_data_only_fixture_has_no_media() -> None:
    stats = parse_stats(load("chromium-data"), now=0.0)
    assert not stats.media.has_media
    assert stats.media.jitter_ms is None
    assert stats.media.packets_lost is None
    assert stats.media.outbound_video is None


def test_mapping_and_list_inputs_agree() -> None:
    report = load("chromium-media")
    as_map = {s["id"]: s for s in report}
    assert parse_stats(as_map, now=1.0) == parse_stats(report, now=1.0)


# -- missing and malformed fields ---------------------------------------------------------


def test_empty_report() -> None:
    stats = parse_stats([], now=3.0)
    assert stats == ConnectionStatistics(
        timestamp=3.0,
        bytes_sent=None,
        bytes_received=None,
        round_trip_time=None,
        data_channels_opened=None,
        data_channels_closed=None,
    )
    assert stats.channels == ()


def test_wrong_types_become_none() -> None:
    report: list[Any] = [
        "not a dict",
        None,
        {"type": "transport", "id": "T", "bytesSent": "12", "bytesReceived": True,
         "selectedCandidatePairId": "missing"},
        {"type": "candidate-pair", "id": "CP", "state": "succeeded", "nominated": True,
         "currentRoundTripTime": float("nan"), "localCandidateId": 7,
         "availableOutgoingBitrate": -5},
        {"type": "peer-connection", "id": "P", "dataChannelsOpened": None},
        {"type": "data-channel"},
        {"type": "inbound-rtp", "jitter": "x", "packetsLost": -3},
        {"type": "remote-inbound-rtp", "fractionLost": 7.0, "roundTripTime": float("inf")},
        {"id": "no type"},
    ]
    stats = parse_stats(report, now=0.0)
    assert stats.bytes_sent is None  # transport's is a string; the pair has none
    assert stats.bytes_received is None
    assert stats.selected_candidate_pair_id == "CP"
    assert stats.round_trip_time is None
    assert stats.local_candidate_type is None
    assert stats.available_outgoing_bitrate is None
    assert stats.data_channels_opened is None
    assert stats.data_channels[0].label is None
    assert stats.media.inbound[0].jitter_ms is None
    assert stats.media.inbound[0].packets_lost == -3  # signed per RFC 3550
    assert stats.media.remote_inbound[0].fraction_lost is None
    assert stats.media.remote_inbound[0].round_trip_time_ms is None


def test_unknown_candidate_type_is_none() -> None:
    report: list[dict[str, Any]] = [
        {"type": "candidate-pair", "id": "CP", "selected": True,
         "localCandidateId": "L", "remoteCandidateId": "R"},
        {"type": "local-candidate", "id": "L", "candidateType": "bogus"},
        {"type": "remote-candidate", "id": "R", "candidateType": "relay"},
    ]
    stats = parse_stats(report, now=0.0)
    assert stats.local_candidate_type is None
    assert stats.remote_candidate_type == "relay"


@pytest.mark.parametrize("bad", [None, 5, "report", b"bytes"])
def test_non_report_input_gives_empty_statistics(bad: Any) -> None:
    assert parse_stats(bad, now=0.0).bytes_sent is None


JSONISH: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
    | st.just([]) | st.just({"a": 1})
)
STAT_KEYS = st.sampled_from([
    "id", "type", "bytesSent", "bytesReceived", "selectedCandidatePairId", "selected",
    "nominated", "state", "currentRoundTripTime", "localCandidateId", "remoteCandidateId",
    "candidateType", "packetsLost", "packetsReceived", "jitter", "roundTripTime",
    "frameWidth", "framesPerSecond", "dataChannelsOpened", "transportId", "ssrc",
])
TYPES = st.sampled_from([
    "transport", "candidate-pair", "local-candidate", "remote-candidate", "peer-connection",
    "data-channel", "inbound-rtp", "outbound-rtp", "remote-inbound-rtp",
])


@given(st.lists(
    st.dictionaries(STAT_KEYS, JSONISH | TYPES | st.sampled_from(["CP", "L", "R", "T"]),
                    max_size=10),
    max_size=6,
))
def test_parse_never_raises_on_garbage(report: list[dict[str, Any]]) -> None:
    stats = parse_stats(report, now=1.0)
    assert stats.timestamp == 1.0
    for value in (stats.bytes_sent, stats.round_trip_time, stats.media.jitter_ms):
        assert value is None or value >= 0


# -- rates ----------------------------------------------------------------------------


def snapshot(now: float, sent: int | None, received: int | None, *, lost: int = 0,
             packets: int = 0, remote_lost: int = 0, packets_sent: int = 0) -> ConnectionStatistics:
    report: list[dict[str, Any]] = [
        {"type": "transport", "id": "T", "bytesSent": sent, "bytesReceived": received},
        {"type": "inbound-rtp", "id": "I", "packetsLost": lost, "packetsReceived": packets},
        {"type": "outbound-rtp", "id": "O", "packetsSent": packets_sent},
        {"type": "remote-inbound-rtp", "id": "RI", "packetsLost": remote_lost},
    ]
    return parse_stats(report, now=now)


def test_rates_bitrate_and_loss() -> None:
    before = snapshot(10.0, 1_000, 2_000, lost=5, packets=100, remote_lost=1, packets_sent=50)
    after = snapshot(12.0, 251_000, 52_000, lost=15, packets=190, remote_lost=4, packets_sent=150)
    rates = compute_rates(before, after)
    assert rates.interval == 2.0
    assert rates.send_bitrate == 1_000_000.0
    assert rates.receive_bitrate == 200_000.0
    assert rates.inbound_packet_loss == pytest.approx(10.0)  # 10 lost of 100
    assert rates.outbound_packet_loss == pytest.approx(3.0)  # 3 lost of 100 sent


def test_rates_counter_reset_gives_none() -> None:
    before = snapshot(1.0, 5_000, 5_000, packets=100)
    after = snapshot(2.0, 100, 6_000, packets=10)
    rates = compute_rates(before, after)
    assert rates.send_bitrate is None
    assert rates.receive_bitrate == 8_000.0
    assert rates.inbound_packet_loss is None


def test_rates_packets_lost_going_down_counts_as_zero() -> None:
    before = snapshot(1.0, 0, 0, lost=10, packets=100)
    after = snapshot(2.0, 0, 0, lost=8, packets=200)
    assert compute_rates(before, after).inbound_packet_loss == 0.0


def test_rates_missing_counters_and_no_media() -> None:
    before = parse_stats(load("chromium-data"), now=1.0)
    after = dataclasses.replace(before, timestamp=2.0, bytes_received=None)
    rates = compute_rates(before, after)
    assert rates.send_bitrate == 0.0
    assert rates.receive_bitrate is None
    assert rates.inbound_packet_loss is None
    assert rates.outbound_packet_loss is None


def test_rates_idle_interval_has_no_loss() -> None:
    before = snapshot(1.0, 0, 0, packets=100)
    after = snapshot(2.0, 0, 0, packets=100)
    assert compute_rates(before, after).inbound_packet_loss is None


@pytest.mark.parametrize("later", [1.0, 0.5])
def test_rates_reject_out_of_order_snapshots(later: float) -> None:
    before = snapshot(1.0, 0, 0)
    with pytest.raises(LocalProtocolError):
        compute_rates(before, snapshot(later, 10, 10))


# -- logical channel counters ------------------------------------------------------------


def test_channels_filled_by_the_caller() -> None:
    stats = parse_stats(load("firefox-data"), now=1.0)
    chan = ChannelStatistics(label="chat", channel_id=3, messages_sent=2, bytes_sent=10,
                             queued_bytes=4, queueing_delay_ms=1.5)
    filled = dataclasses.replace(stats, channels=(chan,))
    assert filled.channels[0].label == "chat"
    assert filled.channels[0].dropped == 0
    assert filled.bytes_sent == stats.bytes_sent
    with pytest.raises(dataclasses.FrozenInstanceError):
        chan.dropped = 1  # type: ignore[misc]


def test_non_string_selected_pair_id_is_tolerated():
    # Found by hypothesis: an unhashable id must not crash the parser.
    stats = parse_stats([{"type": "transport", "selectedCandidatePairId": [], "bytesSent": None}], now=0.0)
    assert stats.round_trip_time is None
