"""The JSON API of SPEC.md section 8, mounted at ``/api/v1`` by :mod:`apps.web`.

One module per concept: :mod:`.auth` (tokens, who is calling), :mod:`.records`, :mod:`.files`,
:mod:`.openapi`, and :mod:`.errors` (the error shape and the endpoint wrapper). The last route
answers every other path with a JSON 404 (or 405 when the path exists for other methods), so
nothing under ``/api/v1`` ever answers in HTML or plain text.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from apps.api import auth, dashboards, files, notifications, openapi, records, workflow
from apps.api.errors import endpoint, error

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _table() -> list[BaseRoute]:
    return [
        Route("/openapi.json", endpoint(openapi.openapi), methods=["GET"], name="api_openapi"),
        Route("/auth/token", endpoint(auth.token, body=True), methods=["POST"], name="api_token"),
        Route("/files", files.upload, methods=["POST"], name="api_upload"),
        Route("/files/{file_id}", endpoint(files.download), methods=["GET"], name="api_download"),
        *workflow.routes(),
        *notifications.routes(),
        *dashboards.routes(),
        Route("/{app}/{entity}", endpoint(records.list_), methods=["GET"], name="api_list"),
        Route("/{app}/{entity}", endpoint(records.create, body=True), methods=["POST"], name="api_create"),
        Route("/{app}/{entity}/count", endpoint(records.count), methods=["GET"], name="api_count"),
        Route("/{app}/{entity}/{id}", endpoint(records.get), methods=["GET"], name="api_get"),
        Route("/{app}/{entity}/{id}", endpoint(records.update, body=True), methods=["PATCH"], name="api_update"),
        Route("/{app}/{entity}/{id}/history", endpoint(records.history), methods=["GET"], name="api_history"),
    ]


def routes() -> list[BaseRoute]:
    table = _table()

    async def fallback(request: Request) -> Response:
        allowed = sorted({m for r in table if isinstance(r, Route) and r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods or ()})
        if allowed:
            return error(405, "method_not_allowed", f"{request.method} is not allowed here; use {', '.join(allowed)}",
                         headers={"Allow": ", ".join(allowed)})  # fmt: skip
        return error(404, "not_found", f"no API endpoint at {request.url.path}")

    return [*table, Route("/{path:path}", fallback, methods=ALL_METHODS, name="api_fallback")]
