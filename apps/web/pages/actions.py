"""What a list does besides showing rows: bulk updates, saved views, and the search-as-you-type
lookups of link and user fields (used by list filters and forms alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from apps.web.pages.context import PageContext, entity_context, form_of, page, render
from apps.web.pages.fields import input_values, read_form, title
from apps.web.pages.lists import bulk_fields, field_view
from engine import permissions
from engine.errors import NotFound, RecordError, ValidationFailed
from engine.savedviews import SavedViews

LOOKUP_LIMIT = 10
MAX_BULK = 500


def _views(ctx: PageContext) -> SavedViews:
    return SavedViews(ctx.instance.engine, ctx.instance.schema.system["kiln_saved_views"])


@page
def bulk_value(request: Request) -> Response:
    """The input of the field a bulk action will set (swapped in when the field is chosen)."""
    ctx = entity_context(request)
    name = request.query_params.get("field", "")
    f = next((f for f in bulk_fields(ctx) if f.name == name), None)
    data = {"f": field_view(ctx, f) if f else None}
    return render(request, "pages/_bulk_value.html", data, locale=ctx.locale, gettext=ctx.gettext)


@page
def bulk(request: Request) -> Response:
    """Set one field on the selected rows: one ``Records.update`` per row with the version the
    user saw, so a row changed meanwhile fails alone (stale) and the others go through."""
    ctx = entity_context(request)
    form = form_of(request)
    name = str(form.get("field", ""))
    f = next((f for f in bulk_fields(ctx) if f.name == name), None)
    if f is None:
        raise ValidationFailed(ctx.gettext("Choose a field to set."), {"field": "required"})
    selected = [str(v) for v in form.getlist("ids")][:MAX_BULK]
    if not selected:
        raise ValidationFailed(ctx.gettext("Select at least one row."), {"ids": "required"})
    value = input_values(ctx.entity, read_form(ctx.entity, form, [name])).get(name)
    results: list[dict[str, Any]] = []
    for item in selected:
        record_id, _, version = item.partition(":")
        try:
            updated = ctx.records.update(ctx.entity.name, int(record_id), {name: value}, int(version), ctx.actor)
            results.append({"id": record_id, "ok": True, "title": title(ctx.entity, updated)})
        except ValueError:
            results.append({"id": record_id, "ok": False, "message": ctx.gettext("not a row of this list")})
        except RecordError as exc:
            message = "; ".join(f"{k}: {ctx.gettext(v)}" if k else ctx.gettext(v) for k, v in exc.fields.items()) or ctx.gettext(exc.message)
            results.append({"id": record_id, "ok": False, "message": message})
    failed = [r for r in results if not r["ok"]]
    data = {"ctx": ctx, "results": results, "failed": failed, "field": f.label.get(ctx.locale)}
    return render(request, "pages/bulk.html", data, fragment="pages/_bulk_result.html", locale=ctx.locale, gettext=ctx.gettext)


@page
def save_view(request: Request) -> Response:
    ctx = entity_context(request)
    form = form_of(request)
    view = _views(ctx).save(request.state.user.id, ctx.app.name, ctx.entity.name, str(form.get("name", "")), str(form.get("query", "")))
    return RedirectResponse(f"{ctx.base}?{view.query}", status_code=303)


@page
def delete_view(request: Request) -> Response:
    ctx = entity_context(request)
    try:
        view_id = int(request.path_params["view"])
    except ValueError:
        raise NotFound("no such view") from None
    if not _views(ctx).delete(request.state.user.id, view_id):
        raise NotFound("no such view")
    return RedirectResponse(ctx.base, status_code=303)


@page
def lookup(request: Request) -> Response:
    """Search-as-you-type for a link or user field: at most ten matches the user may see, each a
    button that puts its value into the widget (``fields/_lookup.html``)."""
    ctx = entity_context(request)
    f = ctx.entity.field(request.path_params["field"])
    if f is None or f.type not in ("link", "user") or f.disabled or f.name in permissions.hidden_fields(ctx.entity, ctx.actor):
        raise NotFound("no such field")
    q = request.query_params.get("q", "").strip()[:100]
    if f.type == "link":
        target = ctx.records.entity(f.entity or "")
        found = ctx.records.list(target.name, ctx.actor, search=q or None, limit=LOOKUP_LIMIT)
        matches = [(str(item["id"]), title(target, item)) for item in found.items]
    else:
        matches = _users(ctx, f.role, q)
    data = {"matches": matches, "field": f.name, "q": q}
    return render(request, "fields/_lookup_results.html", data, locale=ctx.locale, gettext=ctx.gettext)


def _users(ctx: PageContext, role: str | None, q: str) -> list[tuple[str, str]]:
    """Active users of the app (with the field's role, when it names one) matching ``q``."""
    system = ctx.instance.schema.system
    users, roles = system["kiln_users"], system["kiln_user_roles"]
    query = select(users.c.username, users.c.display_name).where(users.c.is_active.is_(True))
    members = select(roles.c.user_id).where(roles.c.app == ctx.app.name)
    if role:
        members = members.where(roles.c.role == role)
    query = query.where(users.c.id.in_(members))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(users.c.username.ilike(pattern, escape="\\"), users.c.display_name.ilike(pattern, escape="\\")))
    with ctx.instance.engine.connect() as conn:
        rows = conn.execute(query.order_by(users.c.username).limit(LOOKUP_LIMIT)).all()
    return [(r.username, f"{r.display_name} ({r.username})" if r.display_name and r.display_name != r.username else r.username) for r in rows]
