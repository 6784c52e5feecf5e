"""The Lua scripts in ``lua/``, run by their SHA1 (EVALSHA) so that only hashes cross the wire.

A server forgets its scripts when it restarts (or on SCRIPT FLUSH). A call answered
NOSCRIPT ran nothing, so the script is loaded and the call made again. A line
``--@include name`` stands for the text of ``lua/name.lua``: Redis scripts cannot call each
other, so what several of them share is put into each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import NoScriptError

from conveyor.brokers.redis.connection import answer

T = TypeVar("T")

_ATTEMPTS = 3
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> Script:
        lines = [
            _text(line.removeprefix(_INCLUDE).strip()) if line.startswith(_INCLUDE) else line
            for line in _text(name).splitlines(keepends=True)
        ]
        source = "".join(lines)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


_INCLUDE = "--@include "


def _text(name: str) -> str:
    return files("conveyor.brokers.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Call:
    """One run of a script: the keys it touches, then its arguments."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | bytes]


CREATE = Script.named("create")
START = Script.named("start")
OUTCOME = Script.named("outcome")
REQUEUE = Script.named("requeue")
PROGRESS = Script.named("progress")
CANCEL = Script.named("cancel")
DISCARD = Script.named("discard")
SUCCEEDED = Script.named("succeeded")
SWEEP = Script.named("sweep")
RATE = Script.named("rate")
STATUSES = Script.named("statuses")
SAMPLES = Script.named("samples")

QUEUE_PUBLISH = Script.named("q_publish")
QUEUE_RECEIVE = Script.named("q_receive")
QUEUE_ACK = Script.named("q_ack")
QUEUE_REQUEUE = Script.named("q_requeue")
QUEUE_REPLACE = Script.named("q_replace")
QUEUE_EXTEND = Script.named("q_extend")
QUEUE_STATS = Script.named("q_stats")
QUEUE_PURGE = Script.named("q_purge")
QUEUE_MOVE = Script.named("q_move")
QUEUE_DECLARE = Script.named("q_declare")
QUEUE_BROWSE = Script.named("q_browse")

TOPIC_APPEND = Script.named("t_append")
TOPIC_TRIM = Script.named("t_trim")
TOPIC_OFFSET_AT = Script.named("t_offset_at")


async def run(client: redis.asyncio.Redis, call: Call) -> Any:
    (reply,) = await run_many(client, [call])
    return reply


async def run_many(client: redis.asyncio.Redis, calls: Sequence[Call]) -> list[Any]:
    """Run each call in order, pipelined: one round trip per few hundred calls."""
    replies: list[Any] = []
    for chunk in batches(calls, _CHUNK):
        replies.extend(await _run_chunk(client, chunk))
    return replies


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into runs of ``size`` (the last one shorter)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def _run_chunk(client: redis.asyncio.Redis, calls: Sequence[Call]) -> list[Any]:
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for _ in range(_ATTEMPTS):
        pipeline = client.pipeline(transaction=False)
        for index in pending:
            call = calls[index]
            pipeline.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)  # type: ignore[arg-type]
        unknown: list[int] = []
        for index, reply in zip(pending, await pipeline.execute(raise_on_error=False), strict=True):
            if isinstance(reply, NoScriptError):
                unknown.append(index)
            elif isinstance(reply, Exception):
                raise reply
            else:
                replies[index] = reply
        if not unknown:
            return replies
        for script in {calls[index].script for index in unknown}:
            await answer(client.script_load(script.source))
        pending = unknown
    raise NoScriptError(f"the server keeps forgetting script {calls[pending[0]].script.name}")
