"""Where each thing lives in Redis, under the store's prefix (``conveyor:`` by default).

```
{prefix}job:{id}           hash    one job record; expires result_ttl after it finishes
{prefix}jobs               zset    every kept job id, scored by its record's updated_at
{prefix}expiring           zset    finished job ids, scored by when their record expires
{prefix}idem:{key}         string  the job an idempotency key names, for its window
{prefix}succeeded:{key}    string  the last job with that key that succeeded
{prefix}rate:{key}         hash    a token bucket (tokens, updated_at_ms)
{prefix}workers            hash    worker id -> WorkerInfo as JSON
{prefix}done:{id}          channel told when that job finishes
{prefix}samples:{queue}    zset    a queue's samples for charts (JSON), scored by time (ms)
{prefix}sampled            zset    every sampled queue, scored by its newest sample's time
```

The two sorted sets let ``job_stats`` find the kept records without SCAN, and let expired
ids be dropped from them (Redis expires the hashes, not set members).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def expiring(self) -> str:
        return f"{self.prefix}expiring"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}job:"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    def succeeded(self, key: str) -> str:
        return f"{self.prefix}succeeded:{key}"

    def rate(self, key: str) -> str:
        return f"{self.prefix}rate:{key}"

    def done(self, job_id: str) -> str:
        return f"{self.prefix}done:{job_id}"

    @property
    def sampled(self) -> str:
        return f"{self.prefix}sampled"

    @property
    def sample_prefix(self) -> str:
        return f"{self.prefix}samples:"

    def samples(self, queue: str) -> str:
        return f"{self.prefix}samples:{queue}"
