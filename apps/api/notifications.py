"""``GET /api/v1/me/notifications``: the caller's in-app notifications (SPEC.md section 8).

Newest first, ``limit`` (1-100, default 30) at a time, keyset paged by ``before`` (the
``next_before`` of the previous page): ``{"items": [...], "next_before": ID or null, "unread": N}``
with ``unread`` counted up to 100. The same rows as the ``/-/notifications`` page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apps.api.auth import instance, require_user
from apps.api.errors import ApiError, endpoint
from engine import notifications

MAX_LIMIT = 100


def routes() -> list[BaseRoute]:
    """Listed before the records routes: ``/me/notifications`` would otherwise read as app ``me``."""
    return [Route("/me/notifications", endpoint(mine), methods=["GET"], name="api_notifications")]


def mine(request: Request) -> Response:
    user = require_user(request)
    before = _number(request, "before", None)
    limit = _number(request, "limit", notifications.PAGE_SIZE)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit is 1 to {MAX_LIMIT}", {"limit": f"1 to {MAX_LIMIT}"})
    kiln = instance(request)
    table = kiln.schema.system["kiln_notifications"]
    with kiln.engine.connect() as conn:
        rows = notifications.page(conn, table, user.id, before, limit)
        unread = notifications.unread_count(conn, table, user.id)
    more = len(rows) > limit
    rows = rows[:limit]
    return JSONResponse(
        {"items": [n.as_json() for n in rows], "next_before": rows[-1].id if more else None, "unread": unread}
    )


def _number(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_request", f"{name} must be a whole number", {name: "a whole number"})
    return int(raw)
