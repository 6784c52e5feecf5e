"""Counting and summing events per key over windows of event time. Pure: no I/O, no clock.

Time is the events' own timestamps (seconds, e.g. from the message), never the wall clock,
so replaying a stream gives the same windows as processing it live, and tests need no
sleeping. Two shapes:

- :class:`TumblingWindows`: fixed, non-overlapping buckets, reported once when they close
  ("clicks per page per 5 minutes").
- :class:`SlidingWindow`: the ``size`` seconds up to each event, reported on every event
  ("more than 100 clicks by one user within 60 s").

Both keep a watermark per partition, as Kafka Streams and Flink do: a consumer that
catches up one partition after another reads partition 0's newest events before
partition 1's oldest, and one watermark over all of them would call partition 1 late.
The operator's watermark is the lowest of its partitions' (see :class:`Watermarks`); a
partition that has caught up (``idle``) stops holding it back until its next event.

Both keep what each partition contributed apart, so that a partition's share of the open
windows can leave as JSON-safe data (``snapshot``, then ``release``) and come back in
another process (``restore``), as a Kafka Streams task's state follows its partition:
window_store.py keeps these snapshots in a changelog topic. Given each event's ``offset``,
an operator skips an event at or below the last one it counted from that partition, so a
replay onto a snapshot, or records delivered again after a rejoin, never count twice.

The modules: ``tumbling`` and ``sliding`` (the two operators), ``watermarks`` (event time
per partition), ``progress`` (what both operators track per partition: watermarks, offsets
counted, events dropped late), ``snapshot`` (the snapshots' format and the checks that read
one back), ``checks`` (sizes, graces and event times given to an operator) and ``result``.
"""

from __future__ import annotations

from conveyor.events.windows.result import WindowResult
from conveyor.events.windows.sliding import SlidingWindow
from conveyor.events.windows.snapshot import SNAPSHOT_VERSION, P, Snapshot
from conveyor.events.windows.tumbling import TumblingWindows
from conveyor.events.windows.watermarks import Watermarks

# P, the partition type of snapshot() and restore(), stays importable from here as it was
# before the module became a package.
__all__ = [
    "SNAPSHOT_VERSION",
    "P",
    "SlidingWindow",
    "Snapshot",
    "TumblingWindows",
    "Watermarks",
    "WindowResult",
]
