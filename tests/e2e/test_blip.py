"""A network blip mid-transfer: the link really goes down, ICE restarts, nothing is lost.

Two Chromiums: one in this network namespace, one in a namespace of its own,
joined only by a veth pair (test hosts this test creates and removes itself).
Page B lives behind the veth, so taking its end of the link down cuts every
path between the peers — the kernel drops the packets; nothing is simulated in
the browser. The signaling server listens on the veth address so both pages
reach it.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browsers import CHROMIUM_ARGS, chromium_path
from tests.conftest import PyPage, ServerProcess, missing_prerequisite, wait_until
from tests.netns import unavailable

pytestmark = pytest.mark.e2e


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Link:
    """A veth pair: ``host`` end here, ``peer`` end inside namespace ``ns``."""

    def __init__(self) -> None:
        n = random.randint(1, 250)
        tag = f"{os.getpid() % 10000}{n}"
        self.ns = f"pyapp-blip-{tag}"
        self.host_if, self.peer_if = f"pbh{tag}"[:15], f"pbp{tag}"[:15]
        self.host_ip, self.peer_ip = f"10.77.{n}.1", f"10.77.{n}.2"
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            _ip("link", "set", self.peer_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_if)
            _ip("-n", self.ns, "link", "set", self.peer_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
            # A default route makes the veth the interface Chromium gathers candidates on.
            _ip("-n", self.ns, "route", "add", "default", "via", self.host_ip)
        except Exception:
            self.remove()
            raise

    def set_up(self, up: bool) -> None:
        _ip("-n", self.ns, "link", "set", self.peer_if, "up" if up else "down")
        if up:
            # The kernel drops the default route with the link; a network that comes
            # back (DHCP, a Wi-Fi rejoin) brings it back too. Without it Chromium, on
            # its next network scan, finds no usable route and every redial times out.
            _ip("-n", self.ns, "route", "replace", "default", "via", self.host_ip)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    reason = unavailable()
    if reason is not None:
        missing_prerequisite(f"the blip tests: {reason}")
    lnk = Link()
    yield lnk
    lnk.remove()


@dataclass
class Split:
    """Two ready pages, one on each side of the link, and a fresh room."""

    receiver: PyPage
    """the page in the namespace behind the veth pair"""
    sender: PyPage
    """the page in this namespace"""
    room: str


@pytest.fixture
def split(link: Link, playwright_instance: Any, chromium: Any) -> Iterator[Split]:
    """A server on the link's host address and a page on each side of the link."""
    server = ServerProcess("--host", link.host_ip)
    tmp = Path(tempfile.mkdtemp(prefix="pyapp-blip-"))
    remote = playwright_instance.chromium.launch(
        executable_path=_chromium_in(link.ns, tmp), args=CHROMIUM_ARGS, headless=True)
    try:
        receiver = PyPage(remote.new_context().new_page(), server.url).open()
        sender = PyPage(chromium.new_context(permissions=["camera", "microphone"]).new_page(),
                        server.url).open()
        room = "blip-" + uuid.uuid4().hex[:8]
        receiver.py(f"ROOM = {room!r}")
        sender.py(f"ROOM = {room!r}")
        yield Split(receiver, sender, room)
        sender.page.context.close()
    finally:
        remote.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# What the receiving page counts, for both tests.
RECEIVED = """
import asyncio, hashlib, json
state = {"bytes": 0, "messages": 0, "hash": hashlib.sha256(), "ice": [], "incoming": 0}
def on_channel(ch):
    def on_message(m):
        state["bytes"] += len(m); state["messages"] += 1; state["hash"].update(m)
    ch.events.on("message", on_message)
"""

# The sending page's steady stream on channel `ch` (a failure is kept, and asserted).
PRODUCER = """
import asyncio, hashlib, os
sent = hashlib.sha256()
progress = {"sent": 0, "done": False, "error": None}
async def produce(ch, total):
    block = os.urandom(64 * 1024)
    try:
        for i in range(total // len(block)):
            body = i.to_bytes(8, "big") + block[8:]
            sent.update(body)
            await ch.send(body)
            progress["sent"] += len(body)
            await asyncio.sleep(0.002)   # a steady stream, so the outage lands mid-transfer
    except Exception as exc:
        progress["error"] = repr(exc)
    progress["done"] = True
"""


def _chromium_in(ns: str, directory: Path) -> str:
    """A launcher that starts Chromium inside namespace ``ns`` (Playwright talks to it over pipes)."""
    chromium = chromium_path()
    assert chromium, "no Chromium"
    script = directory / "chromium-in-netns"
    script.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {chromium} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


RECEIVER = RECEIVED + """
from pyapp.browser import Connection, SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser._ffi import spawn
from pyapp.core.negotiation import is_polite
client = SignalingClient(default_url())
await client.join(ROOM)
pcs = {}
def on_signal(sender, data):
    pc = pcs.get(sender)
    if pc is None:
        pc = pcs[sender] = Connection(signal=lambda m: client.send_signal(sender, m),
                                      polite=is_polite(client.peer_id, sender))
        pc.events.on("iceconnectionstatechange", state["ice"].append)
        pc.multiplexer().events.on("channel", on_channel)
    spawn(pc.handle_signal(data), "receiver signal")
client.events.on("signal", on_signal)
client.peer_id
"""

SENDER = PRODUCER + """
import json
from pyapp.browser._ffi import spawn
from pyapp.browser import Connection, SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser.reconnect import ReconnectSupervisor
from pyapp.core.negotiation import is_polite
client = SignalingClient(default_url())
welcome = await client.join(ROOM)
peer = welcome.peers[0]
pc = Connection(signal=lambda m: client.send_signal(peer, m), polite=is_polite(client.peer_id, peer))
client.events.on("signal", lambda sender, data: spawn(pc.handle_signal(data), "signal") if sender == peer else None)
ice = []
pc.events.on("iceconnectionstatechange", ice.append)
sup = ReconnectSupervisor(pc, grace=0.5, restart_timeout=20.0)
steps = []
sup.events.on("reconnect", lambda e: steps.append(type(e).__name__))
mux = pc.multiplexer()
await mux.wait_open(20)
ch = mux.create_multiplexed_channel(label="bulk")
await ch.wait_accepted(10)
producer = asyncio.ensure_future(produce(ch, TOTAL))
client.peer_id
"""


def test_link_outage_mid_transfer_restarts_ice_and_loses_nothing(link: Link, split: Split) -> None:
    receiver, sender = split.receiver, split.sender
    total = 12 * 1024 * 1024
    receiver.py(RECEIVER)
    sender.py(f"TOTAL = {total}")
    sender.py(SENDER, timeout=60)
    wait_until(lambda: receiver.py("state['bytes']") > 2 * 1024 * 1024, timeout=60)

    link.set_up(False)                       # the blip: the kernel drops everything
    before = receiver.py("state['bytes']")
    # Down until ICE has noticed and the supervisor has restarted it (how long
    # ICE takes to notice varies), well short of SCTP giving up (that is the
    # redial test's case).
    wait_until(lambda: sender.py("sup.restarts") >= 1, timeout=20, interval=0.2)
    time.sleep(1.0)
    during = receiver.py("state['bytes']")
    link.set_up(True)

    wait_until(lambda: receiver.py("state['bytes']") >= total, timeout=120, interval=0.5)
    result = sender.pyjson("json.dumps({'sha': sent.hexdigest(), 'ice': ice, 'steps': steps, "
                           "'restarts': sup.restarts, 'state': pc.connection_state, "
                           "'closed': sup.closed, 'error': progress['error']})")
    got = receiver.pyjson("json.dumps({'sha': state['hash'].hexdigest(), "
                          "'messages': state['messages'], 'ice': state['ice']})")

    assert result["error"] is None, result["error"]
    # Bytes stopped flowing while the link was down (a real interruption) ...
    assert during - before < 256 * 1024, (before, during)
    # ... ICE noticed, the supervisor restarted ICE, and the connection came back.
    assert "disconnected" in result["ice"] or "failed" in result["ice"], result["ice"]
    assert result["restarts"] >= 1, result["steps"]
    assert result["state"] == "connected" and not result["closed"]
    # Everything arrived exactly once, in order: the SHA-256 of what arrived is what was sent.
    assert got["messages"] == total // (64 * 1024)
    assert got["sha"] == result["sha"]



POOL_COMMON = """
import asyncio, hashlib, json, os
from pyapp.browser import SignalingClient
from pyapp.browser.signaling import default_url
from pyapp.browser.pool import ConnectionPool, SignalingDialer
client = SignalingClient(default_url())
await client.join(ROOM)
dialer = SignalingDialer(client, timeout=20.0)
story = []   # what signaling did, with times: read when a test fails
def tell(*what):
    story.append([round(asyncio.get_event_loop().time(), 1), *what])
client.events.on("state", lambda s: tell("signaling", s))
client.events.on("peer-left", lambda p: tell("peer-left", p))
client.events.on("peer-joined", lambda p: tell("peer-joined", p))
client.events.on("error", lambda e: tell("signaling-error", str(e)[:120]))
"""

POOL_RECEIVER = POOL_COMMON + RECEIVED + """
wired = set()
def on_incoming(peer, pc):
    state["incoming"] += 1
    session = pc.multiplexer()      # the resumed session when the peer asked for one
    if id(session) not in wired:
        wired.add(id(session))
        session.events.on("channel", on_channel)
dialer.events.on("incoming", on_incoming)
client.peer_id
"""

POOL_SENDER = POOL_COMMON + PRODUCER + """
pool = ConnectionPool(2, timeout=120.0, dialer=dialer, reconnect={
    "grace": 0.5, "restart_timeout": 3.0, "base_delay": 0.5, "max_delay": 2.0,
    "max_attempts": 10, "redial_timeout": 25.0})
pool.events.on("reconnect", lambda peer, e: tell(repr(e)[:160]))
pool.events.on("gone", lambda peer, reason: tell("gone", reason))
lease = await pool.get_connection(PEER)
pool.peek(PEER).supervisor.events.on("redial-failed", lambda e: tell("redial-failed", repr(e)[:200]))
session = lease.pc.multiplexer()
await session.wait_open(20)
first_pc = lease.pc
ch = session.create_multiplexed_channel(label="orders")
await ch.wait_accepted(10)
producer = asyncio.ensure_future(produce(ch, TOTAL))
client.peer_id
"""


def test_redial_through_the_pool_resumes_the_multiplexed_session(link: Link, split: Split) -> None:
    receiver, sender = split.receiver, split.sender
    total = 8 * 1024 * 1024
    peer = receiver.py(POOL_RECEIVER)
    sender.py(f"TOTAL = {total}; PEER = {peer!r}")
    sender.py(POOL_SENDER, timeout=60)
    wait_until(lambda: receiver.py("state['bytes']") > 1024 * 1024, timeout=60)

    # A long outage: SCTP gives up retransmitting, so the supervisor redials
    # through signaling once the link is back, and both sides resume.
    link.set_up(False)
    time.sleep(14.0)
    link.set_up(True)

    try:
        wait_until(lambda: receiver.py("state['bytes']") >= total, timeout=120, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_pool_story(receiver, sender)}") from None
    result = sender.pyjson("json.dumps({'sha': sent.hexdigest(), 'error': progress['error'], "
                           "'redialled': lease.pc is not first_pc, 'state': lease.pc.connection_state})")
    got = receiver.pyjson("json.dumps({'sha': state['hash'].hexdigest(), "
                          "'messages': state['messages'], 'incoming': state['incoming'], "
                          "'resumed': dialer.resumed})")

    assert result["error"] is None, result["error"]
    assert result["redialled"], "the connection was not replaced: the test did not exercise a redial"
    assert result["state"] == "connected"
    assert got["incoming"] >= 2 and got["resumed"] >= 1, got
    # Nothing lost, nothing twice: every message arrived once, in order.
    assert got["messages"] == total // (64 * 1024)
    assert got["sha"] == result["sha"]


def _pool_story(receiver: PyPage, sender: PyPage) -> str:
    """What each side saw, for a redial that did not complete."""
    told = sender.py("json.dumps({'progress': progress, 'pool': repr(pool), 'story': story})")
    heard = receiver.py("json.dumps({'bytes': state['bytes'], 'incoming': state['incoming'], "
                        "'resumed': dialer.resumed, 'story': story})")
    return f"sender {told}; receiver {heard}"
