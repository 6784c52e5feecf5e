"""A consumer-group member in a process of its own, for the tests that SIGKILL one:
``python -m tests.backends.kafka_member URL TOPIC GROUP SESSION_TIMEOUT MARKER``.

It polls for ever and writes its assignment to MARKER (renamed into place, so it appears
whole) each time the assignment changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from conveyor import open_broker


async def member(url: str, topic: str, group: str, session_timeout: float, marker: Path) -> None:
    async with open_broker(url) as broker:
        consumer = broker.open_group([topic], group, session_timeout=session_timeout)
        async with consumer:
            reported = None
            while True:
                await consumer.poll(timeout=0.2)
                held = sorted(tp.partition for tp in consumer.assignment())
                if held != reported:
                    partial = marker.with_name(marker.name + ".partial")
                    partial.write_text(json.dumps(held))
                    os.replace(partial, marker)
                    reported = held


if __name__ == "__main__":
    url, topic, group, session_timeout, marker = sys.argv[1:]
    asyncio.run(member(url, topic, group, float(session_timeout), Path(marker)))
