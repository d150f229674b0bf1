"""TURN through a real coturn: relay-only paths, a wrong secret, expired credentials.

coturn is Debian's ``turnserver``, started by the tests on free ports with a
generated secret (``web.turn.Coturn``); the credentials come from the real
signaling server (``--turn-url``/``--turn-secret``/``--turn-ttl``) in its welcome.

The key test builds three network namespaces: ``t`` holds coturn and the
signaling server, ``a`` and ``b`` hold one Chromium each. ``a`` and ``b`` each
have one veth link to ``t`` and a route to the one address coturn and the server
listen on, nothing else: no route to each other, and ``t`` does not forward. The
only way between the pages is through coturn's relayed addresses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browsers import FIREFOX_PREFS, firefox_path
from tests.conftest import PyPage, ServerProcess, missing_prerequisite, wait_until
from tests.netns import End, Lab, Namespace, NamespacedServer, unavailable
from web.turn import Coturn, TurnConfig, TurnIssuer

pytestmark = pytest.mark.e2e


def _need_coturn() -> None:
    if shutil.which("turnserver") is None and not Path("/usr/bin/turnserver").exists():
        missing_prerequisite("coturn's turnserver (python3 build.py test installs it as root)")


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    _need_coturn()
    with Coturn() as turn:
        yield turn


# ---------------------------------------------------------------- coturn by itself

AIORTC_PAIR = """
import asyncio, json, sys
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

async def main(servers):
    cfg = lambda: RTCConfiguration(iceServers=[RTCIceServer(**s) for s in servers],
                                   iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    a, b = RTCPeerConnection(cfg()), RTCPeerConnection(cfg())
    ch = a.createDataChannel("x")
    got = asyncio.get_running_loop().create_future()
    b.on("datachannel", lambda c: c.on("message", lambda m: got.done() or got.set_result(m)))
    ch.on("open", lambda: ch.send("through the relay"))
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    relay = "typ relay" in a.localDescription.sdp
    message = None
    if relay:   # without relay candidates (relay-only policy) there is nothing to wait for
        try:
            message = await asyncio.wait_for(got, 8)
        except TimeoutError:
            pass  # reported as message None
    await a.close(); await b.close()
    print(json.dumps({"relay_candidates": relay, "message": message}))

asyncio.run(main(json.loads(sys.argv[1])))
"""


def _aiortc_pair(servers: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Two aiortc peers (a TURN client we did not write), relay-only, through ``servers``."""
    entries = [{"urls": s["urls"], "username": s["username"], "credential": s["credential"]}
               for s in servers]
    done = subprocess.run([sys.executable, "-c", AIORTC_PAIR, json.dumps(entries)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_coturn_accepts_our_credentials_and_refuses_others(coturn: Coturn) -> None:
    good = TurnIssuer(TurnConfig(tuple(coturn.urls()), coturn.secret, ttl=60)).grant("aiortc-1")
    assert _aiortc_pair(good.ice_servers) == {"relay_candidates": True, "message": "through the relay"}
    assert coturn.count(r"user <\d+:aiortc-1>: incoming packet ALLOCATE processed, success") >= 2

    wrong = TurnIssuer(TurnConfig(tuple(coturn.urls()), "not-" + coturn.secret, ttl=60)).grant("aiortc-2")
    assert _aiortc_pair(wrong.ice_servers) == {"relay_candidates": False, "message": None}
    assert coturn.count(r"user <\d+:aiortc-2>: .*error 401") >= 1
    assert coturn.count(r"user <\d+:aiortc-2>: incoming packet ALLOCATE processed, success") == 0

    # Expired (REST usernames carry the expiry): refused the same way.
    expired = TurnIssuer(TurnConfig(tuple(coturn.urls()), coturn.secret, ttl=60),
                         clock=lambda: 1_000_000.0).grant("aiortc-3")
    assert _aiortc_pair(expired.ice_servers)["relay_candidates"] is False
    assert coturn.count(r"user <\d+:aiortc-3>: incoming packet ALLOCATE processed, success") == 0


# ---------------------------------------------------------------- page code

PAGE_COMMON = """
import asyncio, hashlib, json, os
from pyapp.browser import Connection, SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser._ffi import spawn
from pyapp.browser.relay import RelayWatcher
from pyapp.core.negotiation import is_polite
client = SignalingClient(default_url())
welcome = await client.join(ROOM)
relay_errors = []
def make_pc(peer):
    pc = Connection(signal=lambda m: client.send_signal(peer, m),
                        polite=is_polite(client.peer_id, peer),
                        ice_servers=client.ice_servers, ice_transport_policy=POLICY)
    RelayWatcher(pc).events.on("relay-error", lambda e: relay_errors.append(str(e)))
    return pc
async def pair_types(pc):
    s = await pc.get_statistics()
    return [s.local_candidate_type, s.remote_candidate_type]
from pyapp.browser._ffi import await_js
async def local_relay_protocol(pc):
    # how the selected local relay candidate reaches coturn (udp/tcp), from raw getStats
    report = await await_js(pc.peer.js_pc.getStats())
    stats = {str(s.id): s for s in report.values()}
    pair_id = next(str(s.selectedCandidatePairId) for s in stats.values()
                   if s.type == "transport" and getattr(s, "selectedCandidatePairId", None))
    local = stats[str(stats[pair_id].localCandidateId)]
    return str(getattr(local, "relayProtocol", None))
"""

RECEIVER = PAGE_COMMON + """
state = {"bytes": 0, "messages": 0, "hash": hashlib.sha256()}
pcs = {}
def on_channel(ch):
    def on_message(m):
        state["bytes"] += len(m); state["messages"] += 1; state["hash"].update(m)
    ch.events.on("message", on_message)
def on_signal(sender, data):
    pc = pcs.get(sender)
    if pc is None:
        pc = pcs[sender] = make_pc(sender)
        pc.events.on("datachannel", on_channel)
    spawn(pc.handle_signal(data), "receiver signal")
client.events.on("signal", on_signal)
json.dumps(client.ice_servers)
"""

SENDER = PAGE_COMMON + """
import js
peer = welcome.peers[0]
t0 = js.performance.now()
pc = make_pc(peer)
client.events.on("signal", lambda s, d: spawn(pc.handle_signal(d), "signal") if s == peer else None)
ch = pc.create_data_channel("bulk")
await ch.wait_open(40)
setup_ms = js.performance.now() - t0
sent = hashlib.sha256()
block = os.urandom(64 * 1024)
for i in range(TOTAL // len(block)):
    body = i.to_bytes(8, "big") + block[8:]
    sent.update(body)
    await ch.send(body)
json.dumps({"setup_ms": setup_ms, "sha": sent.hexdigest()})
"""


# ---------------------------------------------------------------- namespaces

@dataclass
class RelayLab:
    """coturn and the server in ``t``; a page in ``a`` and one in ``b``; only t's address between them."""

    lab: Lab
    t: Namespace
    a: Namespace
    b: Namespace
    ta: End
    at: End
    tb: End
    bt: End
    turn: Coturn
    server: NamespacedServer
    variant: str
    """``udp``, or ``tcp-only`` (coturn takes clients over TCP only)."""

    @property
    def urls(self) -> list[str]:
        return self.turn.urls(transports=("udp", "tcp") if self.variant == "tcp-only" else ("udp",))

    @property
    def origin(self) -> str:
        return self.server.url(self.ta.ip)


def _connect_fails(ns: Namespace, address: str) -> str:
    """Try a UDP send and a TCP connect from ``ns`` to ``address``; the error text (empty if it worked)."""
    probe = ("import socket\n"
             "errs = []\n"
             "try:\n"
             f"    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ({address!r}, 9))\n"
             "except OSError as e: errs.append(str(e))\n"
             "try:\n"
             f"    socket.create_connection(({address!r}, 9), timeout=2)\n"
             "except OSError as e: errs.append(str(e))\n"
             "print(' | '.join(errs))\n")
    return ns.run(sys.executable, "-c", probe).stdout.strip()


@pytest.fixture(params=["udp", "tcp-only"])
def relay_lab(request: pytest.FixtureRequest) -> Iterator[RelayLab]:
    """With ``tcp-only``, coturn takes no UDP from clients (as behind a firewall that
    lets only TCP through): the pages get both URLs and must relay over ``?transport=tcp``."""
    reason = unavailable()
    if reason is not None:
        missing_prerequisite(f"the TURN namespace test: {reason}")
    _need_coturn()
    lab = Lab("h6")
    turn: Coturn | None = None
    try:
        t, a, b = lab.namespace("t"), lab.namespace("a"), lab.namespace("b")
        ta, at = lab.link(t, a)
        tb, bt = lab.link(t, b)
        t.sysctl("net.ipv4.ip_forward", "0")
        # b reaches t's address on the a-side link through its own link to t: t
        # delivers it locally (no forwarding). Nothing else is routed anywhere.
        b.run("ip", "route", "add", f"{ta.ip}/32", "via", tb.ip)
        tcp_only = request.param == "tcp-only"
        turn = Coturn(listen=(ta.ip,), prefix=tuple(t.prefix), extra=("--no-udp",) if tcp_only else ())
        turn.start()
        urls = turn.urls(transports=("udp", "tcp") if tcp_only else ("udp",))
        server = NamespacedServer(t, *[f"--turn-url={u}" for u in urls], "--turn-secret", turn.secret,
                                  "--turn-ttl", "600")
        yield RelayLab(lab, t, a, b, ta, at, tb, bt, turn, server, request.param)
    finally:
        if turn is not None:
            turn.stop()
        lab.close()


def _page(browser: Any, origin: str, path: str = "/?noapp=1") -> PyPage:
    context = browser.new_context(permissions=["camera", "microphone"])
    context.set_default_timeout(60_000)
    return PyPage(context.new_page(), origin).open(path)


def test_pages_without_a_route_to_each_other_connect_through_coturn(
        relay_lab: RelayLab, playwright_instance: Any) -> None:
    lab = relay_lab
    # The separation is real: neither side can send to the other at all.
    assert "unreachable" in _connect_fails(lab.a, lab.bt.ip).lower()
    assert "unreachable" in _connect_fails(lab.b, lab.at.ip).lower()

    # crypto.subtle & co. need a secure context; http://10.x is not one by default.
    secure = [f"--unsafely-treat-insecure-origin-as-secure={lab.origin}"]
    browser_a = lab.a.launch_chromium(playwright_instance, secure)
    browser_b = lab.b.launch_chromium(playwright_instance, secure)
    try:
        receiver, sender = _page(browser_a, lab.origin), _page(browser_b, lab.origin)
        room = "turn-" + uuid.uuid4().hex[:8]
        total = 4 * 1024 * 1024
        # a insists on the relay; b may use anything, but only relayed addresses lead to a.
        receiver.py(f"ROOM = {room!r}; POLICY = 'relay'")
        servers = json.loads(receiver.py(RECEIVER))
        assert servers and servers[0]["urls"] == lab.urls, servers
        assert servers[0]["username"].endswith(":" + receiver.py("client.peer_id"))
        sender.py(f"ROOM = {room!r}; POLICY = 'all'; TOTAL = {total}")
        sent = sender.pyjson(SENDER, timeout=90)

        wait_until(lambda: receiver.py("state['bytes']") >= total, timeout=60, interval=0.2)
        got = receiver.pyjson("json.dumps({'sha': state['hash'].hexdigest(), "
                              "'messages': state['messages'], "
                              "'types': await pair_types(next(iter(pcs.values()))), "
                              "'relay_protocol': await local_relay_protocol(next(iter(pcs.values()))), "
                              "'errors': relay_errors})")
        sender_types = sender.py("await pair_types(pc)")
        sender_errors = sender.py("relay_errors")
    finally:
        browser_a.close()
        browser_b.close()

    assert got["sha"] == sent["sha"] and got["messages"] == total // (64 * 1024)
    # getStats: the selected pair goes through a relayed candidate on both sides.
    assert got["types"][0] == "relay", got["types"]
    # a reached coturn over UDP, or over TCP when coturn took no UDP.
    assert got["relay_protocol"] == ("tcp" if lab.variant == "tcp-only" else "udp"), got
    assert sender_types[1] == "relay", sender_types
    assert got["errors"] == [] and sender_errors == [], (got["errors"], sender_errors)
    # coturn really relayed: both pages allocated with their own REST usernames.
    assert lab.turn.count(r"ALLOCATE processed, success") >= 2
    print(f"{lab.variant}: relay setup {sent['setup_ms']:.0f} ms; a: {got['types']} over "
          f"{got['relay_protocol']}, b: {sender_types}")


# ---------------------------------------------------------------- loopback cases

def _loopback_page(chromium: Any, server: ServerProcess, path: str = "/?noapp=1") -> PyPage:
    context = chromium.new_context(permissions=["camera", "microphone"])
    context.set_default_timeout(30_000)
    return PyPage(context.new_page(), server.url).open(path)


APP_STATE = """
import json
from pyapp.browser.app import APP
async def _app_state():
    out = {"policy": APP.ice_transport_policy, "errors": APP.errors, "peers": {},
           "ice_servers": APP.client.ice_servers if APP.client else []}
    for peer in APP.peers.values():
        s = await peer.pc.get_statistics() if peer.pc.connection_state == "connected" else None
        out["peers"][peer.peer_id] = {"state": peer.pc.connection_state,
            "types": [s.local_candidate_type, s.remote_candidate_type] if s else None,
            "messages": peer.messages}
    return json.dumps(out)
"""


def _app_pages(chromium: Any, server: ServerProcess, room: str) -> list[PyPage]:
    pages = []
    for _ in range(2):
        page = _loopback_page(chromium, server, f"/?room={room}&relay=1")
        page.py(APP_STATE)
        pages.append(page)
    return pages


def _state(page: PyPage) -> dict[str, Any]:
    return dict(page.pyjson("await _app_state()"))


def test_the_app_with_relay_1_connects_through_a_local_coturn(chromium: Any) -> None:
    _need_coturn()
    server = ServerProcess("--turn-local", "--turn-ttl", "600")
    pages: list[PyPage] = []
    try:
        room = "turn-" + uuid.uuid4().hex[:8]
        pages = _app_pages(chromium, server, room)
        for page in pages:
            wait_until(lambda page=page: [p["state"] for p in _state(page)["peers"].values()]
                       == ["connected"], timeout=40, interval=0.3)
        # The app authenticates each peer before chat (over the relayed connection too).
        for page in pages:
            wait_until(lambda page=page: page.py("len(APP.chat_peers())") == 1, timeout=30)
        assert pages[0].py("await APP.send_chat('relayed hello')") == 1
        wait_until(lambda: any("relayed hello" in p["messages"] for p in _state(pages[1])["peers"].values()),
                   timeout=15)
        states = [_state(page) for page in pages]
    finally:
        for page in pages:
            page.page.context.close()
        server.stop()
    for state in states:
        assert state["policy"] == "relay"
        (peer,) = state["peers"].values()
        assert peer["types"] == ["relay", "relay"], peer
        assert state["errors"] == [], state["errors"]
    (entry,) = states[0]["ice_servers"]
    url = entry["urls"][0]
    assert url.startswith("turn:127.0.0.1:") and url.endswith("?transport=udp"), entry
    # The local coturn went away with the server: its port is free again.
    port = int(url.split(":")[2].split("?")[0])

    def port_free() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    wait_until(port_free, timeout=10)


def test_a_wrong_secret_gives_the_page_an_error_naming_the_relay(coturn: Coturn, chromium: Any) -> None:
    server = ServerProcess("--turn-url", coturn.urls()[0], "--turn-secret", "not-the-secret")
    pages: list[PyPage] = []
    try:
        pages = _app_pages(chromium, server, "turn-" + uuid.uuid4().hex[:8])
        errors = [wait_until(lambda page=page: _state(page)["errors"], timeout=30) for page in pages]
        shown = pages[1].page.locator("#error-text").inner_text()
    finally:
        for page in pages:
            page.page.context.close()
        server.stop()
    for page_errors in errors:
        relay = [e for e in page_errors if e.startswith("TURN relay")]
        assert len(relay) == 1, page_errors
        assert relay[0].startswith(f"TURN relay {coturn.urls()[0]}: error 401"), relay
        assert "--turn-secret" in relay[0] and "static-auth-secret" in relay[0]
    assert "TURN relay" in shown or any("TURN relay" in e for e in errors[1]), shown
    assert coturn.count(r"ALLOCATE processed, success") == 0
    assert coturn.count(r"error 401") >= 2


def test_a_relay_that_does_not_answer_is_named_and_one_that_works_reports_nothing(
        coturn: Coturn, chromium: Any) -> None:
    # A TURN URL whose port nobody listens on: the allocation goes unanswered (701),
    # ICE fails, and the watcher names that relay. The working relay next to it,
    # tried on its own, connects with no error at all (Chromium's own 701s for
    # sockets it abandons once connected are not failures).
    port = _free_udp_port()
    silent = f"turn:127.0.0.1:{port}?transport=udp"
    server = ServerProcess()
    try:
        context = chromium.new_context()
        page = PyPage(context.new_page(), server.url).open()
        good = TurnIssuer(TurnConfig(tuple(coturn.urls()), coturn.secret, ttl=300)).grant("page")
        servers = [dict(s) for s in good.ice_servers]
        dead = page.call("tests.pyodide.relay_cases:relay_only", timeout=150, wait=5, gather=120,
                         ice_servers=[dict(servers[0], urls=[silent])])
        working = page.call("tests.pyodide.relay_cases:relay_only", timeout=60, wait=15, gather=0,
                            ice_servers=servers)
        context.close()
    finally:
        server.stop()
    assert dead["types"] is None, dead
    # Chromium names it twice when its STUN binding and TURN allocation both time out.
    assert dead["errors"] and all(e["code"] == 701 and f"127.0.0.1:{port}" in e["url"]
                                  and "did not answer" in e["text"] for e in dead["errors"]), dead
    print(f"an unanswered relay was named after {dead['seconds']} s")
    assert working["types"] == ["relay", "relay"], working
    assert working["errors"] == [], working


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


EXPIRY = """
import asyncio, json, js
from pyapp.browser import SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.relay import RelayWatcher
from pyapp.core.turn import expiry_of

def now():
    return js.Date.now() / 1000

async def try_relay(servers, wait):
    a, b = loopback_pair(ice_servers=servers, ice_transport_policy="relay")
    errors = []
    RelayWatcher(a).events.on("relay-error", lambda e: errors.append(str(e)))
    ch = a.create_data_channel("x")
    types = None
    try:
        await ch.wait_open(wait)
        s = await a.get_statistics()
        types = [s.local_candidate_type, s.remote_candidate_type]
    except TimeoutError:
        pass   # the result says it did not open
    a.close(); b.close()
    return {"types": types, "errors": errors}

client = SignalingClient(default_url(), min_backoff=5.0, max_backoff=5.0)
pushed, welcomes = [], []
client.events.on("ice-servers", lambda s: pushed.append(s[0]["username"]))
client.events.on("welcome", lambda w: welcomes.append(w.peer_id))
await client.join(ROOM)
first = client.ice_servers[0]["username"]
await asyncio.sleep(3.5)                      # joined: a push halfway through each 2-3 s lifetime
pushes_while_joined = len(pushed)
client.drop_connection()                      # signaling down for 5 s: no pushes
await asyncio.sleep(0.3)
stale = client.ice_servers
stale_expiry = expiry_of(stale[0]["username"])
while now() <= stale_expiry + 1.5:     # coturn compares whole seconds: valid through the expiry second
    await asyncio.sleep(0.2)
state_when_stale = client.state
stale_result = await try_relay(stale, 4)
stale_tried_at = now()
while client.state != "open" or client.ice_servers == stale:
    await asyncio.sleep(0.2)
fresh = client.ice_servers
fresh_result = await try_relay(fresh, 15)
json.dumps({"first": first, "pushes": pushes_while_joined, "welcomes": len(welcomes),
            "state_when_stale": state_when_stale, "stale_expiry": stale_expiry,
            "stale_tried_at": stale_tried_at, "stale": stale_result,
            "fresh_expiry": expiry_of(fresh[0]["username"]), "fresh_at": now(),
            "fresh": fresh_result, "reconnects": client.reconnects})
"""


def test_expired_credentials_are_refreshed_on_reconnect(coturn: Coturn, chromium: Any) -> None:
    server = ServerProcess("--turn-url", coturn.urls()[0], "--turn-secret", coturn.secret,
                           "--turn-ttl", "2")
    try:
        page = _loopback_page(chromium, server)
        page.py(f"ROOM = {('turn-' + uuid.uuid4().hex[:8])!r}")
        result = page.pyjson(EXPIRY, timeout=60)
        page.page.context.close()
    finally:
        server.stop()
    # While joined, the server pushed fresh credentials before the first ones expired.
    assert result["pushes"] >= 2, result
    # Signaling down past the expiry: the page's newest credentials are stale, and coturn
    # refuses them (401, reported with the relay's name); nothing relays.
    assert result["state_when_stale"] == "reconnecting", result
    assert result["stale_tried_at"] > result["stale_expiry"]
    assert result["stale"]["types"] is None, result["stale"]
    assert any(e.startswith(f"TURN relay {coturn.urls()[0]}: error 401") for e in result["stale"]["errors"])
    # The rejoin's welcome brought fresh ones, and they relay.
    assert result["reconnects"] >= 1 and result["welcomes"] >= 2, result
    assert result["fresh_expiry"] > result["fresh_at"], result
    assert result["fresh"]["types"] == ["relay", "relay"], result["fresh"]
    assert result["fresh"]["errors"] == [], result["fresh"]


RESTART = """
import asyncio, json, js
from pyapp.browser import SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.relay import RelayWatcher, apply_ice_servers
from pyapp.core.turn import expiry_of
from pyapp.exceptions import PyAppError

client = SignalingClient(default_url())
await client.join(ROOM)
first = client.ice_servers

async def relayed_pair():
    a, b = loopback_pair(ice_servers=first, ice_transport_policy="relay")
    errors = []
    for pc in (a, b):
        RelayWatcher(pc).events.on("relay-error", lambda e: errors.append(str(e)))
    ch = a.create_data_channel("x")
    await ch.wait_open(15)
    return a, b, ch, errors

kept = await relayed_pair()        # gets every fresh list the server pushes
stale = await relayed_pair()       # keeps the credentials it was made with
client.events.on("ice-servers", lambda servers: [apply_ice_servers(pc, servers) for pc in kept[:2]])
while js.Date.now() / 1000 <= expiry_of(first[0]["username"]) + 1.5:
    await asyncio.sleep(0.2)

async def restart(pair):
    a, b, ch, errors = pair
    a.restart_ice()
    for _ in range(100):               # up to 10 s for the restart to settle
        await asyncio.sleep(0.1)
        if a.peer.js_pc.iceGatheringState == "complete" and a.ice_connection_state in ("connected", "completed", "failed", "disconnected") and a.signaling_state == "stable":
            break
    await asyncio.sleep(1.0)
    got = []
    other = b.channels[0] if b.channels else None
    if other is not None:
        other.events.on("message", got.append)
    try:
        await ch.send("after the restart")
    except PyAppError as exc:      # reported below, and asserted on
        got.append(f"send failed: {exc!r}")
    await asyncio.sleep(1.0)
    return {"ice": a.ice_connection_state, "errors": errors, "got": got,
            "servers": a.ice_servers[0]["username"]}

result = {"first": first[0]["username"], "kept": await restart(kept), "stale": await restart(stale)}
for pc in (*kept[:2], *stale[:2]):
    pc.close()
json.dumps(result)
"""


def test_open_connections_take_refreshed_credentials_for_an_ice_restart(coturn: Coturn,
                                                                         chromium: Any) -> None:
    server = ServerProcess("--turn-url", coturn.urls()[0], "--turn-secret", coturn.secret,
                           "--turn-ttl", "2")
    try:
        page = _loopback_page(chromium, server)
        page.py(f"ROOM = {('turn-' + uuid.uuid4().hex[:8])!r}")
        result = page.pyjson(RESTART, timeout=90)
        page.page.context.close()
    finally:
        server.stop()
    kept, stale = result["kept"], result["stale"]
    # The connection handed the pushed credentials restarts ICE through the relay ...
    assert kept["servers"] != result["first"], kept
    assert kept["errors"] == [] and kept["got"] == ["after the restart"], kept
    allocated = set(re.findall(r"user <([^>]+)>: incoming packet ALLOCATE processed, success",
                               coturn.log_text()))
    assert result["first"] in allocated
    assert allocated - {result["first"]}, "the restart did not allocate with fresh credentials"
    # ... the one left with the credentials it was made with gets a 401 from coturn.
    assert stale["servers"] == result["first"]
    assert any(" error 401" in e for e in stale["errors"]), stale


FIREFOX_RELAY = """
import json
from pyapp.browser import SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser.loopback import loopback_pair
from pyapp.browser.relay import RelayWatcher
from pyapp.exceptions import ConnectionClosedError
client = SignalingClient(default_url())
await client.join(ROOM)
a, b = loopback_pair(ice_servers=client.ice_servers, ice_transport_policy="relay")
errors = []
RelayWatcher(a).events.on("relay-error", lambda e: errors.append(str(e)))
ch = a.create_data_channel("x")
types = None
try:
    await ch.wait_open(WAIT)
    s = await a.get_statistics()
    types = [s.local_candidate_type, s.remote_candidate_type]
except (TimeoutError, ConnectionClosedError):
    pass   # no relay, so ICE fails: reported as types None, and asserted on
a.close(); b.close(); client.close()
json.dumps({"types": types, "errors": errors})
"""


@pytest.fixture(scope="module")
def firefox_loopback(playwright_instance: Any) -> Iterator[Any]:
    """Firefox ESR that gathers on loopback, so it can reach a coturn on 127.0.0.1."""
    if firefox_path() is None:
        missing_prerequisite("no Firefox ESR (python3 build.py test installs it as root)")
    os.environ.setdefault("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")
    browser = playwright_instance.firefox.launch(
        channel="moz-firefox", executable_path=firefox_path(), headless=True,
        firefox_user_prefs=dict(FIREFOX_PREFS, **{"media.peerconnection.ice.loopback": True}))
    yield browser
    browser.close()


@pytest.mark.parametrize("secret_ok", [True, False], ids=["right-secret", "wrong-secret"])
def test_firefox_relays_through_coturn_and_names_a_relay_that_refuses(
        coturn: Coturn, firefox_loopback: Any, secret_ok: bool) -> None:
    server = ServerProcess("--turn-url", coturn.urls()[0],
                           "--turn-secret", coturn.secret if secret_ok else "not-the-secret")
    try:
        context = firefox_loopback.new_context()
        context.set_default_timeout(30_000)
        page = PyPage(context.new_page(), server.url).open()
        page.py(f"ROOM = {('turn-' + uuid.uuid4().hex[:8])!r}; WAIT = {15 if secret_ok else 6}")
        result = page.pyjson(FIREFOX_RELAY, timeout=40)
        context.close()
    finally:
        server.stop()
    if secret_ok:
        assert result == {"types": ["relay", "relay"], "errors": []}, result
        assert coturn.count(r"ALLOCATE processed, success") >= 2
    else:
        assert result["types"] is None
        # Firefox names the relay without the ?transport= part of the URL.
        host_port = coturn.urls()[0].split("?")[0]
        assert [e for e in result["errors"] if e.startswith(f"TURN relay {host_port}")
                and " error 401" in e], result["errors"]
        assert coturn.count(r"ALLOCATE processed, success") == 0
