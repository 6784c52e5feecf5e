"""The bulk frame reader gives aiormq exactly the frames pamqp's own decoding gives.

pamqp is the reference: every frame here is marshalled by pamqp and must decode to an
equal object with the same byte count and channel, however the socket splits the bytes.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import aiormq.connection
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

from conveyor.brokers.rabbitmq import frames
from conveyor.brokers.rabbitmq.frames import BufferedFrameReceiver

short_strings = st.text(max_size=40)
exchange_names = st.from_regex(r"[A-Za-z0-9_.:-]{0,30}", fullmatch=True)
octets = st.integers(min_value=0, max_value=255)
table_values = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.booleans(),
    st.text(max_size=30),
    st.none(),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=3),
)
tables = st.dictionaries(st.text(min_size=1, max_size=20), table_values, max_size=5)
timestamps = st.integers(min_value=0, max_value=2**33).map(
    lambda seconds: datetime.datetime.fromtimestamp(seconds, datetime.UTC)
)
properties = st.builds(
    commands.Basic.Properties,
    content_type=st.none() | short_strings,
    content_encoding=st.none() | short_strings,
    headers=st.none() | tables,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | octets,
    correlation_id=st.none() | short_strings,
    reply_to=st.none() | short_strings,
    expiration=st.none() | st.integers(min_value=0, max_value=10**9).map(str),
    message_id=st.none() | short_strings,
    timestamp=st.none() | timestamps,
    message_type=st.none() | short_strings,
    user_id=st.none() | short_strings,
    app_id=st.none() | short_strings,
)
delivers = st.builds(
    commands.Basic.Deliver,
    consumer_tag=short_strings,
    delivery_tag=st.integers(min_value=1, max_value=2**63 - 1),
    redelivered=st.booleans(),
    exchange=exchange_names,
    routing_key=short_strings,
)
other_methods = st.one_of(
    st.builds(commands.Basic.QosOk),
    st.builds(commands.Basic.ConsumeOk, consumer_tag=short_strings),
    st.builds(commands.Basic.Ack, delivery_tag=st.integers(min_value=0, max_value=2**40)),
    st.builds(
        commands.Channel.Close,
        reply_code=st.sampled_from([404, 406]),
        reply_text=short_strings,
        class_id=st.just(50),
        method_id=st.just(10),
    ),
)
channels = st.integers(min_value=1, max_value=2047)


def deliveries() -> st.SearchStrategy[list[tuple[int, Any]]]:
    """A delivery's frames: the method, the content header, and a body unless empty."""

    def frames_of(channel: int, deliver: Any, props: Any, body: bytes) -> list[tuple[int, Any]]:
        content = [(channel, ContentBody(body))] if body else []
        return [(channel, deliver), (channel, ContentHeader(0, len(body), props)), *content]

    return st.builds(frames_of, channels, delivers, properties, st.binary(max_size=300))


streams = st.lists(
    st.one_of(
        deliveries(),
        st.tuples(channels, other_methods).map(lambda pair: [pair]),
        st.just([(0, Heartbeat())]),
    ),
    min_size=1,
    max_size=8,
).map(lambda groups: [item for group in groups for item in group])


def reference(frames_in: list[tuple[int, Any]]) -> tuple[bytes, list[tuple[int, int, Any]]]:
    """The wire bytes, and what pamqp decodes from them, frame by frame."""
    wire = b"".join(frame.marshal(value, channel) for channel, value in frames_in)
    expected, at = [], 0
    while at < len(wire):
        consumed, channel, decoded = frame.unmarshal(wire[at:])
        expected.append((consumed, channel, decoded))
        at += consumed
    return wire, expected


async def read_all(wire: bytes, cuts: list[int]) -> list[tuple[int, int, Any]]:
    """Every frame the receiver reads when the socket hands ``wire`` over in pieces."""
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    got: list[tuple[int, int, Any]] = []
    at = 0
    for cut in [*sorted(cuts), len(wire)]:
        reader.feed_data(wire[at:cut])
        at = max(at, cut)
    reader.feed_eof()
    async for read in receiver:
        got.append(read)
    return got


def same(got: list[tuple[int, int, Any]], expected: list[tuple[int, int, Any]]) -> None:
    assert [(n, channel, type(value)) for n, channel, value in got] == [
        (n, channel, type(value)) for n, channel, value in expected
    ]
    for (_, _, mine), (_, _, theirs) in zip(got, expected, strict=True):
        if isinstance(theirs, ContentHeader):
            assert (mine.weight, mine.body_size) == (theirs.weight, theirs.body_size)
            assert dict(mine.properties) == dict(theirs.properties)
        elif isinstance(theirs, ContentBody):
            assert mine.value == theirs.value
        elif not isinstance(theirs, Heartbeat):
            assert dict(mine) == dict(theirs)


@settings(max_examples=150, deadline=None)
@given(streams, st.lists(st.integers(min_value=0, max_value=4000), max_size=6))
def test_frames_read_in_any_pieces_decode_as_pamqp_decodes_them(
    frames_in: list[tuple[int, Any]], cuts: list[int]
) -> None:
    wire, expected = reference(frames_in)
    same(asyncio.run(read_all(wire, cuts)), expected)


def test_a_connection_closed_mid_frame_is_a_connection_error() -> None:
    wire = frame.marshal(commands.Basic.QosOk(), 1)

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(wire[:-3])
        reader.feed_eof()
        await BufferedFrameReceiver(reader).get_frame()

    with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
        asyncio.run(read())


def test_a_frame_without_its_end_octet_is_an_invalid_frame() -> None:
    wire = bytearray(frame.marshal(commands.Basic.QosOk(), 1))
    wire[-1] = 0

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(wire))
        await BufferedFrameReceiver(reader).get_frame()

    with pytest.raises(InvalidFrameError, match="no end"):
        asyncio.run(read())


def test_a_content_header_of_another_class_is_an_invalid_frame() -> None:
    header = bytearray(frame.marshal(ContentHeader(0, 1, commands.Basic.Properties()), 1))
    header[7:9] = (50).to_bytes(2, "big")

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(header))
        await BufferedFrameReceiver(reader).get_frame()

    with pytest.raises(InvalidFrameError, match="content class 50"):
        asyncio.run(read())


def test_a_server_answering_with_its_protocol_header_is_a_protocol_error() -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(ProtocolHeader(0, 9, 1).marshal())
        await BufferedFrameReceiver(reader).get_frame()

    with pytest.raises(ProtocolSyntaxError):
        asyncio.run(read())


def test_a_failing_socket_is_a_connection_error() -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.set_exception(ConnectionResetError("reset by peer"))
        await BufferedFrameReceiver(reader).get_frame()

    with pytest.raises(AMQPConnectionError, match="reset"):
        asyncio.run(read())


def test_install_replaces_aiormqs_reader_only_for_the_release_it_was_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", aiormq.connection.FrameReceiver)
    monkeypatch.setattr(frames, "SUPPORTED_AIORMQ", "0.0.0")
    original = aiormq.connection.FrameReceiver
    assert frames.install() is False
    assert aiormq.connection.FrameReceiver is original
    monkeypatch.undo()
    assert frames.install() is True
    assert aiormq.connection.FrameReceiver is BufferedFrameReceiver
