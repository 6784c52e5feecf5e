"""Reading AMQP frames from the socket in bulk, deliveries decoded on a short path.

aiormq reads each frame with three ``readexactly`` calls and decodes it with pamqp's
generic unmarshaller, which looks every field's type up by name. A consumer receives
three frames per message (``basic.deliver``, the content header, the body), so on a
busy queue that costs more of the worker's time than the task layer does. This reader
takes whatever the socket has buffered and cuts every complete frame out of it; the
three delivery frames are decoded field by field here, every other frame by pamqp. The
frames and errors it gives aiormq are the ones aiormq's own reader gives: the decoding is
checked against pamqp's for any properties and headers (tests/unit/test_rabbitmq_frames.py).

``install()`` makes aiormq use it for every connection it opens afterwards. aiormq has
no hook for its frame reader, so this replaces the class in its module, and only for
the aiormq release it was written against: with any other, aiormq's own reader stays.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import struct
from collections.abc import Callable
from typing import Any

import aiormq.connection
from aiormq.exceptions import AMQPConnectionError, ProtocolSyntaxError
from pamqp import commands, constants, decode, exceptions, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

SUPPORTED_AIORMQ = "7.2.4"
READ_SIZE = 262_144

_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQH")
_DELIVER = (60 << 16) | 60
_FRAME_END = constants.FRAME_END
_FRAME_HEADER_SIZE = constants.FRAME_HEADER_SIZE

Frame = tuple[int, int, Any]
Decoder = Callable[[bytes, int], tuple[Any, int]]


def _short_str(data: bytes, at: int) -> tuple[str, int]:
    end = at + 1 + data[at]
    return data[at + 1 : end].decode(), end


def _octet(data: bytes, at: int) -> tuple[int, int]:
    return data[at], at + 1


def _table(data: bytes, at: int) -> tuple[dict[str, Any], int]:
    consumed, value = decode.field_table(data[at:])
    return value, at + consumed


def _timestamp(data: bytes, at: int) -> tuple[datetime.datetime, int]:
    consumed, value = decode.timestamp(data[at:])
    return value, at + consumed


_PROPERTIES: tuple[tuple[int, str, Decoder], ...] = tuple(
    (flag, name, decoder)
    for name, decoder in (
        ("content_type", _short_str),
        ("content_encoding", _short_str),
        ("headers", _table),
        ("delivery_mode", _octet),
        ("priority", _octet),
        ("correlation_id", _short_str),
        ("reply_to", _short_str),
        ("expiration", _short_str),
        ("message_id", _short_str),
        ("timestamp", _timestamp),
        ("message_type", _short_str),
        ("user_id", _short_str),
        ("app_id", _short_str),
        ("cluster_id", _short_str),
    )
    if (flag := commands.Basic.Properties.flags[name])
)


def decode_frame(frame_type: int, payload: bytes) -> Any:
    """The frame of ``frame_type`` carrying ``payload``; deliveries on the short path."""
    if frame_type == constants.FRAME_BODY:
        return ContentBody(payload)
    if frame_type == constants.FRAME_METHOD and _METHOD_ID.unpack_from(payload)[0] == _DELIVER:
        return _deliver(payload, 4)
    if frame_type == constants.FRAME_HEADER:
        return _content_header(payload)
    framed = _FRAME_HEADER.pack(frame_type, 0, len(payload)) + payload + bytes((_FRAME_END,))
    _, _, decoded = frame.unmarshal(framed)
    return decoded


def _deliver(data: bytes, at: int) -> commands.Basic.Deliver:
    consumer_tag, at = _short_str(data, at)
    (delivery_tag,) = struct.unpack_from(">Q", data, at)
    redelivered = bool(data[at + 8] & 1)
    exchange, at = _short_str(data, at + 9)
    routing_key, _ = _short_str(data, at)
    return commands.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)


def _content_header(data: bytes) -> ContentHeader:
    class_id, weight, body_size, flags = _CONTENT_HEADER.unpack_from(data)
    if flags & 1 or class_id != commands.Basic.Properties.frame_id:
        raise exceptions.UnmarshalingException(
            "ContentHeader", f"unexpected content class {class_id} or flags {flags:#06x}"
        )
    at = _CONTENT_HEADER.size
    values: dict[str, Any] = {}
    for flag, name, decoder in _PROPERTIES:
        if flags & flag:
            values[name], at = decoder(data, at)
    return ContentHeader(weight, body_size, commands.Basic.Properties(**values))


class BufferedFrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's frame receiver, reading the socket in bulk (see the module's docstring)."""

    def __init__(self, reader: Any) -> None:
        super().__init__(reader)
        self._data = b""
        self._at = 0

    async def get_frame(self) -> Frame:
        while True:
            found = self._cut()
            if found is not None:
                return found
            async with self.lock:
                chunk = await self._read()
            if not chunk:
                if self._at == len(self._data):
                    raise StopAsyncIteration
                raise AMQPConnectionError(
                    "Server connection unexpectedly closed. "
                    f"Read {len(self._data) - self._at} bytes of an unfinished frame"
                )
            self._data = self._data[self._at :] + chunk
            self._at = 0

    async def _read(self) -> bytes:
        try:
            return await self.reader.read(READ_SIZE)
        except OSError as exc:
            raise AMQPConnectionError(f"Server connection failed: {exc!r}") from exc

    def _cut(self) -> Frame | None:
        data, at = self._data, self._at
        if len(data) - at < _FRAME_HEADER_SIZE:
            return None
        if not self.started:
            if data.startswith(b"AMQP", at):
                raise ProtocolSyntaxError("Unexpected AMQP protocol header")
            self.started = True
        frame_type, channel, size = _FRAME_HEADER.unpack_from(data, at)
        if frame_type == constants.FRAME_HEARTBEAT and size == 0:
            if len(data) - at < _FRAME_HEADER_SIZE + 1:
                return None
            self._at = at + _FRAME_HEADER_SIZE + 1
            return _FRAME_HEADER_SIZE + 1, channel, Heartbeat()
        start = at + _FRAME_HEADER_SIZE
        end = start + size
        if len(data) <= end:
            return None
        self._at = end + 1
        if data[end] != _FRAME_END:
            raise aiormq.exceptions.InvalidFrameError(f"frame on channel {channel} has no end")
        try:
            return end + 1 - at, channel, decode_frame(frame_type, data[start:end])
        except (exceptions.PAMQPException, struct.error, ValueError) as exc:
            raise aiormq.exceptions.InvalidFrameError(str(exc)) from exc


def install() -> bool:
    """Use the bulk reader for aiormq's connections; False where aiormq is another release."""
    if importlib.metadata.version("aiormq") != SUPPORTED_AIORMQ:
        return False
    aiormq.connection.FrameReceiver = BufferedFrameReceiver  # type: ignore[misc]
    return True
