"""``conveyor dlq list|show|replay|purge``: the dead jobs of task queues (``QUEUE.dlq``).

QUEUE defaults to the App's default queue (``default`` without ``--app``). These commands
go through the App's dead-letter methods, which work on task queues: queues the App
declared, that dead-letter into ``QUEUE.dlq``.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.brokers.types import QueueSpec, as_float
from conveyor.cli.common import (
    Context,
    UsageError,
    add_command,
    add_group,
    add_paging,
)
from conveyor.cli.output import (
    Column,
    Progress,
    fields,
    number,
    plural,
    print_json,
    show,
    text,
    when,
)
from conveyor.errors import ConfigError, QueueNotFound
from conveyor.shapes import Paging, dead_letter_json
from conveyor.tasks.dead_letters import DeadLetter
from conveyor.tasks.states import dead_letter_queue

PAGE = 500


def add_parser(commands: Any) -> None:
    dlq = add_group(commands, "dlq", "list, show, replay and purge dead jobs")
    listing = add_command(dlq, "list", list_dead, "dead jobs of a task queue, oldest first")
    _queue_arguments(listing)
    add_paging(listing, 100)
    show_one = add_command(dlq, "show", show_dead, "one dead job, with its traceback")
    show_one.add_argument("words", nargs="+", metavar="[QUEUE] JOB_ID")
    show_one.add_argument("--queue", dest="queue_option", metavar="QUEUE", help=_QUEUE_HELP)
    replay = add_command(dlq, "replay", replay_dead, "send dead jobs back to run again")
    _queue_arguments(replay)
    replay.add_argument("--to", metavar="QUEUE", help="run them on this queue instead")
    replay.add_argument(
        "--id", action="extend", type=_ids, metavar="ID[,ID]", help="only these (repeatable)"
    )
    purge = add_command(dlq, "purge", purge_dead, "delete a task queue's dead jobs")
    _queue_arguments(purge)


_QUEUE_HELP = "the task queue (default: the App's default queue)"


def _queue_arguments(command: Any) -> None:
    """QUEUE as every dlq command takes it: positional, or ``--queue``."""
    command.add_argument("queue", nargs="?", metavar="QUEUE", help=_QUEUE_HELP)
    command.add_argument("--queue", dest="queue_option", metavar="QUEUE", help="the same")


def _ids(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _queue(ctx: Context) -> str | None:
    arguments = ctx.arguments
    given: str | None = getattr(arguments, "queue", None)
    option: str | None = arguments.queue_option
    if given and option and given != option:
        raise UsageError(f"two queues given, {given!r} and {option!r}: give one")
    return given or option


def _is_task_queue(spec: QueueSpec, names: set[str]) -> bool:
    dead = dead_letter_queue(spec.name)
    return (
        spec.dead_letter_exchange == "" and spec.dead_letter_routing_key == dead and dead in names
    )


async def _task_queue(ctx: Context, queue: str | None) -> str:
    """The task queue named (or the App's default), checked before the App redeclares it.

    The App's dead-letter methods declare the queue and its ``.dlq``: without ``--app`` the
    CLI's App takes the stored lease timeout, so that the declaration matches.
    """
    name = queue or ctx.app.default_queue
    specs = {spec.name: spec for spec in await ctx.broker.list_queues()}
    spec = specs.get(name)
    if spec is None:
        raise QueueNotFound(name)
    if not _is_task_queue(spec, set(specs)):
        raise ConfigError(
            f"queue {name!r} is not a task queue: its dead letters do not go to "
            f"{dead_letter_queue(name)!r}; see them with conveyor consume --no-ack"
        )
    if not ctx.from_app:
        ctx.app.lease_timeout = as_float(spec.lease_timeout) or ctx.app.lease_timeout
    return name


def _error(row: dict[str, Any], limit: int | None = None) -> str:
    if not row["error_type"]:
        return text(row["error_message"])
    message = f"{row['error_type']}: {row['error_message'] or ''}".strip().rstrip(":")
    return message if limit is None or len(message) <= limit else message[: limit - 1] + "…"


async def list_dead(ctx: Context) -> int:
    arguments = ctx.arguments
    queue = await _task_queue(ctx, _queue(ctx))
    dead = await ctx.app.adead_letters(queue, limit=arguments.limit, offset=arguments.offset)
    rows = [dead_letter_json(d) for d in dead]
    if ctx.json:
        total = (await ctx.broker.queue_stats(dead_letter_queue(queue))).at_least
        print_json(Paging(arguments.limit, arguments.offset).page(rows, total))
        return 0
    for row in rows:
        row["error"] = _error(row, limit=60)
    show(
        False,
        rows,
        [
            Column("job id", "job_id"),
            Column("task", "task"),
            Column("reason", "reason"),
            number("attempts", "attempts"),
            Column("failed at", "failed_at", when),
            Column("error", "error"),
        ],
    )
    return 0


async def _task_queues(ctx: Context) -> list[str]:
    specs = await ctx.broker.list_queues()
    names = {spec.name for spec in specs}
    return [spec.name for spec in specs if _is_task_queue(spec, names)]


async def _find(ctx: Context, wanted: str, queues: list[str]) -> DeadLetter | None:
    for queue in queues:
        await _task_queue(ctx, queue)
        offset = 0
        while True:
            page = await ctx.app.adead_letters(queue, limit=PAGE, offset=offset)
            for dead in page:
                if dead.job_id == wanted:
                    return dead
            if len(page) < PAGE:
                break
            offset += PAGE
    return None


async def show_dead(ctx: Context) -> int:
    words = ctx.arguments.words
    if len(words) > 2:
        raise UsageError("dlq show takes [QUEUE] JOB_ID")
    ctx.arguments.queue = words[0] if len(words) == 2 else None
    job_id, queue = words[-1], _queue(ctx)
    queues = [await _task_queue(ctx, queue)] if queue else await _task_queues(ctx)
    dead = await _find(ctx, job_id, queues)
    if dead is None:
        where = f"{dead_letter_queue(queue)!r}" if queue else "any task queue's dead letters"
        raise ConfigError(f"no dead job {job_id!r} in {where}")
    row = dead_letter_json(dead, detail=True)
    if ctx.json:
        print_json(row)
        return 0
    print(
        fields(
            [
                ("job id", dead.job_id),
                ("task", text(dead.task)),
                ("queue", dead.queue),
                ("reason", dead.reason),
                ("error", _error(row)),
                ("attempts", text(dead.attempts)),
                ("first attempt", when(dead.first_attempt_at)),
                ("last attempt", when(dead.last_attempt_at)),
                ("failed at", when(dead.failed_at)),
                ("worker", text(dead.worker)),
                ("arguments", json.dumps(dead.arguments)),
                ("traceback", (dead.traceback or "-").rstrip()),
            ]
        )
    )
    return 0


async def _waiting_ids(ctx: Context, queue: str) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        page = await ctx.app.adead_letters(queue, limit=PAGE, offset=offset)
        ids += [dead.job_id for dead in page if not dead.queued.leased]
        if len(page) < PAGE:
            return ids
        offset += PAGE


async def replay_dead(ctx: Context) -> int:
    arguments = ctx.arguments
    queue = await _task_queue(ctx, _queue(ctx))
    target = arguments.to or queue
    if arguments.to and arguments.to in {q.name for q in await ctx.broker.list_queues()}:
        await _task_queue(ctx, arguments.to)
    waiting = await _waiting_ids(ctx, queue)
    if arguments.id:
        missing = sorted(set(arguments.id) - set(waiting))
        if missing:
            raise ConfigError(
                f"not waiting in {dead_letter_queue(queue)!r}: {', '.join(missing)}; nothing "
                "was replayed"
            )
        waiting = [job_id for job_id in waiting if job_id in set(arguments.id)]
    progress = Progress("replayed", len(waiting))
    for first in range(0, len(waiting), PAGE):
        chunk = waiting[first : first + PAGE]
        progress.advance(
            await ctx.app.areplay_dead_letters(queue, job_ids=chunk, to_queue=arguments.to)
        )
    progress.done()
    replayed = plural(progress.count, "dead job")
    return ctx.done(
        {"queue": queue, "to": target, "replayed": progress.count},
        f"replayed {replayed} from {dead_letter_queue(queue)!r} to {target!r}",
    )


async def purge_dead(ctx: Context) -> int:
    queue = await _task_queue(ctx, _queue(ctx))
    purged = await ctx.app.apurge_dead_letters(queue)
    return ctx.done(
        {"queue": queue, "purged": purged},
        f"purged {plural(purged, 'dead job')} from {dead_letter_queue(queue)!r}",
    )
