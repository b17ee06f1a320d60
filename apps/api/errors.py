"""The API's error shape and the wrapper every JSON endpoint runs in.

Every refusal is ``{"error": {"code", "message", "fields": {field: message}}}``. Handlers are plain
functions run in the thread pool (the database calls are synchronous); :func:`endpoint` reads and
parses the body first, on the event loop, then turns the engine's refusals (``RecordError``,
which includes ``BadQuery``) into that shape, so bad input is never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.errors import RecordError

MAX_JSON_BYTES = 1024 * 1024  # a record's JSON is small; anything bigger is a mistake or an attack
_MISSING = object()


class ApiError(RecordError):
    """A refusal of the API layer itself (auth, body, headers), with any status."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message, fields)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error(status: int, code: str, message: str, fields: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "fields": fields or {}}}, status, headers=headers)


def from_exception(exc: RecordError) -> JSONResponse:
    return JSONResponse(exc.as_json(), exc.status, headers=getattr(exc, "headers", None))


def has_nul(value: Any) -> bool:
    """Whether a NUL character hides in a string of ``value`` (PostgreSQL refuses them in text)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


async def read_body(request: Request) -> bytes:
    """The raw request body, refusing oversize bodies before reading them whole."""
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_JSON_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON (whether it is an object is the caller's check)."""
    if not body.strip():
        raise ApiError(400, "bad_json", "the body is empty; send a JSON object")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if has_nul(value):
        raise ApiError(400, "bad_json", "text may not contain NUL characters")
    return value


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return value


Handler = Callable[..., Response]


def endpoint(handler: Handler, body: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An ASGI endpoint running ``handler(request)`` (or ``handler(request, body)`` with the raw
    body, which the handler parses after checking who is asking) in the thread pool, with the
    engine's refusals as JSON errors."""

    async def run(request: Request) -> Response:
        try:
            args: tuple[Any, ...] = (request, await read_body(request)) if body else (request,)
            return await run_in_threadpool(handler, *args)
        except RecordError as exc:
            return from_exception(exc)
        except (DataError, OverflowError):
            # A value the database cannot hold or compute (an integer past 64 bits, a division
            # by zero in a where expression on PostgreSQL): the input's fault, not the server's.
            return error(400, "bad_request", "a value in the request is out of range")

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
