"""The workflow's transitions on the record page (docs/pages.md, "Transitions and approvals").

The record page shows a button per transition the user may take now
(:func:`engine.workflow.available`); a blocked one (a pending approval, a guard) is disabled with
its reason. A button GETs ``/a/<app>/<entity>/<id>/transitions/<name>``: for HTMX the dialog
fragment, otherwise the same form as a page. The dialog asks for the fields the transition
``requires`` and a comment; it POSTs there with the record's version, and the endpoint calls
:func:`engine.workflow.transition`. Success sends the browser back to the record (``HX-Redirect``
or 303); a refusal re-renders the dialog with the message and each field's message, under the
refusal's own status, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from apps.web.pages.context import PageContext, entity_context, form_of, is_htmx, page, record_of, render
from apps.web.pages.fields import Raw, file_rows, form_value, input_values, listed, read_form, title
from apps.web.pages.lists import field_view
from apps.web.pages.states import look
from engine import exports, workflow
from engine.errors import Forbidden, NotFound, RecordError, StaleVersion
from engine.model import Transition

VARY = {"Vary": "HX-Request, Accept"}


def buttons(ctx: PageContext, record_id: int) -> list[dict[str, Any]]:
    """The transitions the user may take now, for the record page."""
    out = []
    for a in workflow.available(ctx.records, ctx.entity.name, record_id, ctx.actor):
        out.append({
            "name": a.name, "label": a.label.get(ctx.locale), "to": look(ctx.entity, a.to, ctx.locale).label,
            "blocked": ctx.gettext(a.blocked) if a.blocked else None, "href": f"{ctx.base}/{record_id}/transitions/{a.name}",
        })  # fmt: skip
    return out


def _transition(ctx: PageContext, name: str) -> Transition:
    t = ctx.entity.workflow.transition(name) if ctx.entity.workflow else None
    if t is None:
        raise NotFound(f"{ctx.entity.name} has no transition '{name}'")
    return t


def _item(ctx: PageContext, record_id: int) -> dict[str, Any] | None:
    """The record as the API shows it to the user; None when it is not visible."""
    with ctx.instance.engine.connect() as conn:
        stored = ctx.records.query.one(conn, ctx.entity, ctx.actor, record_id)
        return ctx.records.to_api(conn, ctx.entity, [stored], ctx.actor)[0] if stored is not None else None


def dialog_context(
    ctx: PageContext, record_id: int, t: Transition, item: Mapping[str, Any] | None, raw: Mapping[str, Raw], *,
    version: int | None, comment: str = "", errors: Mapping[str, str] | None = None, general: list[str] | None = None,
    stale: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """What the dialog shows: an input per ``requires`` field, the comment, the messages."""
    errors = dict(errors or {})
    wanted = [f for name in t.requires if (f := ctx.entity.field(name)) is not None and (item is None or name in item)]
    links = [{f.name: int(v)} for f in wanted if f.type == "link" for v in listed(raw.get(f.name)) if v.isdigit()]
    titles = exports.link_titles(ctx.records, ctx.entity, links, ctx.actor) if links else {}
    files = file_rows(ctx.instance, [v for f in wanted if f.type in ("file", "image") for v in listed(raw.get(f.name))])
    fields = [
        field_view(ctx, f, raw=raw.get(f.name, [] if f.is_multi else ""), titles=titles, files=files, required=True,
                   error=ctx.gettext(errors[f.name]) if f.name in errors else None)
        for f in wanted
    ]  # fmt: skip
    shown = {f.name for f in wanted} | {"comment"}
    # A field the dialog does not show, by its label; a key that is no field (approval, when,
    # state) only repeats what the refusal's own message says.
    general = list(general or []) + [
        f"{f.label.get(ctx.locale)}: {ctx.gettext(m)}" for k, m in errors.items()
        if k and k not in shown and (f := ctx.entity.field(k)) is not None
    ]  # fmt: skip
    return {
        "ctx": ctx, "t": t, "label": t.label.get(ctx.locale), "to": look(ctx.entity, t.to, ctx.locale),
        "title": title(ctx.entity, dict(item)) if item else f"#{record_id}", "record_id": record_id,
        "action": f"{ctx.base}/{record_id}/transitions/{t.name}", "record_url": f"{ctx.base}/{record_id}",
        "version": version, "fields": fields, "comment": comment, "comment_required": t.comment == "required",
        "comment_error": ctx.gettext(errors["comment"]) if "comment" in errors else None,
        "general": general, "stale": stale, "upload_field": f"{ctx.app.name}.{ctx.entity.name}",  # file fields' uploads
    }  # fmt: skip


def _show(request: Request, ctx: PageContext, data: dict[str, Any], status: int = 200) -> Response:
    return render(request, "pages/transition.html", data, status=status, fragment="pages/_transition_dialog.html",
                  locale=ctx.locale, gettext=ctx.gettext)  # fmt: skip


@page
def dialog(request: Request) -> Response:
    """GET: the dialog of one transition; POST: take it."""
    ctx = entity_context(request)
    record_id = record_of(request)
    t = _transition(ctx, request.path_params["name"])
    if request.method == "POST":
        return _take(request, ctx, record_id, t)
    item = _item(ctx, record_id)
    if item is None:
        raise NotFound(ctx.gettext("This record does not exist or is not visible to you."))
    choice = next((a for a in workflow.available(ctx.records, ctx.entity.name, record_id, ctx.actor) if a.name == t.name), None)
    if choice is None:
        raise Forbidden(ctx.gettext("You may not take this step on this record now."))
    tz = ctx.records.timezone
    raw = {name: form_value(f, item.get(name), tz) for name in t.requires if (f := ctx.entity.field(name)) is not None}
    general = [ctx.gettext(choice.blocked)] if choice.blocked else []
    return _show(request, ctx, dialog_context(ctx, record_id, t, item, raw, version=item["version"], general=general))


def _take(request: Request, ctx: PageContext, record_id: int, t: Transition) -> Response:
    form = form_of(request)
    raw = read_form(ctx.entity, form, list(t.requires))
    values = {k: v for k, v in input_values(ctx.entity, raw).items() if k in t.requires}
    comment = str(form.get("comment") or "")
    try:
        version: int | None = int(str(form.get("version", "")))
    except ValueError:
        version = None  # the engine asks for it (422): a form without it never saw the record
    try:
        workflow.transition(ctx.records, ctx.entity.name, record_id, t.name, values, version, ctx.actor,
                            comment=comment.strip() or None)  # fmt: skip
    except RecordError as exc:
        stale = isinstance(exc, StaleVersion)
        message = (
            ctx.gettext("Someone else changed this record after you opened it, so nothing was changed. Reload the record to see the current version, then try again.")
            if stale else ctx.gettext(exc.message)
        )  # fmt: skip
        data = dialog_context(ctx, record_id, t, _item(ctx, record_id), raw, version=version, comment=comment,
                              errors=exc.fields, general=[message], stale=stale)  # fmt: skip
        return _show(request, ctx, data, status=exc.status)
    # Back to the record; to the list when the step took it out of the user's sight (a technician
    # sending a ticket back to the desk's 待受理).
    with ctx.instance.engine.connect() as conn:
        visible = ctx.records.query.one(conn, ctx.entity, ctx.actor, record_id) is not None
    target = f"{ctx.base}/{record_id}" if visible else ctx.base
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target, **VARY})
    return RedirectResponse(target, status_code=303, headers=VARY)
