"""Job records as Redis hashes: readable fields, times in epoch seconds, values as JSON.

```
task, queue, status, attempts, created_at, updated_at, result_ttl     always
scheduled_for, first_attempt_at, last_attempt_at, idempotency_key    when known
request_digest                                                       with a key
result, error, progress                                              JSON, when set
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.brokers.types import JobRecord, JobStatus


def stamp(seconds: float) -> str:
    """Epoch seconds as stored: microseconds, and no exponent for Lua to misread."""
    return f"{seconds:.6f}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """A hash as a script returns it (HGETALL's field, value, field, value...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def record(job_id: str, fields: Mapping[str, str]) -> JobRecord:
    return JobRecord(
        id=job_id,
        task=fields["task"],
        queue=fields["queue"],
        status=JobStatus(fields["status"]),
        attempts=int(fields["attempts"]),
        created_at=float(fields["created_at"]),
        updated_at=float(fields["updated_at"]),
        scheduled_for=_time(fields.get("scheduled_for")),
        first_attempt_at=_time(fields.get("first_attempt_at")),
        last_attempt_at=_time(fields.get("last_attempt_at")),
        result=_json(fields.get("result")),
        error=_json(fields.get("error")),
        progress=_json(fields.get("progress")),
        idempotency_key=fields.get("idempotency_key"),
        request_digest=fields.get("request_digest"),
    )


def _time(text: str | None) -> float | None:
    return None if text is None else float(text)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
