"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of this instance's definitions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apps.api.auth import instance
from engine.openapi import document


def openapi(request: Request) -> Response:
    """No login needed: the document describes the definitions' shape, never their data."""
    inst = instance(request)
    cached = getattr(request.app.state, "api_openapi", None)
    if cached is None or cached[0] is not inst.compiled:
        cached = (inst.compiled, document(inst.compiled))
        request.app.state.api_openapi = cached
    return JSONResponse(cached[1])
