"""``GET /api/v1/<app>/dashboards`` and ``GET /api/v1/<app>/dashboards/<name>?<filters>`` (SPEC.md
section 8): ``{"cards": [{"name", "label", "value", "series", "groups", ...}]}``, each number with
the ``list`` URL of the records it counts. The same figures as the dashboard page
(engine/dashboards.py); the filters are spelled as on the list page (docs/dashboards.md).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apps.api.auth import instance, require_actor
from apps.api.errors import endpoint
from engine import records as records_module
from engine.dashboards import Dashboards, Drill, Filters


def routes() -> list[BaseRoute]:
    """Listed before the records routes, which would read ``dashboards`` as an entity."""
    return [
        Route("/{app}/dashboards", endpoint(index), methods=["GET"], name="api_dashboards"),
        Route("/{app}/dashboards/{name}", endpoint(one), methods=["GET"], name="api_dashboard"),
    ]


def list_url(app: str, entity: str, drill: Drill) -> str:
    """The list page showing exactly the records behind a number."""
    query = urlencode(drill.params())
    return f"/a/{app}/{entity}" + (f"?{query}" if query else "")


def index(request: Request) -> Response:
    app = request.path_params["app"]
    actor = require_actor(request, app)
    service = Dashboards(instance(request).records(app))
    locale = request.query_params.get("locale") or actor.locale or service.app.locale
    items = [{"name": d.name, "label": d.label.get(locale), "cards": [c.name for c in d.cards], "filters": list(d.filters)}
             for d in service.visible(actor)]  # fmt: skip
    return JSONResponse({"items": items})


def one(request: Request) -> Response:
    app = request.path_params["app"]
    actor = require_actor(request, app)
    service = Dashboards(instance(request).records(app))
    dashboard = service.get(request.path_params["name"], actor)
    locale = request.query_params.get("locale") or actor.locale or service.app.locale
    filters = Filters.parse(dashboard, request.query_params)
    figures = service.compute(dashboard, actor, filters, records_module.utcnow(), locale, only=request.query_params.get("card"))
    return JSONResponse({
        "name": dashboard.name, "label": dashboard.label.get(locale), "filters": filters.params(),
        "cards": [f.to_json(lambda entity, drill: list_url(app, entity, drill)) for f in figures],
    })  # fmt: skip
