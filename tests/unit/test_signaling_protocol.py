from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.signaling import (
    CLOSE_CODES,
    ERROR_CODES,
    MAX_DEPTH,
    ErrorMessage,
    Join,
    Leave,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    RelayedSignal,
    Signal,
    TokenBucket,
    Welcome,
    close_reason,
    encode,
    parse_client_message,
    parse_close_reason,
    parse_server_message,
    refusal,
    refusal_from_close,
)
from pyapp.exceptions import (
    InvalidArgumentError,
    SignalingError,
    SignalingMessageError,
    SignalingRefusedError,
)

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
    ErrorMessage(code="bad-message", message="nope", ref="join"),
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


# ---------------------------------------------------------------- strict JSON, codes

@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("parse", [parse_client_message, parse_server_message])
def test_non_finite_numbers_are_refused(parse, constant):
    with pytest.raises(SignalingMessageError) as info:
        parse('{"type": "signal", "to": "abcd", "from": "abcd", "data": {"x": ' + constant + "}}")
    assert info.value.code == "non-finite-number"
    assert constant.lstrip("-") in info.value.reason


def test_encode_refuses_non_finite_numbers_as_a_local_error():
    with pytest.raises(InvalidArgumentError, match="NaN or Infinity"):
        encode(Signal(to="abcd", data={"x": float("nan")}))


def _nested(depth: int) -> dict:
    obj: dict = {}
    for _ in range(depth - 2):  # the envelope and "data" count as two levels
        obj = {"d": obj}
    return obj


def test_nesting_limit():
    ok = json.dumps({"type": "signal", "to": "abcd", "data": _nested(MAX_DEPTH)})
    assert isinstance(parse_client_message(ok), Signal)
    too_deep = json.dumps({"type": "signal", "to": "abcd", "data": _nested(MAX_DEPTH + 1)})
    with pytest.raises(SignalingMessageError) as info:
        parse_client_message(too_deep)
    assert info.value.code == "too-deep"
    with pytest.raises(SignalingMessageError) as info:
        parse_client_message('{"type": "signal", "data": ' + "[" * 5000 + "]" * 5000 + "}")
    assert info.value.code == "too-deep"


@pytest.mark.parametrize(("text", "code"), [
    ("{", "bad-json"), (b"\xff", "bad-utf8"), ("[]", "bad-message"),
    ('{"type": "nope"}', "bad-message"), ('{"x": NaN}', "non-finite-number"),
])
def test_parse_errors_carry_codes(text, code):
    with pytest.raises(SignalingMessageError) as info:
        parse_client_message(text)
    assert info.value.code == code and code in ERROR_CODES


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                              max_leaves=40).map(lambda v: json.dumps({"type": "signal", "to": "abcd", "data": {"v": v}}))))
def test_parse_errors_are_coded_and_accepted_data_is_finite_json(data):
    try:
        msg = parse_client_message(data)
    except SignalingMessageError as exc:
        assert exc.code in ERROR_CODES
        return
    # Whatever is accepted re-encodes as strict JSON that browsers' JSON.parse accepts.
    json.loads(encode(msg), parse_constant=lambda c: pytest.fail(f"{c} relayed"))


def test_close_reason_roundtrip_and_length():
    reason = close_reason("flooding", "20 messages in a row over the rate limit")
    assert parse_close_reason(reason) == ("flooding", "20 messages in a row over the rate limit")
    long = close_reason("too-large", "é" * 200)
    assert len(long.encode()) <= 123 and long.startswith("too-large: ")
    assert parse_close_reason("bye") is None
    assert parse_close_reason("nonsense: words") is None


def test_refusals_are_typed():
    err = refusal(ErrorMessage(code="room-full", message="room 'x' is full", ref="join"))
    assert isinstance(err, SignalingRefusedError) and isinstance(err, SignalingError)
    assert (err.code, err.text, err.ref, err.close_code) == ("room-full", "room 'x' is full", "join", None)
    closed = refusal_from_close(1008, close_reason("too-many-connections", "more than 64"))
    assert closed is not None and closed.code == "too-many-connections" and closed.close_code == 1008
    assert "1008" in str(closed) and "more than 64" in str(closed)
    assert refusal_from_close(1006, "") is None
    assert refusal_from_close(1000, "bye") is None


def test_every_close_code_used_is_described():
    for code, (close_code, text) in ERROR_CODES.items():
        assert text, code
        assert close_code is None or close_code in CLOSE_CODES, code
