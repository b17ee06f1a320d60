"""The dashboard pages (docs/dashboards.md): ``/a/<app>/dashboards/<name>`` (also under ``/-/``),
the filter controls, the cards (a number, a chart drawn by the vendored Chart.js over a table
that is there without JavaScript, groups, lists), each number a link to the list behind it; an
HTMX request gets the cards alone (the refresh), ``Accept: application/json`` the API's JSON, and
``/<card>.csv|.xlsx`` one card's figures.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from apps.api.dashboards import list_url
from apps.web.pages.context import (
    PageContext,
    entity_context,
    instance_of,
    json_response,
    page,
    render,
    wants_json,
)
from engine import exports
from engine import records as records_module
from engine.dashboards import Dashboards, Figure, Filters, resolve
from engine.errors import NotFound
from engine.model import Dashboard

EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def _context(request: Request) -> tuple[PageContext, Dashboards, Dashboard]:
    compiled = instance_of(request).compiled.apps.get(request.path_params["app"])
    if compiled is None:
        raise NotFound(f"no app '{request.path_params['app']}'")
    app = compiled.app
    name = request.path_params.get("name")
    found = next((d for d in app.dashboards if d.name == name), None) if name else (app.dashboards[:1] or [None])[0]
    if found is None:
        raise NotFound(f"no dashboard '{name}' in app '{app.name}'")
    ctx = entity_context(request, found.cards[0].entity)
    service = Dashboards(ctx.records)
    return ctx, service, service.get(found.name, ctx.actor)


def _figures(ctx: PageContext, service: Dashboards, dashboard: Dashboard, request: Request, only: str | None = None) -> tuple[Filters, list[Figure]]:
    filters = Filters.parse(dashboard, request.query_params)
    return filters, service.compute(dashboard, ctx.actor, filters, records_module.utcnow(), ctx.locale, only=only)


def _link(app: str) -> Any:
    return lambda entity, drill: list_url(app, entity, drill)


@page
def index(request: Request) -> Response:
    """``/a/<app>/dashboards``: the first dashboard the user may see."""
    ctx, service, _ = _context(request)
    visible = service.visible(ctx.actor)
    if not visible:
        raise NotFound("no dashboard is shown to your roles")
    request.path_params["name"] = visible[0].name
    return _page(request)


@page
def dashboard_page(request: Request) -> Response:
    return _page(request)


def _page(request: Request) -> Response:
    ctx, service, dashboard = _context(request)
    filters, figures = _figures(ctx, service, dashboard, request)
    link = _link(ctx.app.name)
    cards = [figure.to_json(link) for figure in figures]
    if wants_json(request):
        return json_response({"name": dashboard.name, "label": dashboard.label.get(ctx.locale), "filters": filters.params(), "cards": cards})
    data = {
        "ctx": ctx, "dashboard": dashboard, "heading": dashboard.label.get(ctx.locale), "cards": cards,
        "controls": controls(ctx, dashboard, filters), "dashboards": service.visible(ctx.actor),
        "base": f"/a/{ctx.app.name}/dashboards/{dashboard.name}", "query": request.url.query,
        "updated": records_module.utcnow().astimezone(ctx.records.timezone).strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    return render(request, "dashboards/page.html", data, fragment="dashboards/_cards.html", locale=ctx.locale, gettext=ctx.gettext)


def controls(ctx: PageContext, dashboard: Dashboard, filters: Filters) -> list[dict[str, Any]]:
    """One control per dashboard filter: a choice of options, or a date range."""
    out = []
    for path in dashboard.filters:
        info = next((i for c in dashboard.cards if (e := ctx.app.entity(c.entity)) and (i := resolve(ctx.records, e, path))), None)
        if info is None:
            continue
        label = info.field.label.get(ctx.locale) if info.field is not None else ctx.gettext("Created") if path == "created_at" else path
        if info.type in ("date", "datetime"):
            low, high = filters.ranges.get(path, ("", ""))
            out.append({"name": path, "kind": "range", "label": label, "from": low, "to": high})
        elif info.field is not None and info.field.options:
            options = [(k, lab.get(ctx.locale)) for k, lab in info.field.options]
            out.append({"name": path, "kind": "choice", "label": label, "options": options, "values": filters.values.get(path, [])})
        elif info.type == "state" and info.entity.workflow:
            options = [(s.name, s.label.get(ctx.locale)) for s in info.entity.workflow.states]
            out.append({"name": path, "kind": "choice", "label": ctx.gettext("State"), "options": options, "values": filters.values.get(path, [])})
        else:
            values = filters.values.get(path, [])
            out.append({"name": path, "kind": "text", "label": label, "value": values[-1] if values else ""})
    return out


@page
def export(request: Request) -> Response:
    """One card's figures as CSV or XLSX (the page's filters apply)."""
    fmt = request.path_params["format"]
    if fmt not in EXPORT_TYPES:
        raise NotFound(f"no export format '{fmt}'; use csv or xlsx")
    ctx, service, dashboard = _context(request)
    _, figures = _figures(ctx, service, dashboard, request, only=request.path_params["card"])
    if not figures:
        raise NotFound(f"no card '{request.path_params['card']}' in dashboard {dashboard.name}")
    card = figures[0].to_json(_link(ctx.app.name))
    lines = rows(card, ctx.gettext)
    chunks = exports.csv_chunks(lines) if fmt == "csv" else exports.xlsx_chunks(lines, title=card["name"][:31])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    filename = f"{ctx.app.name}-{dashboard.name}-{card['name']}-{stamp}.{fmt}"
    return StreamingResponse(chunks, media_type=EXPORT_TYPES[fmt], headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def rows(card: dict[str, Any], _: Any) -> list[list[Any]]:
    """A card as a sheet: its value, then its groups or series, or its list."""
    if card["type"] == "list":
        return [["id", *card["columns"]], *([item.get("id"), *(_cell(item.get(c)) for c in card["columns"])] for item in card["items"])]
    lines: list[list[Any]] = [[card["label"], card["unit"]], [_("Total"), card["value"]]]
    points = card["groups"] or card["series"]
    if points:
        extra = [k for k in points[0] if k not in ("key", "label", "value", "list")]
        lines.append([_("Group"), _("Value"), *extra])
        lines += [[p["label"], p["value"], *(p.get(k) for k in extra)] for p in points]
    return lines


def _cell(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value
