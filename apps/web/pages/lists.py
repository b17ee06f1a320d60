"""The list page ``/a/<app>/<entity>``: filters, search, sort, keyset pages, the count apart
from the rows, saved views, bulk actions, exports, and the JSON twin (``.json`` or
``Accept: application/json``). Every read goes through the query layer with the list's spec.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from apps.web.pages import marks
from apps.web.pages.cells import RowMaker, formatter
from apps.web.pages.context import (
    PageContext,
    entity_context,
    json_response,
    page,
    render,
    strip_json,
    wants_json,
)
from apps.web.pages.fields import FieldView, title, view
from apps.web.pages.liststate import ListState, filter_fields, parse_state, to_spec
from engine import exports, permissions
from engine.errors import Forbidden, NotFound
from engine.model import Entity, Field
from engine.queries import COUNT_CAP, Page
from engine.savedviews import SavedViews

LIST_TYPES_SKIPPED = frozenset({"textarea", "richtext", "file", "image", "location", "computed"})
MAX_COLUMNS = 7


def list_fields(entity: Entity, hidden: set[str]) -> list[Field]:
    """The columns of the list: the first short fields of the entity, in definition order."""
    fields = [f for f in entity.active_fields if f.name not in hidden and f.type not in LIST_TYPES_SKIPPED and not f.is_multi]
    return fields[:MAX_COLUMNS]


def team_labels(ctx: PageContext) -> dict[str, str]:
    return {t.name: t.label.get(ctx.locale) for t in ctx.app.teams}


def field_view(ctx: PageContext, f: Field, api_value: Any = None, **kw: Any) -> FieldView:
    return view(
        f, locale=ctx.locale, tz=ctx.records.timezone, base=ctx.base, app_url=f"/a/{ctx.app.name}", api_value=api_value,
        team_labels=team_labels(ctx), **kw,
    )  # fmt: skip


def state_label(ctx: PageContext, state: str | None) -> str:
    found = ctx.entity.workflow.state(state) if ctx.entity.workflow and state else None
    return found.label.get(ctx.locale) if found else (state or "")


def read_page(ctx: PageContext, state: ListState) -> tuple[list[dict[str, Any]], Page]:
    """The page as the API shows it (the JSON twin)."""
    records = ctx.records
    spec = replace(to_spec(state, ctx.entity, ctx.app.timezone), before=state.before)
    with ctx.instance.engine.connect() as conn:
        window = records.query.page(conn, ctx.entity, ctx.actor, spec)
        items = records.to_api(conn, ctx.entity, window.items, ctx.actor)
    return items, window


class SortHead(NamedTuple):
    label: str
    url: str
    current: bool
    descending: bool


def sort_heads(ctx: PageContext, state: ListState, columns: list[Field]) -> list[SortHead]:
    """The column heads: each sorts by its column, and flips the order of the current one."""
    names = [("number", ctx.gettext("Number")) if ctx.entity.number else ("id", "#")]
    names += [(f.name, f.label.get(ctx.locale)) for f in columns]
    names += [("state", ctx.gettext("State"))] if ctx.entity.workflow else []
    names += [("created_at", ctx.gettext("Created"))]
    sorted_by, descending = state.sort.lstrip("-+"), state.sort.startswith("-")
    heads = []
    for name, label in names:
        current = name == sorted_by
        sort = "-" + name if current and not descending else name
        heads.append(SortHead(label, f"{ctx.base}?{state.query(sort=sort, cursor=None, before=None)}", current, descending))
    return heads


def list_context(ctx: PageContext, state: ListState) -> dict[str, Any]:
    """The rows of the HTML list: only the shown columns are read, and each row is made in
    Python from the stored values (apps/web/pages/cells.py)."""
    entity, actor, records = ctx.entity, ctx.actor, ctx.records
    bulk = bulk_fields(ctx)
    hidden = permissions.hidden_fields(entity, actor)
    columns = list_fields(entity, hidden)
    title_names = entity.title_fields
    wanted = (*(f.name for f in columns), *title_names, "number", "state", "version", "created_at")
    spec = replace(to_spec(state, entity, ctx.app.timezone), before=state.before, columns=wanted)
    users = [f.name for f in columns if f.type == "user"]
    views = SavedViews(ctx.instance.engine, ctx.instance.schema.system["kiln_saved_views"])
    with ctx.instance.engine.connect() as conn:  # one connection for everything the page reads
        window = records.query.page(conn, entity, actor, spec)
        names = records.users.usernames(conn, {r[n] for r in window.items for n in users if r[n] is not None}) if users else {}
        if names:  # shown by their display names
            shown = records.users.display_names(conn, names.values())
            names = {user_id: shown.get(username, username) for user_id, username in names.items()}
        flags = marks.row_flags(conn, records, entity, [r["id"] for r in window.items])
        saved = views.list(actor.id, ctx.app.name, entity.name, conn) if actor.id is not None else []
        links = [f.name for f in columns if f.type == "link"]
        titles = exports.link_titles(records, entity, window.items, actor, fields=links, conn=conn)
    teams = team_labels(ctx)
    app_url = f"/a/{ctx.app.name}"
    cells = [
        (f.name, formatter(f, locale=ctx.locale, tz=records.timezone, app_url=app_url, titles=titles.get(f.name, {}),
                           usernames=names, team_labels=teams))
        for f in columns
    ]  # fmt: skip
    states = {s.name: s.label.get(ctx.locale) for s in entity.workflow.states} if entity.workflow else None
    make_row = RowMaker(
        base=ctx.base, columns=cells, tz=records.timezone, flags=flags, flagged_label=ctx.gettext("Flagged"), states=states,
        pick_label=ctx.gettext("Select") if bulk else None,
        title=lambda r: title(entity, r) if title_names else r.get("number") or f"#{r['id']}",
    )  # fmt: skip
    rows = [make_row(r) for r in window.items]
    return {
        "ctx": ctx, "state": state, "rows": rows, "columns": columns, "window": window, "heads": sort_heads(ctx, state, columns),
        "views": saved, "bulk_fields": bulk,
        "next_url": f"{ctx.base}?{state.query(cursor=window.next_cursor, before=None)}" if window.next_cursor else None,
        "prev_url": f"{ctx.base}?{state.query(cursor=None, before=window.prev_cursor)}" if window.prev_cursor else None,
        "count_url": f"{ctx.base}/count?{state.query(cursor=None, before=None)}",
        "export": exports.may_export(entity, actor), "export_query": state.query(cursor=None, before=None),
        "can_create": permissions.can_create(entity, actor),
    }  # fmt: skip


def local_time(ctx: PageContext, value: str | None) -> str:
    """An ISO datetime from the API in the app's timezone, to the minute."""
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(ctx.records.timezone).strftime("%Y-%m-%d %H:%M")


def filter_controls(ctx: PageContext, state: ListState) -> list[dict[str, Any]]:
    """One control per filterable field: its kind, current values and choices."""
    controls: list[dict[str, Any]] = []
    if ctx.entity.workflow:
        options = [(s.name, s.label.get(ctx.locale)) for s in ctx.entity.workflow.states]
        controls.append({"name": "state", "kind": "choice", "label": ctx.gettext("State"), "options": options,
                         "values": state.filters.get("state", [])})  # fmt: skip
    for f in filter_fields(ctx.entity, ctx.actor):
        label = f.label.get(ctx.locale)
        if f.type in ("date", "datetime"):
            low, high = state.ranges.get(f.name, ("", ""))
            controls.append({"name": f.name, "kind": "range", "label": label, "from": low, "to": high})
        elif f.type in ("link", "user"):
            values = state.filters.get(f.name, [])
            fv = field_view(ctx, f, raw=values[-1] if values else "")
            if f.type == "link" and values:
                titles = exports.link_titles(ctx.records, ctx.entity, [{f.name: _int(values[-1])}], ctx.actor)
                fv.text = titles.get(f.name, {}).get(_int(values[-1]), values[-1])
            controls.append({"name": f.name, "kind": "lookup", "label": label, "view": fv})
        elif f.type == "boolean":
            options = [("true", "✓"), ("false", "✗")]
            controls.append({"name": f.name, "kind": "choice", "label": label, "options": options, "values": state.filters.get(f.name, [])})
        else:
            options = [(k, lab.get(ctx.locale)) for k, lab in f.options] if f.type != "team" else list(team_labels(ctx).items())
            if f.type == "rating":
                options = [(str(n), "★" * n) for n in range(1, int(f.max or 5) + 1)]
            controls.append({"name": f.name, "kind": "choice", "label": label, "options": options, "values": state.filters.get(f.name, [])})
    low, high = state.ranges.get("created_at", ("", ""))
    controls.append({"name": "created_at", "kind": "range", "label": ctx.gettext("Created"), "from": low, "to": high})
    return controls


def _int(value: str) -> int | str:
    return int(value) if value.isdigit() else value


@page
def list_page(request: Request) -> Response:
    entity_name, as_json = strip_json(request.path_params["entity"])
    ctx = entity_context(request, entity_name)
    state = parse_state(request.query_params, ctx.entity, ctx.actor)
    if wants_json(request, as_json):
        items, window = read_page(ctx, state)
        return json_response({"items": items, "next_cursor": window.next_cursor, "prev_cursor": window.prev_cursor})
    data = list_context(ctx, state)
    data["filters"] = filter_controls(ctx, state)
    return render(request, "pages/list.html", data, fragment="pages/_list_body.html", locale=ctx.locale, gettext=ctx.gettext)


def bulk_fields(ctx: PageContext) -> list[Field]:
    """Fields a bulk action may set: single-valued, settable by this role, not files."""
    hidden = permissions.hidden_fields(ctx.entity, ctx.actor)
    readonly = permissions.readonly_fields(ctx.entity, ctx.actor)
    skip = {"file", "image", "computed", "richtext", "textarea"}
    return [f for f in ctx.entity.active_fields if f.name not in hidden | readonly and f.type not in skip and not f.is_multi]


@page
def count(request: Request) -> Response:
    ctx = entity_context(request)
    state = parse_state(request.query_params, ctx.entity, ctx.actor)
    spec = to_spec(state, ctx.entity, ctx.app.timezone)
    n, more = ctx.records.count(ctx.entity.name, ctx.actor, where=spec.where, filters=spec.filters, search=spec.search, cap=COUNT_CAP)
    if wants_json(request):
        return json_response({"count": n, "more": more, "cap": COUNT_CAP})
    return render(request, "pages/_count.html", {"count": n, "more": more, "cap": COUNT_CAP}, locale=ctx.locale, gettext=ctx.gettext)


@page
def export(request: Request) -> Response:
    ctx = entity_context(request)
    if not exports.may_export(ctx.entity, ctx.actor):
        raise Forbidden(ctx.gettext("Your role may not export these records."))
    fmt = request.path_params["format"]
    if fmt not in ("csv", "xlsx"):
        raise NotFound(ctx.gettext("Exports are CSV or XLSX."))
    state = parse_state(request.query_params, ctx.entity, ctx.actor)
    spec = exports.export_spec(to_spec(state, ctx.entity, ctx.app.timezone))
    # The header and the first page are read here, so a bad filter or sort is a 400 page, not a
    # broken download.
    lines = exports.rows(ctx.records, ctx.entity, ctx.actor, spec, ctx.locale)
    head = [next(lines)]
    head += [row for row in [next(lines, None)] if row is not None]
    filename = f"{ctx.app.name}-{ctx.entity.name}.{fmt}"

    def everything() -> Any:
        yield from head
        yield from lines

    if fmt == "csv":
        body, media = exports.csv_chunks(everything()), "text/csv; charset=utf-8"
    else:
        body = exports.xlsx_chunks(everything(), ctx.entity.name)
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
