"""The kafka:// backend outside the shared contract: URL options, a plain confluent-kafka
client on either side, an unreachable cluster, and the topics CLI, on the session's Tansu."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from conveyor import open_broker
from conveyor.brokers.kafka import KafkaBroker
from conveyor.brokers.stream_types import (
    OffsetCommit,
    ProducerRecord,
    TopicConfig,
    TopicPartition,
    TopicSpec,
)
from conveyor.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from tests.kafka_server import shared_noida_server, tansu_server  # noqa: F401  (session fixtures)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_sasl_credentials_come_from_the_url_and_the_password_is_never_shown() -> None:
    broker = KafkaBroker("kafka://alice:s3cret@k1:9093,k2?security_protocol=SASL_SSL")
    assert broker.servers == "k1:9093,k2:9092"
    assert (broker.options.sasl_username, broker.options.sasl_password) == ("alice", "s3cret")
    assert broker.options.security_protocol == "SASL_SSL"
    assert broker.options.sasl_mechanism == "PLAIN"
    assert "s3cret" not in repr(broker) + repr(broker.options) + broker.location


def test_unknown_and_bad_options_are_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"valid: .*security_protocol"):
        KafkaBroker("kafka://k1:9092?securty_protocol=SSL")
    with pytest.raises(ConfigError, match="security_protocol must be one of"):
        KafkaBroker("kafka://k1:9092", security_protocol="TLS")
    with pytest.raises(ConfigError, match="valid: "):
        KafkaBroker("kafka://k1:9092", linger_ms=5)


async def test_an_unreachable_cluster_is_one_clear_error_within_the_timeout() -> None:
    broker = open_broker("kafka://127.0.0.1:1?timeout=2")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"no broker answered at 127\.0\.0\.1:1"):
        await broker.connect()
    assert time.monotonic() - started < 15


async def test_a_plain_producers_records_arrive_intact(tansu_server: str) -> None:  # noqa: F811
    topic = unique("plain-in")
    async with open_broker(f"kafka://{tansu_server}") as broker:
        await broker.create_topic(TopicSpec(topic, 2))
        producer = Producer({"bootstrap.servers": tansu_server})
        producer.produce(
            topic,
            b"\x00raw",
            b"key",
            partition=1,
            headers=[("h", b"v")],
            timestamp=1_700_000_000_250,
        )
        assert producer.flush(10) == 0
        (record,) = await broker.fetch({TopicPartition(topic, 1): 0})
        assert (record.value, record.key, dict(record.headers)) == (b"\x00raw", b"key", {"h": "v"})
        assert record.timestamp == 1_700_000_000.25


async def test_a_plain_consumer_reads_what_conveyor_produced_byte_for_byte(
    tansu_server: str,  # noqa: F811
) -> None:
    topic = unique("plain-out")
    async with open_broker(f"kafka://{tansu_server}") as broker:
        await broker.create_topic(TopicSpec(topic, 3))
        record = ProducerRecord(b'{"a": 1}', key=b"user-7", headers={"trace": "x"}, timestamp=5.5)
        (placed,) = await broker.produce(topic, [record])
    consumer = Consumer({"bootstrap.servers": tansu_server, "group.id": unique("plain")})
    try:
        consumer.assign([KafkaPartition(topic, placed.partition, 0)])
        messages = [m for m in consumer.consume(1, timeout=10) if m.error() is None]
    finally:
        consumer.close()
    (message,) = messages
    assert (message.value(), message.key()) == (b'{"a": 1}', b"user-7")
    assert message.headers() == [("trace", b"x")]
    assert message.timestamp()[1] == 5500


def test_the_topics_cli_manages_kafka_topics(tansu_server: str) -> None:  # noqa: F811
    topic = unique("cli")
    env = {**os.environ, "CONVEYOR_BROKER_URL": f"kafka://{tansu_server}"}

    def conveyor(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *arguments],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    created = conveyor("topics", "create", topic, "--partitions", "3", "--replication-factor", "1")
    assert "3 partitions" in created
    assert topic in conveyor("topics", "list")
    described = conveyor("topics", "describe", topic)
    assert re.search(r"^partitions:\s+3$", described, re.MULTILINE)
    assert re.search(r"^replication:\s+1$", described, re.MULTILINE)
    conveyor("topics", "delete", topic)
    assert topic not in conveyor("topics", "list")


async def test_the_groups_cli_lists_describes_resets_and_deletes_kafka_groups(
    tansu_server: str,  # noqa: F811
) -> None:
    topic, group = unique("cli-groups"), unique("cli-group")
    tp = TopicPartition(topic, 0)
    async with open_broker(f"kafka://{tansu_server}") as broker:
        await broker.create_topic(TopicSpec(topic, 1))
        for value in (b"a", b"b", b"c"):
            await broker.produce(topic, [ProducerRecord(value)])
        async with broker.open_assigned([tp], group=group, auto_offset_reset="earliest") as reader:
            assert len(await reader.poll(timeout=5, max_records=2)) == 2
            await reader.commit()
    env = {**os.environ, "CONVEYOR_BROKER_URL": f"kafka://{tansu_server}"}

    def conveyor(*arguments: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "groups", *arguments, "--json"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)

    assert group in [g["name"] for g in conveyor("list")]
    described = conveyor("describe", group)
    assert [(p["committed"], p["end"], p["lag"]) for p in described["partitions"]] == [(2, 3, 1)]
    plan = conveyor("reset-offsets", group, "--all-topics", "--to-earliest")
    assert (plan["executed"], plan["offsets"][0]["new"]) == (False, 0)
    conveyor("reset-offsets", group, "--all-topics", "--to-earliest", "--execute")
    async with open_broker(f"kafka://{tansu_server}") as broker:
        assert await broker.committed_offsets(group, [tp]) == {tp: 0}
    conveyor("delete", group)
    assert group not in [g["name"] for g in conveyor("list")]


async def test_a_failed_transaction_is_aborted_and_nothing_of_it_is_seen(
    shared_noida_server: str,  # noqa: F811
) -> None:
    topic, group = unique("derived"), unique("etl")
    source = TopicPartition(unique("source"), 0)
    async with open_broker(f"kafka://{shared_noida_server}") as broker:
        await broker.create_topic(TopicSpec(topic, 1, TopicConfig(max_message_bytes=100)))
        records = [ProducerRecord(b"fits"), ProducerRecord(b"x" * 1000)]
        with pytest.raises(MessageTooLarge):
            await broker.produce(topic, records, commit=OffsetCommit(group, {source: 5}))
        assert await broker.committed_offsets(group) == {}
        await broker.produce(
            topic, [ProducerRecord(b"next")], commit=OffsetCommit(group, {source: 6})
        )
        assert [r.value for r in await broker.fetch({TopicPartition(topic, 0): 0})] == [b"next"]
        assert await broker.committed_offsets(group) == {source: 6}


async def test_a_replication_factor_the_cluster_cannot_reach_is_refused_clearly(
    shared_noida_server: str,  # noqa: F811
) -> None:
    topic = unique("replicated")
    async with open_broker(f"kafka://{shared_noida_server}") as broker:
        with pytest.raises(ConfigError, match="replication factor of 3"):
            await broker.create_topic(TopicSpec(topic, 1, replication_factor=3))
        assert topic not in [spec.name for spec in await broker.list_topics()]
        await broker.create_topic(TopicSpec(topic, 1))
        assert (await broker.describe_topic(topic)).spec.replication_factor == 1
