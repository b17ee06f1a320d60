"""The notification outbox: every notification and webhook, queued in the change's transaction.

A rule's ``notify`` and ``webhook`` (and SLA escalations) never send anything themselves: they
write one ``kiln_outbox`` row per (recipient, channel) in the same transaction as the change that
caused them, so a change and its notifications commit together or not at all. Delivery (with
retries and back-off, engine/delivery.py) reads the due rows after commit.

A row's ``status``: ``pending`` (queued), ``sending`` (leased by a deliverer), ``retry`` (an
attempt failed; ``next_attempt_at`` says when the next one is due), ``sent`` or ``failed`` (no more
attempts; ``last_error`` says why). ``rows`` and ``retry`` serve ``run.py outbox`` and the page.

The row's ``event_key`` names the event that caused it (e.g. ``repair/ticket/7/v3/rule:夜班直派/2``);
the UNIQUE key (event_key, recipient, channel) makes queuing the same notification twice a no-op,
so a replayed event is never sent twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine import assignment, deferred, settings, surveys
from engine.actors import SYSTEM
from engine.db import Prepared
from engine.expressions.durations import parse_duration
from engine.model import Survey, Template
from engine.values import to_json

if TYPE_CHECKING:
    from engine.rules import Scope

PENDING = "pending"
SENDING = "sending"
RETRY = "retry"
SENT = "sent"
FAILED = "failed"
STATUSES = (PENDING, SENDING, RETRY, SENT, FAILED)
QUEUED = "kiln_outbox_queued"  # set in conn.info when a transaction queued a row


def enqueue(
    conn: Connection, outbox: Table, *, app: str, entity: str, record_id: int | None, event_key: str, channel: str,
    recipient: str, payload: Mapping[str, Any], now: dt.datetime,
) -> bool:  # fmt: skip
    """Queue one message; False when that (event, recipient, channel) is already queued."""
    values = {
        "app": app, "entity": entity, "record_id": record_id, "event_key": event_key[:300], "channel": channel,
        "recipient": recipient, "payload": dict(payload), "status": PENDING, "attempts": 0, "created_at": now,
        "next_attempt_at": now,
    }  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    batch = deferred.of(conn)
    if batch is not None:  # a time-scan batch: one insert at its end (engine/deferred.py)
        batch.insert(outbox, values, ignore_conflicts=True)
        conn.info[QUEUED] = True
        return True
    queued = _insert(outbox, dialect).execute(conn, values).scalar() is not None
    if queued:  # the records service wakes the deliverer once this transaction commits
        conn.info[QUEUED] = True
    return queued


@lru_cache(maxsize=32)  # per outbox table (an instance) and dialect; bounded, as tests open many
def _insert(outbox: Table, dialect: Any) -> Prepared:
    """The queuing INSERT, compiled once (an SLA scan queues thousands in a row)."""
    statement = (
        dialect.insert(outbox)
        .on_conflict_do_nothing(index_elements=["event_key", "recipient", "channel"])
        .returning(outbox.c.id)
    )
    keys = ["app", "entity", "record_id", "event_key", "channel", "recipient", "payload", "status", "attempts", "created_at", "next_attempt_at"]
    return Prepared(statement, keys)


def pending(conn: Connection, outbox: Table, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest pending rows (for the delivery job and ``run.py outbox``)."""
    rows = conn.execute(select(outbox).where(outbox.c.status == PENDING).order_by(outbox.c.id).limit(limit)).mappings()
    return [dict(r) for r in rows]


def for_record(conn: Connection, outbox: Table, app: str, entity: str, record_id: int) -> list[dict[str, Any]]:
    """Every row queued for one record, oldest first."""
    query = (
        select(outbox)
        .where(outbox.c.app == app, outbox.c.entity == entity, outbox.c.record_id == record_id)
        .order_by(outbox.c.id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def rows(
    conn: Connection, outbox: Table, status: str | None = None, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Rows newest first, of one ``status`` or all, with ids below ``before`` (keyset pages)."""
    query = select(outbox)
    if status:
        query = query.where(outbox.c.status == status)
    if before is not None:
        query = query.where(outbox.c.id < before)
    return [dict(r) for r in conn.execute(query.order_by(outbox.c.id.desc()).limit(limit)).mappings()]


def retry(conn: Connection, outbox: Table, row_id: int, now: dt.datetime) -> bool:
    """Queue a ``failed`` (or waiting ``retry``) row again, due now, with its attempts counted
    afresh; False when there is no such row in those states."""
    statement = (
        update(outbox)
        .where(outbox.c.id == row_id, outbox.c.status.in_((FAILED, RETRY)))
        .values(status=PENDING, attempts=0, next_attempt_at=now)
    )
    return conn.execute(statement).rowcount == 1


def recipient_names(conn: Connection, users: Table, rows: list[dict[str, Any]]) -> dict[int, str]:
    """The usernames of the rows' user recipients (a webhook's recipient is its URL), by id."""
    ids = {int(r["recipient"]) for r in rows if str(r["recipient"]).isdigit()}
    if not ids:
        return {}
    query = select(users.c.id, users.c.username).where(users.c.id.in_(ids))
    return {user_id: name for user_id, name in conn.execute(query)}


# -- rule actions ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def _view(scope: Scope, extras: bool = True) -> dict[str, Any]:
    """The record as JSON, as the system sees it (users by name); without ``extras`` (tags,
    flags, SLA clocks: a query each), for filling a message's placeholders."""
    return scope.records.to_api(scope.conn, scope.entity, [scope.record], SYSTEM, extras=extras)[0]


def render(scope: Scope, text: str | None, view: Mapping[str, Any]) -> str | None:
    """``{field}`` and ``{link.field}`` placeholders filled with the record's values now, so the
    message says what was true at the event; unknown ones (``{survey_url}``) stay for delivery."""
    if text is None:
        return None

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in view:
            value = view[name]
        elif "." in name and scope.compiled(name) is not None:
            value = to_json(scope.value(None, name))
        else:
            return match.group(0)
        return "" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    return _PLACEHOLDER.sub(fill, text)


DEFAULT_BODY = {"zh": "{label}：{rule}", "en": "{label}: {rule}"}  # a notify without a template


def action_notify(scope: Scope, args: Mapping[str, Any]) -> bool:
    """One outbox row per recipient and channel; recipients resolved to user ids now, each
    message rendered in its recipient's locale (their own, else the app's), and, when it uses
    ``{survey_url}``, a survey minted per recipient (engine/surveys.py)."""
    records = scope.records
    users = assignment.recipients(scope, args.get("to"))
    channels = list(args.get("channels") or ["in_app"])
    view = _view(scope, extras=False)
    template = next((t for t in records.app.notifications.templates if t.name == args.get("template")), None)
    default = records.app.locale
    varies = _varies(scope, template, args)
    locales = _locales(scope, users) if varies and users else {}
    messages: dict[str, tuple[str | None, str | None]] = {}
    survey = _survey(scope, template, args)
    for user_id in users:
        locale = (locales.get(user_id) or default) if varies else default
        if locale not in messages:
            messages[locale] = _message(scope, template, args, view, locale)
        subject, body = messages[locale]
        payload: dict[str, Any] = {
            "kind": "notify", "rule": scope.rule.name, "template": args.get("template"), "subject": subject,
            "body": body, "locale": locale, "record": {"id": view["id"], "number": view.get("number"), "state": view.get("state")},
        }  # fmt: skip
        if survey is not None:
            payload["survey"] = survey(user_id)
        for channel in channels:
            _enqueue(scope, channel, str(user_id), payload)
    names = records.users.usernames(scope.conn, users)
    comment = f"{', '.join(channels)} -> {', '.join(names.get(u, str(u)) for u in users) or 'nobody'}"
    _audit(scope, "notify", comment + (f" ({args['template']})" if args.get("template") else ""))
    return False


def _message(
    scope: Scope, template: Template | None, args: Mapping[str, Any], view: Mapping[str, Any], locale: str
) -> tuple[str | None, str | None]:
    """Subject and body in ``locale``, placeholders filled."""
    label = f"{scope.entity.label.get(locale)} {view.get('number') or view['id']}"
    if template is not None:
        subject = template.subject.get(locale) if template.subject is not None else label
        body = template.body.get(locale)
    else:
        subject = label
        body = args.get("message") or DEFAULT_BODY.get(locale, DEFAULT_BODY["en"]).format(label=label, rule=scope.rule.name)
    return render(scope, subject, view), render(scope, body, view)


def _locales(scope: Scope, users: list[int]) -> dict[int, str | None]:
    """The recipients' own locales (a time-scan batch reads each user's once)."""
    batch = deferred.of(scope.conn)
    if batch is None:
        return scope.records.users.locales(scope.conn, users)
    missing = [u for u in users if u not in batch.locales]
    if missing:
        batch.locales.update(dict.fromkeys(missing))
        batch.locales.update(scope.records.users.locales(scope.conn, missing))
    return {u: batch.locales.get(u) for u in users}


def _varies(scope: Scope, template: Template | None, args: Mapping[str, Any]) -> bool:
    """Whether the message reads differently in some locale (else no need to read the
    recipients' locales): a template with texts per locale, or the default message."""
    if template is not None:
        return len(template.body.texts) > 1 or (template.subject is not None and len(template.subject.texts) > 1) or (
            template.subject is None and len(scope.entity.label.texts) > 1
        )
    return not args.get("message") or len(scope.entity.label.texts) > 1


def _survey(scope: Scope, template: Template | None, args: Mapping[str, Any]) -> Callable[[int], int] | None:
    """When the message uses ``{survey_url}``: a function minting the survey of a recipient."""
    texts = [*template.body.texts, *(template.subject.texts if template.subject else ())] if template else []
    if not surveys.uses_survey(*(t for _, t in texts), args.get("message")):
        return None
    field = surveys.rating_field(scope.entity, template)
    if field is None:  # `run.py check` reports it; a definition loaded anyway sends no link
        return None
    config = template.survey if template is not None and template.survey is not None else Survey()
    records = scope.records
    secret = settings.session_secret_in(scope.conn)

    def mint(user_id: int) -> int:
        return surveys.mint(
            scope.conn, records.schema.system[surveys.TABLE], secret, app=records.app.name, entity=scope.entity.name,
            record_id=scope.record["id"], user_id=user_id, event_key=scope.event_key, field=field.name,
            comment_field=config.comment, now=scope.now, expires=parse_duration(config.expires) or surveys.EXPIRES,
        )  # fmt: skip

    return mint


def action_webhook(scope: Scope, args: Mapping[str, Any]) -> bool:
    """One outbox row for the URL; ``body`` strings that are field paths become their values."""
    view = _view(scope)
    body = view if args.get("body") is None else _body(scope, args["body"], view)
    payload = {
        "kind": "webhook", "rule": scope.rule.name, "url": str(args["url"]), "method": args.get("method", "POST"),
        "headers": dict(args.get("headers") or {}), "body": body,
    }  # fmt: skip
    _enqueue(scope, "webhook", str(args["url"]), payload)
    _audit(scope, "webhook", f"{payload['method']} {args['url']}")
    return False


def _body(scope: Scope, node: Any, view: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        return {str(k): _body(scope, v, view) for k, v in node.items()}
    if isinstance(node, list):
        return [_body(scope, v, view) for v in node]
    if isinstance(node, str) and _PATH.match(node):
        if node in view:
            return view[node]
        compiled = scope.compiled(node)
        if compiled is not None:
            value = compiled.evaluate(scope.context())
            if compiled.type == "user" and isinstance(value, int):  # users by name, as in the API
                value = scope.records.users.usernames(scope.conn, [value]).get(value)
            return to_json(value)
    return node


_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _enqueue(scope: Scope, channel: str, recipient: str, payload: Mapping[str, Any]) -> None:
    records = scope.records
    enqueue(
        scope.conn, records.schema.system["kiln_outbox"], app=records.app.name, entity=scope.entity.name,
        record_id=scope.record["id"], event_key=scope.event_key, channel=channel, recipient=recipient,
        payload=payload, now=scope.now,
    )  # fmt: skip


def _audit(scope: Scope, action: str, comment: str) -> None:
    scope.audit(action, {}, comment)
