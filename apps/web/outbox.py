"""``/-/outbox``: the notification outbox for instance administrators (SPEC.md section 5).

Rows newest first, a page at a time by keyset (``?before=<id>``), filtered by ``?status=``; each
shows its channel, recipient (a username, or the webhook's URL), status, attempts, next attempt and
last error. ``POST /-/outbox/<id>/retry`` (a form with the CSRF token) queues a ``failed`` or
waiting ``retry`` row again, due now with its attempts counted afresh (engine.outbox.retry); the
next delivery run sends it. Anyone else: 403; anonymous: the login page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from apps.web import i18n, security
from apps.web.pages.context import page, render
from engine import outbox
from engine.errors import NotFound
from engine.instance import Instance

PAGE_SIZE = 50
FLASH = "kiln_flash"  # the admin pages' one-line message after a change


def routes() -> list[BaseRoute]:
    return [
        Route("/-/outbox", outbox_page, name="outbox"),
        Route("/-/outbox/{id:int}/retry", retry, methods=["POST"], name="outbox_retry"),
    ]


def _instance(request: Request) -> Instance:
    return request.app.state.instance


def _forbidden(request: Request) -> Response | None:
    """The admin pages' 403 page for anyone but an instance administrator (anonymous: login)."""
    if security.require_user(request).is_admin:
        return None
    return render(request, "admin/forbidden.html", {"tab": ""}, status=403, locale=i18n.locale_for(request))


@page
def outbox_page(request: Request) -> Response:
    refused = _forbidden(request)
    if refused is not None:
        return refused
    instance = _instance(request)
    status = request.query_params.get("status", "")
    status = status if status in outbox.STATUSES else ""
    raw = request.query_params.get("before", "")
    before = int(raw) if raw.isdigit() else None
    table = instance.schema.system["kiln_outbox"]
    with instance.engine.connect() as conn:
        rows = outbox.rows(conn, table, status or None, before, PAGE_SIZE + 1)
        names = outbox.recipient_names(conn, instance.schema.system["kiln_users"], rows)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    data = {
        "rows": [_view(r, names) for r in rows], "status": status, "statuses": outbox.STATUSES, "before": before,
        "next_before": rows[-1]["id"] if more else None, "tab": "outbox", "flash": request.session.pop(FLASH, None),
        "error": "",
    }  # fmt: skip
    return render(request, "admin/outbox.html", data, locale=i18n.locale_for(request))


@page
def retry(request: Request) -> Response:
    refused = _forbidden(request)
    if refused is not None:
        return refused
    instance = _instance(request)
    _ = i18n.translator(i18n.locale_for(request))
    row_id = request.path_params["id"]
    with instance.engine.begin() as conn:
        if not outbox.retry(conn, instance.schema.system["kiln_outbox"], row_id, dt.datetime.now(dt.UTC)):
            raise NotFound(f"no failed or waiting outbox row {row_id}")
    request.session[FLASH] = _("Message %(id)s queued again.", id=row_id)
    return RedirectResponse("/-/outbox?status=pending", status_code=303)


def _view(row: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    recipient = str(row["recipient"])
    shown = names.get(int(recipient), recipient) if recipient.isdigit() else recipient

    def local(value: dt.datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""

    record = f"/a/{row['app']}/{row['entity']}/{row['record_id']}" if row["record_id"] is not None else None
    return {
        "id": row["id"], "app": row["app"], "entity": row["entity"], "record_id": row["record_id"], "record_href": record,
        "channel": row["channel"], "recipient": shown, "status": row["status"], "attempts": row["attempts"],
        "created": local(row["created_at"]), "next_attempt": local(row["next_attempt_at"]), "sent": local(row["sent_at"]),
        "error": row["last_error"] or "", "subject": (row["payload"] or {}).get("subject") or "",
        "can_retry": row["status"] in (outbox.FAILED, outbox.RETRY),
    }  # fmt: skip
