from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Durability, open_broker
from conveyor.brokers.embedded import EmbeddedOptions
from conveyor.errors import ConfigError
from conveyor.settings import BrokerURL, mask_secrets, options_from_query


def test_url_query_options_are_converted_to_their_types() -> None:
    options = options_from_query(
        EmbeddedOptions, {"durability": "fsync", "lock_timeout": "2.5", "max_message_size": "10"}
    )
    assert options == EmbeddedOptions(Durability.FSYNC, 2.5, 10)


def test_unknown_url_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="durabilty; valid: durability, lock_timeout"):
        options_from_query(EmbeddedOptions, {"durabilty": "fsync"})


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ({"durability": "sometimes"}, "one of fsync, normal, memory"),
        ({"lock_timeout": "soon"}, "not a valid float"),
        ({"max_message_size": "0"}, ">= 1"),
        ({"poll_interval": "0"}, "> 0"),
    ],
)
def test_bad_url_option_values_are_refused(query: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        options_from_query(EmbeddedOptions, query)


def test_repeated_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        BrokerURL.parse("sqlite:///x.db?lock_timeout=1&lock_timeout=2")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("conveyor.db", "no scheme"),
        ("postgres://localhost/db", "unknown broker URL scheme 'postgres'"),
        ("sqlite://", "names no file"),
        ("sqlite://host/x.db", "names no file"),
        ("memory:///some/path", "takes no path"),
    ],
)
def test_bad_broker_urls_say_what_to_write(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_broker(url)


def test_sqlite_url_paths_follow_the_three_and_four_slash_convention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_broker("sqlite:///rel/x.db")
    monkeypatch.chdir("/")  # resolved once, when the broker was made
    assert relative.path == str(tmp_path / "rel" / "x.db")  # type: ignore[attr-defined]
    assert relative.location == f"sqlite:///{tmp_path / 'rel' / 'x.db'}"
    assert open_broker("sqlite:////abs/x.db").path == "/abs/x.db"  # type: ignore[attr-defined]


def test_mask_secrets_hides_the_password_of_every_url_in_a_text() -> None:
    text = "--broker redis://:pw1@h:6379/0 and 'amqp://user:pw2@h/vhost' but not a:b@c"
    masked = mask_secrets(text)
    assert "pw1" not in masked
    assert "pw2" not in masked
    assert "redis://:***@h:6379/0" in masked
    assert "amqp://user:***@h/vhost" in masked
    assert masked.endswith("not a:b@c")
