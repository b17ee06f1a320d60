"""The record page ``/a/<app>/<entity>/<id>``: every visible field in the form's sections, the
attachments, the timeline of its audit trail, the actions the user may take (edit, and the
workflow's transitions: :mod:`apps.web.pages.transitions`), the state as a coloured badge and the
approval steps (:mod:`apps.web.pages.approvals`). JSON twin: ``.json`` or Accept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from apps.web.pages import approvals, transitions
from apps.web.pages import layout as layouts
from apps.web.pages.context import (
    PageContext,
    entity_context,
    json_response,
    page,
    record_of,
    render,
    strip_json,
    wants_json,
)
from apps.web.pages.fields import display_text, file_rows, listed, title
from apps.web.pages.lists import field_view, local_time, state_label
from apps.web.pages.states import look
from engine import approvals as engine_approvals
from engine import exports, workflow
from engine.errors import NotFound


def _record(ctx: PageContext, record_id: int) -> tuple[dict[str, Any], dict[str, Any], bool]:
    records = ctx.records
    with ctx.instance.engine.connect() as conn:
        stored = records.query.one(conn, ctx.entity, ctx.actor, record_id)
        if stored is None:
            raise NotFound(ctx.gettext("This record does not exist or is not visible to you."))
        item = records.to_api(conn, ctx.entity, [stored], ctx.actor)[0]
        may_update = records.query.may_update(conn, ctx.entity, ctx.actor, record_id)
    return item, stored, may_update


def timeline(
    ctx: PageContext, entries: list[dict[str, Any]], titles: dict[str, dict[Any, str]], files: Mapping[str, dict[str, Any]] | None = None,
    names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Audit entries as a person reads them: field labels, option labels, file names, people's
    display names (``names``), local times, and a link to the record a rule created."""
    tz = ctx.records.timezone
    out = []
    for entry in reversed(entries):  # newest first
        actor = ctx.gettext("system") if entry["actor"] == "system" else (names or {}).get(entry["actor"], entry["actor"])
        entry = {**entry, "actor": actor}  # a rule, a job: the system
        at = dt.datetime.fromisoformat(entry["at"]).astimezone(tz).strftime("%Y-%m-%d %H:%M")
        kind, _, made = entry["action"].partition(":")
        if kind == "create" and made and (target := ctx.app.entity(made)) is not None:  # a rule's create action
            created = (entry["changes"].get("id") or [None, None])[1]
            link = {"href": f"/a/{ctx.app.name}/{made}/{created}", "text": f"{target.label.get(ctx.locale)} #{created}"}
            out.append({**entry, "at_local": at, "changes": [], "link": link if created else None,
                        "action_label": ctx.gettext("created a record")})  # fmt: skip
            continue
        changes = []
        for name, (before, after) in entry["changes"].items():
            f = ctx.entity.field(name)
            if f is not None and f.type in ("file", "image") and files:
                label, old, new = f.label.get(ctx.locale), _file_names(before, files), _file_names(after, files)
            elif name == "state":
                label, old, new = ctx.gettext("State"), state_label(ctx, before), state_label(ctx, after)
            elif f is None and entry["action"].startswith("approval:") and name in ("approval", "decision"):
                label = ctx.gettext("Approval") if name == "approval" else ctx.gettext("Decision")
                old, new = _decision_word(ctx, before), _decision_word(ctx, after)
            elif f is None and name == "flags":  # a rule's mark: the flag's colour
                label, old, new = ctx.gettext("Flagged"), _plain(before), _plain(after)
            elif f is None:
                label, old, new = name, _plain(before), _plain(after)
            else:
                label = f.label.get(ctx.locale)
                old, new = display_text(f, before, ctx.locale, tz, titles), display_text(f, after, ctx.locale, tz, titles)
            changes.append({"label": label, "before": old, "after": new})
        out.append({**entry, "at_local": at, "changes": changes, "link": None, "action_label": _action_label(ctx, entry["action"])})
    return out


def people(ctx: PageContext, item: Mapping[str, Any], history: list[dict[str, Any]]) -> dict[str, str]:
    """The display names of the users the record's user fields, its history's changes and its
    history's actors name, by username."""
    user_fields = [f.name for f in ctx.entity.fields if f.type == "user"]
    named = {v for name in user_fields for v in listed(item.get(name))}
    named |= {v for e in history for name, pair in e["changes"].items() if name in user_fields for side in pair for v in listed(side)}
    named |= {e["actor"] for e in history} | set(listed(item.get("created_by")))
    with ctx.instance.engine.connect() as conn:
        return ctx.records.users.display_names(conn, named)


def _action_label(ctx: PageContext, action: str) -> str:
    """``transition:dispatch`` as the transition's label, ``approval:x`` as the approval's."""
    kind, _, name = action.partition(":")
    w = ctx.entity.workflow
    if kind == "transition" and w and (t := w.transition(name)):
        return t.label.get(ctx.locale)
    if kind == "approval" and w and (a := w.approval(name)):
        return a.shown(ctx.locale)
    words = {
        "create": ctx.gettext("created"), "update": ctx.gettext("changed"), "notify": ctx.gettext("notified"),
        "webhook": ctx.gettext("called a webhook"), "mark": ctx.gettext("flagged"), "unmark": ctx.gettext("unflagged"),
        "add_tag": ctx.gettext("tagged"), "remove_tag": ctx.gettext("untagged"),
    }  # fmt: skip
    return words.get(action, action)


def _file_names(value: Any, files: Mapping[str, dict[str, Any]]) -> str:
    """Stored file ids as their file names (an id whose file is gone stays as it is)."""
    return ", ".join(files[i]["filename"] if i in files else i for i in listed(value))


def _decision_word(ctx: PageContext, value: Any) -> str:
    words = {"pending": ctx.gettext("Waiting"), "approved": ctx.gettext("Approved"), "rejected": ctx.gettext("Rejected"),
             "approve": ctx.gettext("Approved"), "reject": ctx.gettext("Rejected"), "withdrawn": ctx.gettext("Withdrawn")}  # fmt: skip
    return words.get(value, _plain(value)) if isinstance(value, str) or value is None else _plain(value)


def _plain(value: Any) -> str:
    return "" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@page
def detail(request: Request) -> Response:
    raw_id, as_json = strip_json(request.path_params["id"])
    ctx = entity_context(request)
    record_id = record_of(request, raw_id)
    item, stored, may_update = _record(ctx, record_id)
    history = ctx.records.history(ctx.entity.name, record_id, ctx.actor)
    if wants_json(request, as_json):
        data = {"record": item, "history": history, "may_update": may_update}
        if ctx.entity.workflow is not None:
            data["transitions"] = [a.as_json(ctx.locale) for a in workflow.available(ctx.records, ctx.entity.name, record_id, ctx.actor)]
            data["approvals"] = engine_approvals.steps(ctx.records, ctx.entity.name, record_id, ctx.actor)
        return json_response(data)
    history_links = [{name: v for name, pair in e["changes"].items() for v in pair if isinstance(v, int)} for e in history]
    titles = exports.link_titles(ctx.records, ctx.entity, [item, *history_links], ctx.actor)
    names = people(ctx, item, history)
    titles.update({f.name: names for f in ctx.entity.fields if f.type == "user"})  # a user's title: their display name
    layout = layouts.evaluate(ctx.records, ctx.entity, stored, None, ctx.actor, ctx.locale, creating=False)
    file_fields = [f for f in ctx.entity.active_fields if f.type in ("file", "image") and f.name in item]
    file_ids = [v for f in file_fields for v in (item[f.name] if isinstance(item[f.name], list) else [item[f.name]]) if v]
    # and the files the history names (a report replaced since), shown by their names
    file_names = {f.name for f in file_fields}
    file_ids += [v for e in history for name, pair in e["changes"].items() if name in file_names for side in pair for v in listed(side)]
    files = file_rows(ctx.instance, list(dict.fromkeys(file_ids)))
    sections = [
        {"title": s.title, "fields": [field_view(ctx, fs.field, item.get(fs.field.name), titles=titles, files=files)
                                      for fs in s.fields if fs.field.name in item and fs.field.type not in ("file", "image")]}
        for s in layout.sections
    ]  # fmt: skip
    attachments = [field_view(ctx, f, item[f.name], files=files) for f in file_fields if item[f.name]]
    actions = [{"kind": "edit", "label": ctx.gettext("Edit"), "href": f"{ctx.base}/{record_id}/edit"}] if may_update else []
    has_workflow = ctx.entity.workflow is not None
    data = {
        "ctx": ctx, "item": item, "title": title(ctx.entity, item), "state_label": state_label(ctx, item.get("state")),
        "state": look(ctx.entity, item.get("state"), ctx.locale) if has_workflow else None,
        "transitions": transitions.buttons(ctx, record_id) if has_workflow else [],
        "steps": approvals.steps_view(ctx, record_id) if has_workflow else [],
        "sections": [s for s in sections if s["fields"]], "attachments": attachments, "actions": actions,
        "timeline": timeline(ctx, history, titles, files, names),
        "created_by": names.get(item["created_by"], item["created_by"]) if item.get("created_by") else None,
        "created_at": local_time(ctx, item["created_at"]), "updated_at": local_time(ctx, item["updated_at"]),
    }  # fmt: skip
    return render(request, "pages/detail.html", data, locale=ctx.locale, gettext=ctx.gettext)
