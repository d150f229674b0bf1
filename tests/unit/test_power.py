"""decide_power as a table."""

from __future__ import annotations

import pytest

from pyapp.core.device import DeviceProfile, NetworkInfo, classify_device
from pyapp.core.power import BatteryState, PowerMode, decide_power
from pyapp.exceptions import LocalProtocolError

pytestmark = pytest.mark.unit

N, S = PowerMode.NORMAL, PowerMode.POWER_SAVING

PHONE = classify_device(
    "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0", None, 5, None, None
)
DESKTOP = classify_device(
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", None, 0, None,
    None,
)


def bat(level: float, charging: bool = False) -> BatteryState:
    return BatteryState(level=level, charging=charging)


@pytest.mark.parametrize(
    ("battery", "previous", "mode", "state", "reason_part"),
    [
        (None, N, N, "unknown", "Battery API unavailable"),
        (None, S, N, "unknown", "Battery API unavailable"),
        (bat(1.0, True), N, N, "charging", "charging at 100%"),
        (bat(0.5), N, N, "discharging", "battery at 50%"),
        (bat(0.20), N, N, "discharging", "battery at 20%"),
        (bat(0.19), N, S, "discharging", "below 20%"),
        (bat(0.05, True), N, N, "charging", "charging"),
        (bat(0.10, True), S, N, "charging", "charging"),
        # Hysteresis: between 20 % and 25 % the previous mode is kept.
        (bat(0.22), S, S, "discharging", "until above 25%"),
        (bat(0.25), S, S, "discharging", "until above 25%"),
        (bat(0.22), N, N, "discharging", "battery at 22%"),
        (bat(0.26), S, N, "discharging", "battery at 26%"),
    ],
)
def test_battery_table(
    battery: BatteryState | None, previous: PowerMode, mode: PowerMode, state: str,
    reason_part: str,
) -> None:
    settings = decide_power(PHONE, battery, visible=True, previous_mode=previous)
    assert settings.mode is mode
    assert settings.battery_state == state
    assert reason_part in settings.reason
    assert settings.pause_bulk == settings.pause_unreliable_low_priority == (mode is S)


@pytest.mark.parametrize(
    ("profile", "battery", "visible", "bitrate", "fps", "size", "interval", "pool"),
    [
        (DESKTOP, None, True, 2_500_000, 30.0, (None, None), 1.0, (8, 60.0)),
        (DESKTOP, None, False, 2_500_000, 30.0, (None, None), 10.0, (8, 60.0)),
        (PHONE, bat(0.8), True, 128_000, 15.0, (320, 240), 1.0, (8, 60.0)),
        (PHONE, bat(0.1), True, 64_000, 10.0, (320, 240), 5.0, (2, 15.0)),
        (PHONE, bat(0.1), False, 64_000, 10.0, (320, 240), 10.0, (2, 15.0)),
        (DESKTOP, bat(0.1), True, 64_000, 10.0, (320, 240), 5.0, (2, 15.0)),
    ],
)
def test_caps_table(
    profile: DeviceProfile, battery: BatteryState | None, visible: bool, bitrate: int,
    fps: float, size: tuple[int | None, int | None], interval: float,
    pool: tuple[int, float],
) -> None:
    s = decide_power(profile, battery, visible=visible)
    assert s.video_max_bitrate == bitrate
    assert s.video_max_framerate == fps
    assert (s.video_width, s.video_height) == size
    assert s.stats_interval == interval
    assert (s.pool_max_size, s.pool_idle_timeout) == pool


@pytest.mark.parametrize(
    ("profile", "network", "bitrate", "reason_part"),
    [
        (DESKTOP, NetworkInfo(save_data=True), 64_000, "Save-Data is on"),
        (DESKTOP, NetworkInfo(effective_type="2g"), 64_000, "slow network (2g)"),
        (PHONE, NetworkInfo(effective_type="slow-2g"), 64_000, "slow network (slow-2g)"),
        (DESKTOP, NetworkInfo(effective_type="3g"), 256_000, "3g network"),
        (PHONE, NetworkInfo(effective_type="3g"), 128_000, "handheld"),
        (DESKTOP, NetworkInfo(effective_type="4g"), 2_500_000, "Battery API"),
    ],
)
def test_network_lowers_caps_but_not_mode(
    profile: DeviceProfile, network: NetworkInfo, bitrate: int, reason_part: str
) -> None:
    s = decide_power(profile, None, visible=True, network=network)
    assert s.mode is N
    assert s.video_max_bitrate == bitrate
    assert reason_part in s.reason
    assert not s.pause_bulk


def test_profile_network_is_the_default() -> None:
    slow_phone = classify_device(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        None, 5, "iPhone", {"effectiveType": "2g"},
    )
    assert decide_power(slow_phone, None, visible=True).video_max_bitrate == 64_000
    fast = decide_power(slow_phone, None, visible=True, network=NetworkInfo("4g"))
    assert fast.video_max_bitrate == 128_000


@pytest.mark.parametrize("level", [-0.1, 1.5, float("nan")])
def test_bad_battery_level(level: float) -> None:
    with pytest.raises(LocalProtocolError):
        BatteryState(level=level, charging=False)


def test_discharge_then_charge_sequence() -> None:
    mode = N
    modes = []
    for level, charging in [(0.3, False), (0.19, False), (0.21, False), (0.24, False),
                            (0.24, True), (0.22, False), (0.18, False), (0.26, False)]:
        mode = decide_power(PHONE, bat(level, charging), visible=True, previous_mode=mode).mode
        modes.append(mode)
    assert modes == [N, S, S, S, N, N, S, N]
