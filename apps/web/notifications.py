"""The user's in-app notifications: ``/-/notifications`` and the unread count in the page header.

``GET /-/notifications`` lists the signed-in user's notifications newest first, a page at a time
by keyset (``?before=<id>``; the ``.json`` twin or ``Accept: application/json`` gives
``{"items", "next_before", "unread"}``). ``POST /-/notifications/<id>/read`` and
``POST /-/notifications/read`` (all) mark them read: an HTMX request gets the changed item (or
the list) back with the header's count swapped out of band; a plain form post is redirected back
to the list. Both post with the CSRF token. A user only ever reads and marks their own rows
(engine/notifications.py filters on the user id): another user's id is a 404.

The header's count (:func:`unread_count`, a template global) is one capped COUNT on the
``(user_id, read_at, id)`` index per page, shown as "99+" past 99.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from apps.web import i18n, security
from apps.web.pages.context import form_of, is_htmx, json_response, page, render, wants_json
from engine import notifications
from engine.errors import NotFound
from engine.instance import Instance

VARY = {"Vary": "HX-Request, Accept"}


def routes() -> list[BaseRoute]:
    return [
        Route("/-/notifications", notifications_page, name="notifications"),
        Route("/-/notifications.json", notifications_page, name="notifications_json"),
        Route("/-/notifications/read", read_all, methods=["POST"], name="notifications_read_all"),
        Route("/-/notifications/{id:int}/read", read_one, methods=["POST"], name="notification_read"),
    ]


def _instance(request: HTTPConnection) -> Instance:
    return request.app.state.instance


def _table(request: HTTPConnection) -> Any:
    return _instance(request).schema.system["kiln_notifications"]


def unread_count(request: HTTPConnection) -> int | None:
    """The signed-in user's unread count, at most ``UNREAD_CAP`` + 1 (None when anonymous); read
    once per request."""
    user = security.current_user(request)
    if user is None:
        return None
    state = request.scope.setdefault("state", {})
    if "kiln_unread" not in state:
        with _instance(request).engine.connect() as conn:
            state["kiln_unread"] = notifications.unread_count(conn, _table(request), user.id)
    return state["kiln_unread"]


_URL = re.compile(r"https?://[^\s<>\"'，。；、！？（）【】「」]+")


def linkify(text: str | None) -> Markup:
    """``text`` escaped, with its web addresses as links (a survey's link in a message): also
    where Chinese punctuation, not a space, comes before or after the address."""
    out, last = [], 0
    for match in _URL.finditer(text or ""):
        url = match.group(0).rstrip(".,;:!?)")
        out += [escape(text[last : match.start()]), Markup('<a href="{0}" rel="noopener">{0}</a>').format(url)]
        last = match.start() + len(url)
    out.append(escape((text or "")[last:]))
    return Markup("").join(out)


def _listing(request: Request) -> Response:
    user = security.require_user(request)
    raw = request.query_params.get("before", "")
    before = int(raw) if raw.isdigit() else None
    with _instance(request).engine.connect() as conn:
        rows = notifications.page(conn, _table(request), user.id, before)
        unread = notifications.unread_count(conn, _table(request), user.id)
    more = len(rows) > notifications.PAGE_SIZE
    rows = rows[: notifications.PAGE_SIZE]
    next_before = rows[-1].id if more else None
    if wants_json(request, request.url.path.endswith(".json")):
        return json_response(
            {"items": [n.as_json() for n in rows], "next_before": next_before, "unread": unread}
        )
    locale = i18n.locale_for(request)
    data = {
        "items": [_view(request, n) for n in rows], "before": before, "next_before": next_before, "unread": unread,
        "oob": is_htmx(request),
    }  # fmt: skip
    return render(
        request, "notifications/list.html", data, fragment="notifications/_list.html", locale=locale
    )


notifications_page = page(_listing)


@page
def read_one(request: Request) -> Response:
    user = security.require_user(request)
    table, notification_id = _table(request), request.path_params["id"]
    now = dt.datetime.now(dt.UTC)
    with _instance(request).engine.begin() as conn:
        if notifications.get(conn, table, user.id, notification_id) is None:
            raise NotFound("no such notification")
        notifications.mark_read(conn, table, user.id, [notification_id], now)
        found = notifications.get(conn, table, user.id, notification_id)
        unread = notifications.unread_count(conn, table, user.id)
    if not is_htmx(request):
        return RedirectResponse(_back(request), status_code=303, headers=VARY)
    data = {"n": _view(request, found), "unread": unread, "oob": True}
    return render(request, "notifications/_item.html", data, locale=i18n.locale_for(request))


@page
def read_all(request: Request) -> Response:
    user = security.require_user(request)
    table = _table(request)
    with _instance(request).engine.begin() as conn:
        notifications.mark_read(conn, table, user.id, None, dt.datetime.now(dt.UTC))
    if not is_htmx(request):
        return RedirectResponse(_back(request), status_code=303, headers=VARY)
    return _listing(request)


def _back(request: Request) -> str:
    return security.safe_next(str(form_of(request).get("next", "")) or None, "/-/notifications")


def _view(request: HTTPConnection, n: notifications.Notification) -> dict[str, Any]:
    """What the template shows of one notification: times in its app's timezone."""
    compiled = _instance(request).compiled.apps.get(n.app)
    zone = ZoneInfo(compiled.app.timezone) if compiled else dt.UTC
    app_label = compiled.app.label.get(i18n.locale_for(request)) if compiled else n.app
    return {
        "id": n.id, "subject": n.subject or "", "body": n.body, "href": n.href, "read": n.read_at is not None,
        "app_label": app_label, "at": n.created_at.isoformat(),
        "at_local": n.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
