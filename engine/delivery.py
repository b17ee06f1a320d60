"""Delivering the outbox: due rows claimed under a lease, sent after commit, retried with back-off.

``deliver_due(instance, now)`` is the whole of it, called by the jobs after a commit that queued
rows and by the every-minute scan, and by ``run.py outbox --deliver``:

1. **Claim.** One short write transaction takes up to ``limit`` due rows (``pending`` or ``retry``
   with ``next_attempt_at <= now``, and ``sending`` rows whose lease ran out) and sets them
   ``sending``, ``attempts + 1``, ``next_attempt_at = now + lease``. On PostgreSQL the rows are
   chosen ``FOR UPDATE SKIP LOCKED``, so concurrent deliverers take different rows without
   waiting; on SQLite the claim is one ``UPDATE ... WHERE id IN (SELECT ...)`` in a
   ``BEGIN IMMEDIATE`` transaction, so claims run one after the other. Either way no two
   deliverers hold the same row.
2. **Send**, outside any transaction, through the row's channel (engine/channels/), each message
   carrying the row's idempotency key (:func:`idempotency_key`).
3. **Mark**, right after each send, in its own short transaction: ``sent`` (``in_app``: the
   notification row is written in this same transaction, so it is exactly once with no window);
   on a failure ``retry`` at ``now + backoff(attempts)``, or ``failed`` after ``max_attempts`` or
   on a permanent error. A failure only changes the row while this deliverer still holds it
   (status ``sending`` and the attempt number it claimed: a fencing token); ``sent`` always wins.

A deliverer killed between 2 and 3 leaves its rows ``sending``; when the lease runs out the next
claim takes them again and they are sent again, with the same idempotency key. So delivery is at
least once, and exactly once for a receiver that drops a key it has seen: see
docs/notifications.md for the window. A batch stops sending once half its lease has passed and
gives the rest back, so a slow receiver cannot make a live deliverer's lease run out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Table, case, select, update

from engine import notifications, settings, surveys
from engine.channels import DeliveryError, Message, Permanent, Recipient, Sender, Session, email, http, robots
from engine.db import write
from engine.instance import Instance
from engine.outbox import FAILED, PENDING, RETRY, SENDING, SENT

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=5)
BACKOFF = dt.timedelta(seconds=30)  # after the first failed attempt; doubled after each next one
BACKOFF_CAP = dt.timedelta(hours=2)
MAX_ATTEMPTS = 10  # 30 s, 1 min, 2 min ... about 4 hours and a quarter from first to last attempt
LIMIT = 50

SENDERS: dict[str, Sender] = {
    "email": email.send, "sms": http.send_sms, "webhook": http.send_webhook, "wecom": robots.send_wecom,
    "dingtalk": robots.send_dingtalk,
}  # fmt: skip
IN_APP = "in_app"


@dataclass
class Stats:
    """What one ``deliver_due`` did: rows claimed, and how each ended this time."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0  # given back unsent when half the lease had passed

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def idempotency_key(row: Mapping[str, Any]) -> str:
    """The key every copy of this row's message carries: the row id and a digest of its unique
    (event, recipient, channel), so it is the same on every attempt and differs between rows and
    between instances that happen to share a row id."""
    digest = hashlib.sha256(
        f"{row['event_key']}\x1f{row['recipient']}\x1f{row['channel']}".encode()
    ).hexdigest()
    return f"kiln-{row['id']}-{digest[:20]}"


def backoff(attempts: int) -> dt.timedelta:
    """The wait after failed attempt number ``attempts`` (1, 2, ...): 30 s doubling, at most 2 h."""
    return min(BACKOFF * 2 ** max(attempts - 1, 0), BACKOFF_CAP)


def deliver_due(
    instance: Instance, now: dt.datetime, limit: int = LIMIT, *, lease: dt.timedelta = LEASE,
    max_attempts: int = MAX_ATTEMPTS,
) -> Stats:  # fmt: skip
    """Claim up to ``limit`` due rows at ``now``, send them, mark each; returns what happened."""
    outbox = instance.schema.system["kiln_outbox"]
    stats = Stats()
    rows = claim(instance, outbox, now, limit, lease)
    stats.claimed = len(rows)
    if not rows:
        return stats
    users = _recipients(instance, rows)
    secret = settings.session_secret(instance.engine) if any((r["payload"] or {}).get("survey") for r in rows) else ""
    deadline = time.monotonic() + lease.total_seconds() / 2
    with Session() as session:
        for index, row in enumerate(rows):
            if time.monotonic() > deadline:
                stats.released = release(instance, outbox, rows[index:], now)
                break
            outcome = _deliver(instance, session, row, users, now, max_attempts, secret)
            setattr(stats, outcome, getattr(stats, outcome) + 1)
    return stats


def claim(
    instance: Instance, outbox: Table, now: dt.datetime, limit: int, lease: dt.timedelta
) -> list[dict[str, Any]]:
    """Take up to ``limit`` due rows for this deliverer (see the module's docstring)."""
    c = outbox.c
    due = (
        select(c.id)
        .where(c.status.in_((PENDING, RETRY, SENDING)), c.next_attempt_at <= now)
        .order_by(c.next_attempt_at, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises the write instead
    )
    statement = (
        update(outbox)
        .where(c.id.in_(due.scalar_subquery()))
        .values(status=SENDING, attempts=c.attempts + 1, next_attempt_at=now + lease)
        .returning(*outbox.c)
    )
    with write(instance.engine) as conn:
        rows = [dict(r) for r in conn.execute(statement).mappings()]
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]))


def release(instance: Instance, outbox: Table, rows: Iterable[Mapping[str, Any]], now: dt.datetime) -> int:
    """Give claimed rows back unsent: due now, their claim's attempt not counted."""
    c = outbox.c
    released = 0
    with write(instance.engine) as conn:
        for row in rows:
            statement = (
                update(outbox)
                .where(c.id == row["id"], c.status == SENDING, c.attempts == row["attempts"])
                .values(
                    status=case((c.attempts > 1, RETRY), else_=PENDING),
                    attempts=c.attempts - 1,
                    next_attempt_at=now,
                )
            )
            released += conn.execute(statement).rowcount
    return released


def _deliver(
    instance: Instance, session: Session, row: dict[str, Any], users: Mapping[int, Any], now: dt.datetime,
    max_attempts: int, secret: str = "",
) -> str:  # fmt: skip
    """Send one claimed row and mark it; returns the Stats field it counts in."""
    outbox = instance.schema.system["kiln_outbox"]
    try:
        message = _message(instance, row, users, secret)
        if row["channel"] == IN_APP:
            user = message.need_user()
            with write(instance.engine) as conn:
                if mark_sent(conn, outbox, row, now):
                    filled = {**row, "payload": message.payload}
                    notifications.add(conn, instance.schema.system["kiln_notifications"], filled, user.id, now)
            return "sent"
        SENDERS[row["channel"]](message, session)
    except Permanent as exc:
        return _failed(instance, outbox, row, str(exc), now, final=True)
    except DeliveryError as exc:
        return _failed(instance, outbox, row, str(exc), now, final=row["attempts"] >= max_attempts)
    except Exception as exc:  # a bug in a channel must not leave the rest of the batch leased
        log.exception("outbox row %s: unexpected error", row["id"])
        error = f"{exc.__class__.__name__}: {exc}"
        return _failed(instance, outbox, row, error, now, final=row["attempts"] >= max_attempts)
    with write(instance.engine) as conn:
        mark_sent(conn, outbox, row, now)
    return "sent"


def mark_sent(conn: Connection, outbox: Table, row: Mapping[str, Any], now: dt.datetime) -> bool:
    """Mark a row sent (whoever holds it: it went out); False when it was already."""
    statement = update(outbox).where(outbox.c.id == row["id"], outbox.c.status != SENT)
    return (
        conn.execute(
            statement.values(status=SENT, sent_at=now, last_error=None, next_attempt_at=None)
        ).rowcount
        == 1
    )


def _failed(
    instance: Instance, outbox: Table, row: Mapping[str, Any], error: str, now: dt.datetime, final: bool
) -> str:
    c = outbox.c
    values: dict[str, Any] = {"last_error": error[:2000]}
    if final:
        values.update(status=FAILED, next_attempt_at=None)
    else:
        values.update(status=RETRY, next_attempt_at=now + backoff(row["attempts"]))
    statement = update(outbox).where(c.id == row["id"], c.status == SENDING, c.attempts == row["attempts"])
    with write(instance.engine) as conn:
        conn.execute(statement.values(**values))
    return "failed" if final else "retried"


def _message(instance: Instance, row: Mapping[str, Any], users: Mapping[int, Any], secret: str = "") -> Message:
    """The row as a Message: its app's channel configuration and its recipient, the link of its
    survey filled in (engine/surveys.py); raises Permanent for what no retry can mend (an unknown
    app, channel or user, a deactivated user, a channel the app does not configure)."""
    payload = row["payload"] or {}
    if payload.get("survey") is not None:
        payload = surveys.fill(payload, secret or settings.session_secret(instance.engine))
    channel = row["channel"]
    if channel != IN_APP and channel not in SENDERS:
        raise Permanent(f"unknown channel '{channel}' (known: {', '.join([IN_APP, *SENDERS])})")
    compiled = instance.compiled.apps.get(row["app"])
    if compiled is None:
        raise Permanent(f"app '{row['app']}' is not installed any more")
    configured = dict(compiled.app.notifications.channels)
    action_webhook = payload.get("kind") == "webhook"
    if channel != IN_APP and not action_webhook and channel not in configured:
        raise Permanent(
            f"channel '{channel}' is not configured under notifications.channels of app {row['app']}"
        )
    user = None
    if not action_webhook:
        found = users.get(int(row["recipient"])) if str(row["recipient"]).isdigit() else None
        if found is None:
            raise Permanent(f"no user with id {row['recipient']}")
        if not found.is_active:
            raise Permanent(f"user {found.username} is deactivated")
        user = Recipient(found.id, found.username, found.display_name, found.email, found.phone, found.locale)
    return Message(
        id=row["id"], key=idempotency_key(row), app=row["app"], entity=row["entity"], record_id=row["record_id"],
        event_key=row["event_key"], channel=channel, payload=payload, config=configured.get(channel) or {}, user=user,
    )  # fmt: skip


def _recipients(instance: Instance, rows: Iterable[Mapping[str, Any]]) -> dict[int, Any]:
    """The users the rows go to, by id, in one query."""
    ids = {int(r["recipient"]) for r in rows if str(r["recipient"]).isdigit()}
    if not ids:
        return {}
    users = instance.schema.system["kiln_users"]
    with instance.engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(users).where(users.c.id.in_(ids)))}
