"""System endpoints of the web app (the pages live in :mod:`apps.web.pages`).

Endpoints are plain functions: Starlette runs them in its thread pool, so the synchronous
database calls never block the event loop.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from engine.instance import Instance


def _instance(request: Request) -> Instance:
    return request.app.state.instance


def favicon(request: Request) -> Response:
    """Browsers ask for /favicon.ico whatever the page links: the vendored icon."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


def health(request: Request) -> Response:
    instance = _instance(request)
    try:
        with instance.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "error", "database": str(exc.__class__.__name__)}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "apps": sorted(instance.compiled.apps)})
