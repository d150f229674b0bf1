"""Page side of the end-to-end tests that drive the real app page
(tests/e2e/test_two_pages.py, test_mobile_e2e.py, test_dashboard.py,
test_app_trust.py, test_app_ready.py), called with ``pypage.call``.

Each function reads (or pokes) the app's own state: ``pyapp.browser.app.APP``,
its power UI and its dashboard. Nothing here keeps state between calls.
"""

from __future__ import annotations

from typing import Any

from pyapp.browser import identity
from pyapp.browser.app import APP, Peer
from pyapp.browser.signaling import SignalingClient
from pyapp.browser.ui_dashboard import current_dashboard
from pyapp.browser.ui_power import PowerUI, current_ui
from pyapp.core.security.safety import safety_code


def _only_peer() -> Peer:
    [peer] = APP.peers.values()
    return peer


def _client() -> SignalingClient:
    if APP.client is None:
        raise AssertionError("the app has not joined a room")
    return APP.client


def _power_ui() -> PowerUI:
    ui = current_ui()
    if ui is None:
        raise AssertionError("the power UI is not bound")
    return ui


# ---- signaling (test_two_pages, test_app_trust)


def signaling_client() -> dict[str, Any]:
    """The app's signaling client: its session id, state, reconnect count and room."""
    client = _client()
    return {"peer_id": client.peer_id, "state": client.state, "reconnects": client.reconnects,
            "room": client.room}


def drop_signaling() -> None:
    """Drop the app's signaling socket (as a network blip would); it reconnects by itself."""
    _client().drop_connection()


def peer_sessions() -> list[str]:
    """The signaling session ids of the peers the app lists."""
    return list(APP.peers)


# ---- video and power (test_mobile_e2e)


async def video_state() -> dict[str, Any]:
    """The only peer's video sender caps, track settings, outbound-rtp, and the power mode."""
    pc = next(iter(APP.peers.values())).pc
    senders = [s for s in pc.get_senders() if s.track and s.track.kind == "video"]
    out: dict[str, Any] = {"senders": len(senders)}
    if senders:
        enc = senders[0].getParameters().encodings
        out["caps"] = [[getattr(e, "maxBitrate", None), getattr(e, "maxFramerate", None)] for e in enc]
        s = senders[0].track.getSettings()
        out["track"] = [s.width, s.height, round(s.frameRate)]
    out["rtp"] = [s for s in await pc.get_stats_raw()
                  if s.get("type") == "outbound-rtp" and s.get("kind") == "video"]
    out["mode"] = _power_ui().power.mode.value
    return out


def stats_interval() -> float:
    """The statistics poll interval the power policy currently asks for."""
    return _power_ui().power.settings.stats_interval


# ---- dashboard (test_dashboard, test_app_ready)


def dashboard_bound() -> bool:
    return current_dashboard() is not None


async def send_on_new_channel(label: str, count: int, size: int) -> None:
    """Open an application channel on the multiplexer the dashboard set up; send ``count`` messages."""
    ch = _only_peer().pc.multiplexer().create_multiplexed_channel(label=label)
    for _ in range(count):
        await ch.send(b"x" * size)


def dashboard_quality() -> list[Any]:
    """The only monitor's source, quality label, RTT, poll count and error count."""
    dashboard = current_dashboard()
    if dashboard is None:
        raise AssertionError("the dashboard is not bound")
    [m] = dashboard.monitors.values()
    return [m.source, m.quality.label.value, m.quality.round_trip_time, m.polls, m.errors]


# ---- trust (test_app_trust)


def computed_safety_code() -> str:
    """The safety code computed from our key and the only peer's verified key."""
    me = identity.CURRENT
    auth = _only_peer().auth
    if me is None or auth is None:
        raise AssertionError(f"no identity ({me!r}) or no verified peer ({auth!r})")
    return str(safety_code(me.alg, me.public_key, auth.peer_alg, auth.peer_public_key))


def chat_peer_count() -> int:
    return len(APP.chat_peers())


async def send_chat(text: str) -> int:
    """``APP.send_chat(text)``: how many peers it went to."""
    return await APP.send_chat(text)


async def contact_is_pinned_to_peer(name: str) -> bool:
    """Whether the trust store binds ``name`` to the only peer's verified PeerId."""
    store = await APP.trust_store()
    auth = _only_peer().auth
    if auth is None:
        raise AssertionError("the peer is not verified")
    return store.peers.contacts[name] == auth.peer_id


def close_peer_connection() -> None:
    """Close the only peer's connection (the link ends; signaling stays)."""
    _only_peer().pc.close()
