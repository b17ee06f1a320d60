"""Approvals on the pages: a record's approval steps (who, what they decided, their comments)
with Approve / Reject for an approver who has yet to decide, posted to
``/a/<app>/<entity>/<id>/approvals/<name>`` (:func:`engine.approvals.decide`); and the
workspace's "Approvals waiting for me" (:func:`engine.approvals.inbox`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from apps.web import security
from apps.web.pages.context import PageContext, entity_context, form_of, is_htmx, page, record_of, render
from apps.web.pages.states import look
from engine import approvals as engine_approvals
from engine.actors import Actor
from engine.errors import NotFound, RecordError
from engine.instance import Instance

VARY = {"Vary": "HX-Request, Accept"}
STATUS_COLORS = {"pending": "yellow", "approved": "green", "rejected": "red", "withdrawn": "gray"}


def _local(ctx: PageContext, value: str | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(ctx.records.timezone).strftime("%Y-%m-%d %H:%M")


def _label(entity: Any, name: str, locale: str) -> str:
    """An approval's label in the page's language (the API gives it in the app's)."""
    found = entity.workflow.approval(name) if entity.workflow else None
    return found.shown(locale) if found is not None else name


def steps_view(ctx: PageContext, record_id: int) -> list[dict[str, Any]]:
    """The record's steps, oldest first, each saying whether the user may decide on it now."""
    out = []
    steps = engine_approvals.steps(ctx.records, ctx.entity.name, record_id, ctx.actor)
    with ctx.instance.engine.connect() as conn:
        shown = ctx.records.users.display_names(conn, [a["user"] for step in steps for a in step["approvers"] if a["user"]])
    for step in steps:
        mine = step["status"] == "pending" and any(
            a["user"] == ctx.actor.username and a["decision"] is None for a in step["approvers"]
        )
        approvers = [{**a, "at_local": _local(ctx, a["decided_at"]), "shown": shown.get(a["user"], a["user"])} for a in step["approvers"]]
        out.append({
            **step, "label": _label(ctx.entity, step["name"], ctx.locale), "approvers": approvers, "mine": mine,
            "opened_local": _local(ctx, step["opened_at"]),
            "status_color": STATUS_COLORS.get(step["status"], "gray"),
            "action": f"{ctx.base}/{record_id}/approvals/{step['name']}",
        })  # fmt: skip
    return out


@page
def decide(request: Request) -> Response:
    """Approve or reject (the pressed button's ``decision``), with the comment box's text."""
    ctx = entity_context(request)
    record_id, name = record_of(request), request.path_params["name"]
    form = form_of(request)
    comment = str(form.get("comment") or "").strip() or None
    try:
        engine_approvals.decide(ctx.records, ctx.entity.name, record_id, name, str(form.get("decision", "")), comment, ctx.actor)
    except RecordError as exc:
        if not is_htmx(request):
            raise
        try:
            steps = steps_view(ctx, record_id)
        except NotFound:
            steps = []
        data = {"ctx": ctx, "steps": steps, "approval_error": ctx.gettext(exc.message), "error_step": name,
                "comment": comment or ""}  # fmt: skip
        return render(request, "pages/_approvals.html", data, status=exc.status, locale=ctx.locale, gettext=ctx.gettext)
    target = f"{ctx.base}/{record_id}"
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target, **VARY})
    return RedirectResponse(target, status_code=303, headers=VARY)


def inbox(request: Request, instance: Instance, locale: str) -> list[dict[str, Any]]:
    """The pending steps the signed-in user has to decide on, across the apps they may enter."""
    by_app: dict[str, Any] = {}
    actor: Actor | None = None
    for name in sorted(instance.compiled.apps):
        found = security.actor(request, name)
        if found is not None and found.id is not None:
            by_app[name], actor = instance.records(name), found
    if actor is None:
        return []
    out = []
    for item in engine_approvals.inbox(by_app, actor):
        app = instance.compiled.apps[item["app"]].app
        entity = app.entity(item["entity"])
        if entity is None:
            continue
        state = look(entity, item["state"], locale)
        opened = dt.datetime.fromisoformat(item["opened_at"]).astimezone(by_app[item["app"]].timezone).strftime("%Y-%m-%d %H:%M")
        out.append({
            **item, "label": _label(entity, item["approval"], locale),
            "href": f"/a/{item['app']}/{item['entity']}/{item['record_id']}", "entity_label": entity.label.get(locale),
            "title": item["number"] or f"#{item['record_id']}", "state_look": state, "opened_local": opened,
        })  # fmt: skip
    return out
