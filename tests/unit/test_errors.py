"""Error messages say what happened and what to do, with their context as attributes."""

from __future__ import annotations

from conveyor import Capability
from conveyor.brokers import backends_with
from conveyor.errors import NotSupported


def test_not_supported_names_the_backends_that_have_the_capability() -> None:
    error = NotSupported("streams", "redis", ["kafka", "sqlite"])
    assert (error.capability, error.backend, error.alternatives) == (
        "streams",
        "redis",
        ("kafka", "sqlite"),
    )
    assert str(error) == (
        "the redis broker does not support streams; use a broker that supports it: kafka, sqlite"
    )


def test_not_supported_without_alternatives_says_only_what_is_missing() -> None:
    assert (
        str(NotSupported("priorities", "kafka")) == "the kafka broker does not support priorities"
    )


def test_the_registry_knows_which_backends_have_streams() -> None:
    assert set(backends_with(Capability.STREAMS)) >= {"sqlite://", "memory://"}
