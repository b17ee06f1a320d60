"""The pages and system endpoints of the first web app.

Endpoints are plain functions: Starlette runs them in its thread pool, so the synchronous
database calls never block the event loop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.actors import SYSTEM
from engine.instance import Instance
from engine.queries import COUNT_CAP


def _instance(request: Request) -> Instance:
    return request.app.state.instance


def home(request: Request) -> Response:
    """Every app and entity with its record count, capped: a count never reads past COUNT_CAP
    rows, so this page stays fast on a table of millions."""
    instance = _instance(request)
    apps: list[dict[str, Any]] = []
    for name, compiled in sorted(instance.compiled.apps.items()):
        app = compiled.app
        records = instance.records(name)
        entities = []
        for entity in app.entities:
            # SYSTEM until login exists: only counts are shown, never a record.
            count, more = records.count(entity.name, SYSTEM, cap=COUNT_CAP)
            entities.append({"name": entity.name, "label": entity.label.get(app.locale), "count": count, "more": more})
        apps.append({"name": name, "label": app.label.get(app.locale), "locale": app.locale, "entities": entities})
    return request.app.state.templates.TemplateResponse(request, "home.html", {"apps": apps, "cap": COUNT_CAP})


def health(request: Request) -> Response:
    instance = _instance(request)
    try:
        with instance.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "error", "database": str(exc.__class__.__name__)}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "apps": sorted(instance.compiled.apps)})
