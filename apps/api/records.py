"""Records over HTTP: create, list, count, get, update (If-Match) and history of SPEC.md section 8.

Every handler goes through :class:`engine.records.Records`, which reads through the one query
layer (row scope, state visibility, hidden fields) and writes in one transaction; this module
only translates between HTTP and those calls.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apps.api.auth import instance, require_actor
from apps.api.errors import ApiError, has_nul, json_object, parse_json
from engine.actors import Actor
from engine.errors import NotFound
from engine.queries import MAX_LIMIT
from engine.records import Records

LIST_PARAMS = frozenset({"where", "sort", "limit", "cursor", "q"})
_FILTER = re.compile(r"^filter\[([^\]]+)\]$")
_ID = re.compile(r"^[0-9]{1,18}$")  # fits a 64-bit id; anything else names no record
_VERSION = re.compile(r'^(?:W/)?"?([0-9]{1,9})"?$')


def records_for(request: Request) -> tuple[Records, str, Actor]:
    app, entity = request.path_params["app"], request.path_params["entity"]
    actor = require_actor(request, app)
    records: Records = instance(request).records(app)
    records.entity(entity)  # 404 for an unknown entity
    return records, entity, actor


def record_id_of(request: Request) -> int:
    raw = request.path_params["id"]
    if not _ID.match(raw):
        raise NotFound(f"no record with id '{raw}'")
    return int(raw)


def with_extras(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the single-record endpoints return it: with its SLA clocks, tags and flags
    (empty until SLAs and rules come; a field of the same name wins)."""
    for key, empty in (("sla", []), ("tags", []), ("flags", {})):
        record.setdefault(key, empty)
    return record


def etag_of(record: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{record["version"]}"'}


def _query(request: Request) -> dict[str, Any]:
    """where, sort, limit, cursor, q and the filters (``filter[f]=v`` or ``f=v``; repeated
    parameters filter on any of their values)."""
    params = request.query_params
    if any(has_nul(k) or has_nul(v) for k, v in params.multi_items()):
        raise ApiError(400, "bad_query", "query parameters may not contain NUL characters")
    filters: dict[str, Any] = {}
    for key in params:
        if key in LIST_PARAMS:
            continue
        match = _FILTER.match(key)
        name = match.group(1) if match else key
        values = params.getlist(key)
        filters[name] = values if len(values) > 1 else values[0]
    spec: dict[str, Any] = {"where": params.get("where") or None, "filters": filters, "search": params.get("q") or None}
    return spec


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "bad_query", f"limit must be a whole number from 1 to {MAX_LIMIT}", {"limit": "invalid"})
    return int(raw)


def create(request: Request, body: bytes) -> Response:
    records, entity, actor = records_for(request)
    record = records.create(entity, json_object(parse_json(body)), actor)
    return JSONResponse(with_extras(record), 201, headers=etag_of(record))


def list_(request: Request) -> Response:
    records, entity, actor = records_for(request)
    page = records.list(
        entity, actor, **_query(request), sort=request.query_params.get("sort") or "-id", limit=_limit(request),
        cursor=request.query_params.get("cursor") or None,
    )  # fmt: skip
    return JSONResponse({"items": page.items, "next_cursor": page.next_cursor})


def count(request: Request) -> Response:
    records, entity, actor = records_for(request)
    n, more = records.count(entity, actor, **_query(request))
    return JSONResponse({"count": n, "more": more})


def get(request: Request) -> Response:
    records, entity, actor = records_for(request)
    record = records.get(entity, record_id_of(request), actor)
    return JSONResponse(with_extras(record), headers=etag_of(record))


def version_from_if_match(request: Request) -> int:
    raw = request.headers.get("if-match")
    if raw is None:
        raise ApiError(428, "precondition_required", "send the version you read as If-Match: <version>", {"If-Match": "required"})
    match = _VERSION.match(raw.strip())
    if not match:
        raise ApiError(400, "bad_request", "If-Match must be the record's version, e.g. If-Match: 3", {"If-Match": "invalid"})
    return int(match.group(1))


def update(request: Request, body: bytes) -> Response:
    records, entity, actor = records_for(request)
    record_id = record_id_of(request)
    version = version_from_if_match(request)
    record = records.update(entity, record_id, json_object(parse_json(body)), version, actor)
    return JSONResponse(with_extras(record), headers=etag_of(record))


def history(request: Request) -> Response:
    records, entity, actor = records_for(request)
    return JSONResponse({"items": records.history(entity, record_id_of(request), actor)})
