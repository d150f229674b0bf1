from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.signaling import (
    Join,
    Leave,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    RelayedSignal,
    ServerError,
    Signal,
    TokenBucket,
    Welcome,
    encode,
    parse_client_message,
    parse_server_message,
)
from pyapp.exceptions import SignalingError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("msg", [
    Join(room="lobby"), Join(room="a.b-c_d", peer_id="abcd1234"),
    Signal(to="peer-1", data={"description": {"type": "offer", "sdp": "v=0"}}),
    Leave(), Ping(id=3), Ping(),
])
def test_client_roundtrip(msg):
    assert parse_client_message(encode(msg)) == msg


@pytest.mark.parametrize("msg", [
    Welcome(room="r", peer_id="p", peers=("x", "y")), PeerJoined("x"), PeerLeft("x"),
    RelayedSignal(sender="x", data={"candidate": None}), Pong(id=1),
    ServerError(code="bad-message", message="nope", ref="join"),
])
def test_server_roundtrip(msg):
    assert parse_server_message(encode(msg)) == msg


def test_wire_format_is_stable():
    assert encode(Signal(to="abcd", data={"k": 1})) == '{"type":"signal","to":"abcd","data":{"k":1}}'
    assert encode(RelayedSignal(sender="abcd", data={})) == '{"type":"signal","from":"abcd","data":{}}'


@pytest.mark.parametrize(("text", "fragment"), [
    ("{", "not valid JSON"), ("[]", "JSON object"), ('{"type": 1}', "'type'"),
    ('{"type": "join"}', "'room'"), ('{"type": "join", "room": ""}', "not valid"),
    ('{"type": "join", "room": "x/y"}', "not valid"), ('{"type": "signal", "to": "abcd"}', "'data'"),
    ('{"type": "ping", "id": true}', "integer"), ('{"type": "nope"}', "unknown"),
    (b"\xff\xfe", "UTF-8"),
])
def test_bad_client_messages(text, fragment):
    with pytest.raises(SignalingError) as info:
        parse_client_message(text)
    assert fragment in info.value.reason


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                              max_leaves=20).map(json.dumps)))
def test_parsers_raise_only_signaling_errors(data):
    for parse in (parse_client_message, parse_server_message):
        try:
            parse(data)
        except SignalingError:
            pass


def test_deeply_nested_json_is_a_typed_error():
    with pytest.raises(SignalingError):
        parse_client_message("[" * 100_000 + "]" * 100_000)


def test_token_bucket_rate_and_burst():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(20)) == 5
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True
    assert sum(bucket.take(100.0) for _ in range(20)) == 5  # never more than the burst
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
