"""The workspace ``/``: the approvals waiting for the signed-in user (across apps), then per app
their open records: those they created and those assigned to them (the entity's
``assigned_fields``), newest activity first, counts capped."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from apps.web import security
from apps.web.pages import approvals, marks
from apps.web.pages.context import (
    instance_of,
    json_response,
    locale_for,
    page,
    render,
    require_user,
    translator,
    wants_json,
)
from apps.web.pages.fields import title
from engine import permissions
from engine.actors import Actor
from engine.model import App, Entity
from engine.queries import COUNT_CAP

SHOWN = 5  # records per box; the count links to the whole list


def open_states(entity: Entity) -> list[str]:
    return [s.name for s in entity.workflow.states if not s.final] if entity.workflow else []


def boxes(instance: Any, app: App, entity: Entity, actor: Actor, locale: str, gettext: Any) -> list[dict[str, Any]]:
    """"Created by me" and "assigned to me" for one entity, each with a capped count."""
    records = instance.records(app.name)
    base = {"state": open_states(entity)} if entity.workflow else {}
    wanted = [("created_by", gettext("Created by me"))]
    wanted += [(name, gettext("Assigned to me")) for name in entity.assigned_fields if (f := entity.field(name)) and f.type == "user"
               and name not in permissions.hidden_fields(entity, actor)]  # fmt: skip
    out = []
    for name, label in wanted:
        filters = {**base, name: [actor.username]}
        count, more = records.count(entity.name, actor, filters=filters, cap=COUNT_CAP)
        if not count:
            continue
        page_ = records.list(entity.name, actor, filters=filters, sort="-updated_at", limit=SHOWN)
        query = urlencode([(k, v) for k, values in filters.items() for v in values] + [("sort", "-updated_at")])
        out.append({
            "label": label, "count": count, "more": more, "href": f"/a/{app.name}/{entity.name}?{query}",
            "items": [{"title": title(entity, i), "href": f"/a/{app.name}/{entity.name}/{i['id']}", "state": _state(entity, i, locale)}
                      for i in page_.items],
        })  # fmt: skip
    return out


def _state(entity: Entity, item: dict[str, Any], locale: str) -> str:
    state = entity.workflow.state(item.get("state") or "") if entity.workflow else None
    return state.label.get(locale) if state else ""


@page
def home(request: Request) -> Response:
    user = require_user(request)
    instance = instance_of(request)
    locale = locale_for(request, None)
    gettext = translator(locale)
    apps, alerts = [], []
    for name, compiled in sorted(instance.compiled.apps.items()):
        app = compiled.app
        actor = security.actor(request, name)
        if actor is None or not (actor.roles or actor.is_admin):
            continue
        app_locale = locale_for(request, app)
        entities = []
        for entity in app.entities:
            if not (actor.is_admin or permissions.permissions_of(entity, actor)):
                continue
            entities.append({
                "name": entity.name, "label": entity.label.get(app_locale), "href": f"/a/{name}/{entity.name}",
                "new": f"/a/{name}/{entity.name}/new" if permissions.can_create(entity, actor) else None,
                "boxes": boxes(instance, app, entity, actor, app_locale, gettext),
            })  # fmt: skip
            if red := marks.alert(instance, app, entity, actor, entity.label.get(app_locale), gettext):
                alerts.append(red)  # the banner: records this user sees flagged red (S18)
        apps.append({"name": name, "label": app.label.get(app_locale), "entities": entities})
    inbox = approvals.inbox(request, instance, locale)
    if wants_json(request, False):
        waiting = [{k: v for k, v in i.items() if k != "state_look"} for i in inbox]
        return json_response({"user": user.username, "apps": apps, "approvals": waiting, "alerts": alerts})
    data = {"apps": apps, "cap": COUNT_CAP, "user": user, "inbox": inbox, "alerts": alerts}
    return render(request, "pages/workspace.html", data, locale=locale, gettext=gettext)
