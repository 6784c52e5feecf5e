"""Every error answer is JSON: ``{"error": {"type": ..., "message": ..., ...}}``.

Conveyor's errors map to HTTP statuses by class; what else a client may act on (the field of
a bad argument, the registered task names) rides along in the same object.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from conveyor import errors

# First match wins, so subclasses come before their bases.
STATUSES: tuple[tuple[type[errors.ConveyorError], int], ...] = (
    (errors.QueueNotFound, 404),
    (errors.ExchangeNotFound, 404),
    (errors.TopicNotFound, 404),
    (errors.PartitionNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.MessageTooLarge, 413),
    (errors.ValidationError, 422),
    (errors.ConfigError, 422),
    (errors.MessageError, 422),
    (errors.MemberFenced, 409),
    (errors.SequenceError, 409),
    (errors.QueueFull, 409),
    (errors.Unroutable, 409),
    (errors.LeaseLost, 409),
    (errors.NoOffset, 409),
    (errors.OffsetOutOfRange, 409),
    (errors.BrokerUnavailable, 503),
    (errors.NotSupported, 400),
)

_REASONS = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


class ApiError(Exception):
    """An error the API itself raises (not one of Conveyor's)."""

    def __init__(self, status: int, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.details = details


def error_body(kind: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **details}}


def error_bytes(kind: str, message: str) -> bytes:
    return json.dumps(error_body(kind, message)).encode()


def status_of(error: errors.ConveyorError) -> int:
    return next((status for kind, status in STATUSES if isinstance(error, kind)), 400)


def details_of(error: errors.ConveyorError) -> dict[str, Any]:
    if isinstance(error, errors.ValidationError):
        return {"field": error.field}
    if isinstance(error, errors.MessageTooLarge):
        return {"size": error.size, "limit": error.limit}
    return {}


def install_error_handlers(server: FastAPI) -> None:
    @server.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.kind, str(error), **error.details), error.status)

    @server.exception_handler(errors.ConveyorError)
    async def conveyor_error(request: Request, error: errors.ConveyorError) -> JSONResponse:
        body = error_body(type(error).__name__, str(error), **details_of(error))
        return JSONResponse(body, status_of(error))

    @server.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [_problem(problem) for problem in error.errors()]
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field'] or 'request'}: {first['message']}"
        body = error_body("InvalidRequest", message, field=first["field"], problems=problems)
        return JSONResponse(body, 422)

    @server.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = _REASONS.get(error.status_code, f"HTTP{error.status_code}")
        message = str(error.detail)
        where = f"{request.method} {request.url.path}"
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {where}; see /docs"
        elif error.status_code == 405:
            headers = {key.lower(): value for key, value in (error.headers or {}).items()}
            allowed = headers.get("allow", "")
            message = f"{where} is not allowed; {request.url.path} takes {allowed}"
        return JSONResponse(error_body(kind, message), error.status_code, error.headers)

    @server.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette raises the error again after this answer, for the server to log it.
        message = f"unexpected {type(error).__name__}; the server log has the details"
        return JSONResponse(error_body("InternalError", message), 500)


def _problem(problem: Any) -> dict[str, str]:
    """One problem pydantic found, with where it is in the request, as the client sent it:
    ``("body", "kwargs", "to")`` -> ``"kwargs.to"``, ``("query", "limit")`` -> ``"limit"``."""
    location = [str(part) for part in problem.get("loc", ())]
    if problem.get("type") == "json_invalid":
        detail = (problem.get("ctx") or {}).get("error", "")
        return {"field": "body", "message": f"not valid JSON: {detail}"}
    if location[:1] in (["body"], ["query"], ["path"], ["header"]):
        location = location[1:]
    return {"field": ".".join(location) or "body", "message": str(problem.get("msg", ""))}
