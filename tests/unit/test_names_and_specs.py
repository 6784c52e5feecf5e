from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from conveyor import Binding, ExchangeSpec, Message, Overflow, QueueSpec
from conveyor.errors import ConfigError, MessageError
from conveyor.message import decode_headers, encode_headers
from conveyor.names import check_name, check_routing_key


@pytest.mark.parametrize("bad", ["", "a b", "é", "x" * 256, "semi;colon", "slash/no", None, 3])
def test_invalid_names_are_refused_with_the_rule(bad: Any) -> None:
    with pytest.raises(ConfigError, match="queue name"):
        check_name("queue", bad)


@pytest.mark.parametrize("good", ["a", "orders.high", "tenant:42-jobs_v2", "x" * 255])
def test_valid_names_pass(good: str) -> None:
    assert check_name("queue", good) == good


def test_routing_key_limited_to_255_bytes() -> None:
    assert check_routing_key("é" * 127) == "é" * 127
    with pytest.raises(ConfigError, match="255 bytes"):
        check_routing_key("é" * 128)
    with pytest.raises(ConfigError, match="must be a string"):
        check_routing_key(b"bytes")


def test_queue_spec_accepts_timedelta_and_normalizes_to_seconds() -> None:
    spec = QueueSpec("q", message_ttl=timedelta(minutes=1), lease_timeout=5)
    assert spec.message_ttl == 60.0
    assert spec.lease_timeout == 5.0
    assert spec.options() == {"message_ttl": 60.0, "lease_timeout": 5.0}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_priority": 256}, "at most 255"),
        ({"max_priority": 0}, "positive integer"),
        ({"max_length": -1}, "positive integer"),
        ({"message_ttl": -1}, ">= 0"),
        ({"lease_timeout": 0}, "> 0"),
        ({"expires": float("nan")}, "number of seconds"),
        ({"overflow": "drop-tail"}, "overflow must be one of"),
        ({"dead_letter_routing_key": "x"}, "needs dead_letter_exchange"),
        ({"delivery_limit": True}, "positive integer"),
    ],
)
def test_queue_spec_refuses_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        QueueSpec("q", **options)


def test_queue_options_from_text_name_unknown_keys_and_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown queue option\(s\) max_lenght; valid: .*max_length"
    ):
        QueueSpec.from_options("q", {"max_lenght": 5})
    spec = QueueSpec.from_options("q", {"max_length": 5, "overflow": "reject-publish"})
    assert spec.overflow is Overflow.REJECT_PUBLISH


def test_exchange_and_binding_validate_their_parts() -> None:
    with pytest.raises(ConfigError, match="exchange type"):
        ExchangeSpec("e", "round-robin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stand alone"):
        Binding("e", "q", "a.b#")
    with pytest.raises(ConfigError, match="x-match"):
        Binding("e", "q", arguments={"x-match": "most"})


def test_message_refuses_non_bytes_body_and_bad_priority() -> None:
    with pytest.raises(MessageError, match="must be bytes"):
        Message("text")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="0-255"):
        Message(b"", priority=300)
    with pytest.raises(MessageError, match="ttl"):
        Message(b"", ttl=-1)
    assert Message(b"").id != Message(b"").id


def test_headers_round_trip_and_refuse_what_json_cannot_hold() -> None:
    assert encode_headers({}) is None
    assert decode_headers(encode_headers({"a": [1, "x"], "b": None})) == {"a": [1, "x"], "b": None}
    with pytest.raises(MessageError, match="JSON-compatible"):
        encode_headers({"when": object()})


def test_one_string_header_encodes_as_json_would_however_many_distinct_ones_are_sent() -> None:
    for number in range(1100):  # more than are kept: the rest are encoded each time
        headers = {"task": f"tasks.n{number}é"}
        expected = json.dumps(headers, separators=(",", ":"))
        assert encode_headers(headers) == expected
        assert encode_headers(headers) == expected
    assert encode_headers({"attempt": 3}) == '{"attempt":3}'
    with pytest.raises(MessageError, match="JSON-compatible"):
        encode_headers({"ratio": float("nan")})


def test_stored_headers_that_are_not_a_json_object_raise_decode_error() -> None:
    from conveyor.errors import DecodeError

    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_headers("{broken")
    with pytest.raises(DecodeError, match="not a JSON object"):
        decode_headers("[1, 2]")


def test_decoded_headers_are_never_shared_between_callers() -> None:
    flat = encode_headers({"task": "emails.send"})
    first = decode_headers(flat)
    first["task"] = "changed"
    assert decode_headers(flat) == {"task": "emails.send"}
    nested = encode_headers({"x-death": [{"queue": "q", "count": 1}]})
    one = decode_headers(nested)
    one["x-death"][0]["count"] = 99
    assert decode_headers(nested) == {"x-death": [{"queue": "q", "count": 1}]}
    assert decode_headers(None) == {}
    long = encode_headers({"note": "x" * 500})
    assert decode_headers(long) == {"note": "x" * 500}
