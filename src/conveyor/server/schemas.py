"""Request bodies, pagination and message bodies as the API shows them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from conveyor.brokers.types import MAX_SECONDS
from conveyor.codecs import dumps
from conveyor.server.errors import ApiError
from conveyor.shapes import MAX_PAGE, Paging

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EnqueueRequest(_Request):
    task: str = Field(min_length=1, description="The registered task's name.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments, as JSON.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")
    delay: Seconds | None = Field(None, description="Seconds before the job may run.")
    priority: int | None = Field(None, ge=0, le=255, description="Higher runs first (0-9).")
    queue: str | None = Field(None, min_length=1, description="Instead of the task's queue.")
    idempotency_key: str | None = Field(
        None, min_length=1, description="A second send with this key returns the first job."
    )


class PublishRequest(_Request):
    body: Any = Field(None, description="A string is sent as UTF-8 text, anything else as JSON.")
    headers: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=0, le=255)
    ttl: Seconds | None = Field(None, description="Seconds it may wait before it expires.")
    delay: Seconds = Field(0.0, description="Seconds before it may be received.")
    content_type: str | None = Field(None, description="Default: by the body's kind.")


class ExchangePublishRequest(PublishRequest):
    routing_key: str = ""
    mandatory: bool = Field(False, description="Refuse (409) when no queue takes the message.")


class ProduceRequest(_Request):
    value: Any = Field(
        None, description="A string is stored as UTF-8 text, null is a tombstone, else JSON."
    )
    key: str | None = Field(None, description="Picks the partition, as Kafka's partitioner.")
    headers: dict[str, str] = Field(default_factory=dict)
    partition: int | None = Field(None, ge=0)
    timestamp: float | None = Field(None, ge=0, allow_inf_nan=False)


class ReplayRequest(_Request):
    job_ids: list[str] | None = Field(None, description="Only these jobs (default: all).")
    to_queue: str | None = Field(None, min_length=1, description="Default: the original queue.")


def _paging(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
) -> Paging:
    return Paging(limit, offset)


PageQuery = Annotated[Paging, Depends(_paging)]


def encode_body(body: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(body, str):
        return body.encode(), content_type or "text/plain; charset=utf-8"
    try:
        return dumps(body), content_type or "application/json"
    except (TypeError, ValueError) as error:
        raise ApiError(422, "InvalidRequest", f"body: {error}", field="body") from None
