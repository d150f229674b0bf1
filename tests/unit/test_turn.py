"""TURN REST credentials and ICE-server lists (pyapp.core.turn) and the server's issuer (web.turn)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import itertools
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.signaling import IceServers, Welcome, encode, parse_server_message
from pyapp.core.turn import (
    MAX_ICE_SERVERS,
    check_turn_url,
    expiry_of,
    parse_ice_servers,
    refresh_time,
    rest_credentials,
)
from pyapp.exceptions import SignalingError, SignalingMessageError
from web.server import make_app
from web.turn import (
    SECRET_ENV,
    Coturn,
    TurnConfig,
    TurnIssuer,
    add_turn_flags,
    turn_from_args,
)

pytestmark = pytest.mark.unit


def _oracle(secret: str, username: str) -> str:
    """The password as an independent HMAC-SHA1 implementation computes it."""
    mac = HMAC(secret.encode(), hashes.SHA1())
    mac.update(username.encode())
    return base64.b64encode(mac.finalize()).decode()


def test_credentials_follow_the_turn_rest_scheme() -> None:
    creds = rest_credentials("s3cret", "peer-1", expires=1700000000)
    assert creds.username == "1700000000:peer-1"
    # Golden value, also checked with `openssl dgst -sha1 -hmac s3cret -binary | base64`.
    assert creds.credential == "rCFVLvIwlVfR84C5QMSLI2HmoLo="
    assert creds.expires == 1700000000


@given(secret=st.text(min_size=1, max_size=64),
       peer=st.from_regex(r"[A-Za-z0-9_\-]{4,64}", fullmatch=True),
       expires=st.integers(min_value=0, max_value=2**40))
def test_credentials_match_an_independent_hmac(secret: str, peer: str, expires: int) -> None:
    creds = rest_credentials(secret, peer, expires)
    assert creds.credential == _oracle(secret, creds.username)
    assert expiry_of(creds.username) == expires


def test_credentials_refuse_what_coturn_would_misread() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        rest_credentials("", "peer-1", 1)
    with pytest.raises(ValueError, match="must not contain ':'"):
        rest_credentials("s", "a:b", 1)


@pytest.mark.parametrize("username, expected", [
    ("1700000000:peer", 1700000000), ("12:", 12), ("peer", None), (":peer", None),
    ("x1:peer", None), ("-5:peer", None),
])
def test_expiry_of(username: str, expected: int | None) -> None:
    assert expiry_of(username) == expected


@pytest.mark.parametrize("url", [
    "turn:203.0.113.5:3478", "turn:turn.example.org:3478?transport=tcp", "turns:relay.example:5349",
    "turn:[2001:db8::1]:3478?transport=udp", "stun:stun.example:3478", "turn:host",
])
def test_valid_turn_urls(url: str) -> None:
    assert check_turn_url(url) == url


@pytest.mark.parametrize("url, reason", [
    ("http://x:3478", "not a TURN/STUN URL"), ("turn:", "not a TURN/STUN URL"),
    ("turn:h:3478?transport=sctp", "not a TURN/STUN URL"), ("turn:h:99999", "port out of range"),
    ("stun:h:3478?transport=udp", "take no"), ("turn:h:3478 ", "not a TURN/STUN URL"),
])
def test_invalid_turn_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_turn_url(url)


def test_parse_ice_servers_normalises_and_keeps_credentials() -> None:
    parsed = parse_ice_servers([
        {"urls": "stun:s.example:3478"},
        {"urls": ["turn:t.example:3478?transport=udp"], "username": "9:p", "credential": "c",
         "extra": "ignored"},
    ])
    assert parsed == ({"urls": ["stun:s.example:3478"]},
                      {"urls": ["turn:t.example:3478?transport=udp"], "username": "9:p", "credential": "c"})


@pytest.mark.parametrize("value, reason", [
    ({}, "must be a list"),
    ([1], "must be an object"),
    ([{"urls": []}], "needs 1-"),
    ([{"urls": ["ftp://x"]}], "bad ICE server URL"),
    ([{"urls": ["turn:t:1"]}], "without username and credential"),
    ([{"urls": ["turn:t:1"], "username": "u"}], "without username and credential"),
    ([{"urls": ["turn:t:1"], "username": 5, "credential": "c"}], "username must be a string"),
    ([{"urls": ["turn:t:1"], "username": "u" * 600, "credential": "c"}], "at most 512"),
    ([{"urls": ["stun:s:1"]}] * (MAX_ICE_SERVERS + 1), "at most"),
])
def test_parse_ice_servers_refuses_bad_lists(value: object, reason: str) -> None:
    with pytest.raises(SignalingError, match=reason):
        parse_ice_servers(value)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["urls", "username", "credential", "x"]), inner, max_size=4),
                    max_leaves=12))
def test_parse_ice_servers_raises_only_signaling_errors(value: object) -> None:
    try:
        parsed = parse_ice_servers(value)
    except SignalingError:
        return
    # Whatever passes is exactly what RTCPeerConnection accepts: string URLs, string credentials.
    json.dumps(parsed)
    for server in parsed:
        assert all(isinstance(u, str) for u in server["urls"])
        assert set(server) <= {"urls", "username", "credential"}


def test_refresh_time_is_halfway() -> None:
    assert refresh_time(100.0, 200.0) == 150.0
    assert refresh_time(100.0, 90.0) == 100.0  # already expired: at once


def test_config_validates_flags() -> None:
    with pytest.raises(ValueError, match="at least one --turn-url"):
        TurnConfig(urls=(), secret="s")
    with pytest.raises(ValueError, match="PYAPP_TURN_SECRET"):
        TurnConfig(urls=("turn:h:3478",), secret="")
    with pytest.raises(ValueError, match="--turn-ttl"):
        TurnConfig(urls=("turn:h:3478",), secret="s", ttl=0)
    with pytest.raises(ValueError, match="not a TURN/STUN URL"):
        TurnConfig(urls=("h:3478",), secret="s")


def test_issuer_grants_credentials_for_the_peer() -> None:
    issuer = TurnIssuer(TurnConfig(urls=("turn:h:3478?transport=udp", "turn:h:3478?transport=tcp"),
                                   secret="k", ttl=600), clock=lambda: 1000.5)
    grant = issuer.grant("peer-9")
    assert grant.expires == 1601  # at least the ttl from now, in whole seconds
    (server,) = grant.ice_servers
    assert server["urls"] == ["turn:h:3478?transport=udp", "turn:h:3478?transport=tcp"]
    assert server["username"] == "1601:peer-9"
    assert server["credential"] == _oracle("k", "1601:peer-9")
    # What the server sends is what the page's parser accepts unchanged.
    assert parse_ice_servers(json.loads(json.dumps(list(grant.ice_servers)))) == grant.ice_servers


def test_issuer_pushes_fresh_credentials_halfway_until_cancelled() -> None:
    async def scenario() -> list[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        issuer = TurnIssuer(TurnConfig(urls=("turn:h:1",), secret="k", ttl=1),
                            clock=lambda: 5000.0 + (loop.time() - start))
        pushed: list[tuple[float, int]] = []

        async def push(message: IceServers) -> None:
            assert message.expires is not None
            assert message.ice_servers[0]["username"] == f"{message.expires}:peer-1"
            pushed.append((loop.time() - start, message.expires))

        task = issuer.keep_fresh("peer-1", issuer.grant("peer-1"), push)
        await asyncio.sleep(2.6)
        task.cancel()
        count = len(pushed)
        await asyncio.sleep(0.6)
        assert len(pushed) == count, "pushes continued after cancel"
        return pushed

    pushed = asyncio.run(scenario())
    # ttl 1 s (a lifetime of 1-2 s in whole seconds): a push halfway through each,
    # so every 0.5-1 s, each with an expiry no earlier than the one before.
    assert 2 <= len(pushed) <= 6, pushed
    assert 0.45 <= pushed[0][0] <= 1.1, pushed
    assert all(b[1] - a[1] >= 0 and b[0] - a[0] >= 0.45 for a, b in itertools.pairwise(pushed))


# ---------------------------------------------------------------- the server, in process

def _static(tmp: Path) -> Path:
    (tmp / "index.html").write_text("<!doctype html>")
    return tmp


async def _recv(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), timeout)
        if msg["type"] == kind:
            return dict(msg)


def test_server_puts_credentials_in_the_welcome_and_pushes_fresh_ones(tmp_path: Path) -> None:
    issuer = TurnIssuer(TurnConfig(urls=("turn:127.0.0.1:3478?transport=udp",), secret="k", ttl=1))

    async def main() -> None:
        server = TestServer(make_app(static_dir=_static(tmp_path), turn=issuer), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(str(server.make_url("/ws"))) as ws:
                await ws.send_json({"type": "join", "room": "turn-room"})
                welcome = await _recv(ws, "welcome")
                parsed = parse_server_message(json.dumps(welcome))
                assert isinstance(parsed, Welcome)
                (entry,) = parsed.ice_servers
                assert entry["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
                assert entry["username"] == f"{parsed.ice_expires}:{parsed.peer_id}"
                assert entry["credential"] == _oracle("k", entry["username"])
                assert parsed.ice_expires is not None and parsed.ice_expires >= time.time() + 1 - 1e-3

                # Halfway through their lifetime, fresh ones arrive without asking.
                push = parse_server_message(json.dumps(await _recv(ws, "ice-servers", timeout=3)))
                assert isinstance(push, IceServers)
                assert push.expires is not None and push.expires >= parsed.ice_expires
                assert push.ice_servers[0]["username"] == f"{push.expires}:{parsed.peer_id}"
                assert push.ice_servers[0]["credential"] == _oracle("k", push.ice_servers[0]["username"])

                # After leaving, the pushes stop.
                await ws.send_json({"type": "leave"})
                await asyncio.sleep(0.2)
                before = issuer.issued
                await asyncio.sleep(1.5)
                assert issuer.issued == before
        finally:
            await server.close()

    asyncio.run(main())


def test_server_without_turn_sends_no_ice_servers(tmp_path: Path) -> None:
    async def main() -> None:
        server = TestServer(make_app(static_dir=_static(tmp_path)), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(str(server.make_url("/ws"))) as ws:
                await ws.send_json({"type": "join", "room": "plain-room"})
                welcome = await _recv(ws, "welcome")
                assert "ice_servers" not in welcome and "ice_expires" not in welcome
        finally:
            await server.close()

    asyncio.run(main())


# ---------------------------------------------------------------- serve flags

def _parse(argv: list[str]) -> tuple[TurnIssuer | None, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    add_turn_flags(parser)
    args = parser.parse_args(argv)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            issuer, local = turn_from_args(parser, args)
    except SystemExit:
        return None, errors.getvalue()
    assert local is None
    return issuer, ""


def test_flags_build_an_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    issuer, _ = _parse(["--turn-url", "turn:203.0.113.5:3478?transport=udp",
                        "--turn-url", "turn:203.0.113.5:3478?transport=tcp",
                        "--turn-secret", "s3cret", "--turn-ttl", "120"])
    assert issuer is not None
    assert issuer.config == TurnConfig(urls=("turn:203.0.113.5:3478?transport=udp",
                                             "turn:203.0.113.5:3478?transport=tcp"),
                                       secret="s3cret", ttl=120)


def test_the_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "from-env")
    issuer, _ = _parse(["--turn-url", "turn:h:3478"])
    assert issuer is not None and issuer.config.secret == "from-env"


def test_no_turn_flags_means_no_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "set-but-unused")
    assert _parse([]) == (None, "")


@pytest.mark.parametrize("argv, message", [
    (["--turn-url", "turn:h:3478"], "PYAPP_TURN_SECRET"),
    (["--turn-secret", "s"], "--turn-secret without --turn-url"),
    (["--turn-url", "h:3478", "--turn-secret", "s"], "not a TURN/STUN URL"),
    (["--turn-url", "turn:h:3478", "--turn-secret", "s", "--turn-ttl", "0"], "--turn-ttl"),
])
def test_bad_flags_are_refused_with_a_reason(argv: list[str], message: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    issuer, errors = _parse(argv)
    assert issuer is None and message in errors, errors


def test_coturn_command_uses_rest_auth_on_the_given_addresses() -> None:
    turn = Coturn(listen=("10.1.2.3",), port=3479, secret="k", prefix=("ip", "netns", "exec", "x"))
    try:
        cmd = turn.command()
    finally:
        turn.stop()
    assert cmd[:4] == ["ip", "netns", "exec", "x"]
    joined = " ".join(cmd)
    assert "--use-auth-secret --static-auth-secret k" in joined
    assert "--listening-ip 10.1.2.3" in joined and "--listening-port 3479" in joined
    assert "--allow-loopback-peers" not in joined   # only for loopback relays
    assert turn.urls() == ["turn:10.1.2.3:3479?transport=udp"]


# ---------------------------------------------------------------- wire format

ICE = ({"urls": ["turn:203.0.113.5:3478?transport=udp"], "username": "1700000000:peer-1",
        "credential": "rCFVLvIwlVfR84C5QMSLI2HmoLo="},)


def test_welcome_and_ice_servers_on_the_wire() -> None:
    welcome = Welcome(room="lobby", peer_id="peer-1", peers=(), ice_servers=ICE, ice_expires=1700000000)
    assert encode(welcome) == (
        '{"type":"welcome","room":"lobby","peer_id":"peer-1","peers":[],"ice_servers":'
        '[{"urls":["turn:203.0.113.5:3478?transport=udp"],"username":"1700000000:peer-1",'
        '"credential":"rCFVLvIwlVfR84C5QMSLI2HmoLo="}],"ice_expires":1700000000}')
    assert parse_server_message(encode(welcome)) == welcome
    push = IceServers(ice_servers=ICE, expires=1700000000)
    assert encode(push) == (
        '{"type":"ice-servers","ice_servers":[{"urls":["turn:203.0.113.5:3478?transport=udp"],'
        '"username":"1700000000:peer-1","credential":"rCFVLvIwlVfR84C5QMSLI2HmoLo="}],'
        '"expires":1700000000}')
    assert parse_server_message(encode(push)) == push


@pytest.mark.parametrize("text, reason", [
    ('{"type":"ice-servers"}', "must be a list"),
    ('{"type":"ice-servers","ice_servers":[{"urls":["turn:h:1"]}]}', "without username"),
    ('{"type":"ice-servers","ice_servers":[],"expires":"soon"}', "'expires' must be an integer"),
    ('{"type":"welcome","room":"r","peer_id":"p","peers":[],"ice_servers":[{"urls":"javascript:x"}]}',
     "bad ICE server URL"),
])
def test_bad_ice_server_messages_are_refused(text: str, reason: str) -> None:
    with pytest.raises(SignalingMessageError, match=reason) as info:
        parse_server_message(text)
    assert info.value.code == "bad-message"
