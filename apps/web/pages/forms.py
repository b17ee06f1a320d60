"""Forms: ``/a/<app>/<entity>/new`` and ``/a/<app>/<entity>/<id>/edit``, and the
``/a/<app>/<entity>/form`` fragment that re-evaluates the layout on the server as the user types.

A submit goes through ``Records.create``/``update``; a refusal re-renders the form with every
field's message (422), a stale version with a conflict message (409). An edit sends only the
fields the user changed, with the version the form was rendered from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from apps.web.pages import layout as layouts
from apps.web.pages.context import PageContext, entity_context, form_of, page, record_of, render
from apps.web.pages.fields import (
    Raw,
    file_rows,
    form_value,
    input_values,
    lenient_record,
    listed,
    read_form,
    title,
)
from apps.web.pages.lists import field_view
from engine import exports, permissions
from engine.errors import Forbidden, StaleVersion, ValidationFailed, not_visible
from engine.model import Expr


def _stored(ctx: PageContext, record_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record as the API shows it and as Python values (for conditions), if visible."""
    records = ctx.records
    with ctx.instance.engine.connect() as conn:
        stored = records.query.one(conn, ctx.entity, ctx.actor, record_id)
        if stored is None:
            raise not_visible(ctx.entity, record_id)
        item = records.to_api(conn, ctx.entity, [stored], ctx.actor)[0]
        may_update = records.query.may_update(conn, ctx.entity, ctx.actor, record_id)
    if not may_update:
        raise Forbidden(ctx.gettext("You may not change this record now."))
    return item, stored


def initial_raw(ctx: PageContext, item: Mapping[str, Any]) -> dict[str, Raw]:
    tz = ctx.records.timezone
    return {f.name: form_value(f, item.get(f.name), tz) for f in ctx.entity.active_fields if f.name in item}


def defaults(ctx: PageContext) -> dict[str, Raw]:
    """Literal defaults, shown in a new form (an expression default is applied on create)."""
    tz = ctx.records.timezone
    return {f.name: form_value(f, f.default, tz) for f in ctx.entity.active_fields if f.default is not None and not isinstance(f.default, Expr)}


def form_context(
    ctx: PageContext, raw: Mapping[str, Raw], *, errors: Mapping[str, str] | None = None, item: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None, live: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Everything the form template needs: sections of field views, messages, the record."""
    entity, records = ctx.entity, ctx.records
    names = [v for f in entity.fields if f.type == "user" for v in listed(raw.get(f.name))]
    with ctx.instance.engine.connect() as conn:
        user_ids = ctx.instance.users.ids(conn, names) if names else {}
    record = lenient_record(entity, raw, records.timezone, user_ids)
    if previous is not None:  # an edit: the stored record, with what the form changed on top
        record = {**previous, **{k: v for k, v in record.items() if k in raw}}
    layout = layouts.evaluate(records, entity, record, previous, ctx.actor, ctx.locale, creating=previous is None)
    links = [{f.name: int(v)} for f in entity.fields if f.type == "link" for v in listed(raw.get(f.name)) if str(v).isdigit()]
    titles = exports.link_titles(records, entity, links, ctx.actor) if links else {}
    file_ids = [v for f in entity.fields if f.type in ("file", "image") for v in listed(raw.get(f.name))]
    files = file_rows(ctx.instance, file_ids)
    errors = dict(errors or {})
    shown = set(layout.field_names)
    sections = []
    for section in layout.sections:
        views = []
        for fs in section.fields:
            name = fs.field.name
            message = errors.get(name) or (layout.messages.get(name) if live else None)
            api_value = item.get(name) if item is not None and fs.field.is_computed else None
            fv = field_view(
                ctx, fs.field, api_value, raw=None if api_value is not None else raw.get(name, [] if fs.field.is_multi else ""),
                titles=titles, files=files, error=ctx.gettext(message) if message else None, required=fs.required,
                readonly=fs.readonly,
            )  # fmt: skip
            views.append(fv)
        sections.append({"title": section.title, "index": section.index, "fields": views})
    general = [ctx.gettext(m) if not k else f"{_label(ctx, k)}: {ctx.gettext(m)}" for k, m in errors.items() if k not in shown]
    return {
        "ctx": ctx, "sections": sections, "general": general, "item": item, "layout": layout,
        "signature": signature(sections),
        "has_errors": bool(errors), "upload_field": f"{ctx.app.name}.{entity.name}",
    }  # fmt: skip


def signature(sections: list[dict[str, Any]]) -> str:
    """What the layout looks like (sections, fields, required, read-only, messages), hashed: the
    fragment endpoint answers 204 when it did not change, so inputs are never replaced under
    the user's fingers for nothing."""
    shape = [(s["index"], [(f.name, f.required, f.readonly, f.error) for f in s["fields"]]) for s in sections]
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


def _label(ctx: PageContext, name: str) -> str:
    f = ctx.entity.field(name)
    return f.label.get(ctx.locale) if f else name


def _writable(layout: layouts.Layout) -> list[str]:
    return [fs.field.name for s in layout.sections for fs in s.fields if not fs.readonly]


def all_errors(exc: ValidationFailed, layout: layouts.Layout, raw: Mapping[str, Raw]) -> dict[str, str]:
    """Every message at once: the engine stops at values it cannot read (a bad e-mail), so the
    layout's own verdicts (required and empty, ``validations:`` that hold) are added to its."""
    errors = dict(exc.fields or {"": exc.message})
    for section in layout.sections:
        for fs in section.fields:
            if fs.required and not fs.readonly and raw.get(fs.field.name) in (None, "", []):
                errors.setdefault(fs.field.name, "required")
    for name, message in layout.messages.items():
        errors.setdefault(name, message)
    return errors


def _show(request: Request, ctx: PageContext, data: dict[str, Any], status: int = 200) -> Response:
    data.setdefault("conflict", None)
    return render(request, "pages/form.html", data, status=status, locale=ctx.locale, gettext=ctx.gettext)


@page
def new_form(request: Request) -> Response:
    """GET: the empty form, prefilled from the query string (``/new?device=7`` from a QR code).
    POST: create, then go to the new record."""
    ctx = entity_context(request)
    if not permissions.can_create(ctx.entity, ctx.actor):
        raise Forbidden(ctx.gettext("You may not create these records."))
    if request.method == "GET":
        raw = {**defaults(ctx), **read_form(ctx.entity, request.query_params)}
        data = form_context(ctx, raw)
        return _show(request, ctx, {**data, "action": f"{ctx.base}/new", "version": None})
    raw = read_form(ctx.entity, form_of(request))
    data = form_context(ctx, raw)
    wanted = set(_writable(data["layout"]))
    values = {k: v for k, v in input_values(ctx.entity, raw).items() if k in wanted and v not in (None, [])}
    try:
        created = ctx.records.create(ctx.entity.name, values, ctx.actor)
    except ValidationFailed as exc:
        data = form_context(ctx, raw, errors=all_errors(exc, data["layout"], raw))
        return _show(request, ctx, {**data, "action": f"{ctx.base}/new", "version": None}, status=422)
    return RedirectResponse(f"{ctx.base}/{created['id']}", status_code=303)


@page
def edit_form(request: Request) -> Response:
    ctx = entity_context(request)
    record_id = record_of(request)
    item, stored = _stored(ctx, record_id)
    action = f"{ctx.base}/{record_id}/edit"
    initial = initial_raw(ctx, item)
    if request.method == "GET":
        data = form_context(ctx, initial, item=item, previous=stored)
        return _show(request, ctx, {**data, "action": action, "version": item["version"]})
    form = form_of(request)
    raw = {**initial, **read_form(ctx.entity, form)}
    data = form_context(ctx, raw, item=item, previous=stored)
    changed = [n for n in _writable(data["layout"]) if raw.get(n) != initial.get(n)]
    values = {k: v for k, v in input_values(ctx.entity, raw).items() if k in changed}
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        version = -1  # a form without its version cannot prove it saw the current record
    try:
        ctx.records.update(ctx.entity.name, record_id, values, version, ctx.actor)
    except StaleVersion:
        conflict = ctx.gettext("Someone else changed this record while you were editing it. Your changes are below; open the record again to see the current version, then edit it anew.")
        data = form_context(ctx, raw, item=item, previous=stored)
        return _show(request, ctx, {**data, "action": action, "version": version, "conflict": conflict}, status=409)
    except ValidationFailed as exc:
        data = form_context(ctx, raw, errors=all_errors(exc, data["layout"], raw), item=item, previous=stored)
        return _show(request, ctx, {**data, "action": action, "version": version}, status=422)
    return RedirectResponse(f"{ctx.base}/{record_id}", status_code=303)


@page
def form_fragment(request: Request) -> Response:
    """The form's sections for what the user has typed so far (HTMX ``hx-trigger="change"``):
    sections and fields appear, become required or read-only as their conditions say."""
    ctx = entity_context(request)
    form = form_of(request)
    record_id = request.query_params.get("id")
    if record_id:
        item, stored = _stored(ctx, int(record_id) if record_id.isdigit() else -1)
        raw = {**initial_raw(ctx, item), **read_form(ctx.entity, form)}
        data = form_context(ctx, raw, item=item, previous=stored, live=True)
    else:
        data = form_context(ctx, read_form(ctx.entity, form), live=True)
    if form.get("_layout") == data["signature"]:
        return Response(status_code=204, headers={"Vary": "HX-Request, Accept"})
    return render(request, "pages/_form_sections.html", data, locale=ctx.locale, gettext=ctx.gettext)


def record_title(ctx: PageContext, item: Mapping[str, Any]) -> str:
    return title(ctx.entity, dict(item))
