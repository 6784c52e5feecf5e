"""The GroupConsumer interface: reading topics as a member of a consumer group, or by hand.

``Broker.open_group`` and ``Broker.open_assigned`` return one. Engines that coordinate
groups in their own store share one implementation (``coordinated.CoordinatedConsumer``);
an engine with a group protocol of its own (Kafka) wraps its client's consumer instead.
Either way the caller sees Kafka's consumer: poll, commit, seek, pause and resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal, Self

from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import Membership, Record
from conveyor.errors import ConfigError

OffsetReset = Literal["earliest", "latest", "none"]
Revoked = Callable[[list[TopicPartition]], Awaitable[None]]


def check_options(
    topics: Sequence[str],
    assign: Sequence[TopicPartition],
    group: str | None,
    auto_offset_reset: str,
) -> None:
    """Refuse what no backend's consumer can do, before it connects."""
    if bool(topics) == bool(assign):
        raise ConfigError("give either topics to subscribe to, or partitions to assign")
    if topics and group is None:
        raise ConfigError("subscribing to topics needs a group; or assign partitions")
    if auto_offset_reset not in ("earliest", "latest", "none"):
        raise ConfigError(
            f"auto_offset_reset must be 'earliest', 'latest' or 'none', not {auto_offset_reset!r}"
        )


class GroupConsumer(ABC):
    """Records from the partitions this consumer holds, with positions it can commit.

    Use it as an async context manager or an async iterator of records; ``close`` commits
    (with auto-commit) and leaves the group at once.
    """

    membership: Membership | None
    """This member's view of its group (None when reading assigned partitions)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Record]:
        while True:
            for record in await self.poll():
                yield record

    @abstractmethod
    async def start(self) -> None:
        """Join the group (or take the assigned partitions); idempotent, and done by
        the first ``poll`` if not called."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:
        """Records from the held partitions, waiting up to ``timeout`` for the first.

        Positions move past what is returned. This is where a member heartbeats and
        learns of rebalances, so poll at least every session timeout.
        """

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Store ``offsets`` (default: the current positions) as the group's progress.

        Raises MemberFenced if this member lost the partitions; the new owner re-reads
        from the last good commit.
        """

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""

    @abstractmethod
    def position(self, partition: tuple[str, int]) -> int:
        """The next offset to read from ``partition``."""

    @abstractmethod
    def seek(self, partition: tuple[str, int], offset: int) -> None:
        """Read ``partition`` from ``offset`` on the next poll."""

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        """Read these partitions (default: all held) from their log start."""
        await self._seek_at("earliest", partitions)

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        """Read only what is appended from now on."""
        await self._seek_at("latest", partitions)

    async def seek_to_time(self, when: float | datetime, *partitions: tuple[str, int]) -> None:
        """Read from the first record at or after ``when`` (a timestamp or datetime)."""
        stamp = when.timestamp() if isinstance(when, datetime) else float(when)
        await self._seek_at(stamp, partitions)

    @abstractmethod
    async def _seek_at(self, at: str | float, partitions: Sequence[tuple[str, int]]) -> None:
        """Seek ``partitions`` (all held if none) to ``at``: "earliest", "latest" or a time."""

    @abstractmethod
    def pause(self, *partitions: tuple[str, int]) -> None:
        """Stop fetching these partitions (membership and positions are kept)."""

    @abstractmethod
    def resume(self, *partitions: tuple[str, int]) -> None: ...

    @abstractmethod
    def paused(self) -> set[TopicPartition]: ...
