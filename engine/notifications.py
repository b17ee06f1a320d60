"""The in-app notifications: what the ``in_app`` channel delivers, one row per user and message.

Delivery (engine/delivery.py) adds a row in the same transaction that marks its outbox row sent,
and the row's ``outbox_id`` is unique, so an ``in_app`` message is delivered exactly once, with no
window. A user reads their own rows only: every function here takes the user id and filters on it.

Pages read newest first by keyset (``before`` an id, never OFFSET); the unread count reads the
``(user_id, read_at, id)`` index and stops at ``UNREAD_CAP`` + 1 rows, so it stays one cheap query
on every page however many notifications pile up (shown as "99+").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

UNREAD_CAP = 99
PAGE_SIZE = 30


@dataclass(frozen=True)
class Notification:
    id: int
    app: str
    entity: str
    record_id: int | None
    subject: str | None
    body: str
    created_at: dt.datetime
    read_at: dt.datetime | None

    @property
    def href(self) -> str | None:
        """The record's page, when the notification is about a record."""
        return f"/a/{self.app}/{self.entity}/{self.record_id}" if self.record_id is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "app": self.app, "entity": self.entity, "record_id": self.record_id,
            "subject": self.subject, "body": self.body, "created_at": self.created_at.isoformat(),
            "read": self.read_at is not None, "href": self.href,
        }  # fmt: skip


def add(conn: Connection, table: Table, row: dict[str, Any], user_id: int, now: dt.datetime) -> bool:
    """The notification of an ``in_app`` outbox ``row`` for ``user_id``; False if already there."""
    payload = row["payload"] or {}
    values = {
        "user_id": user_id, "outbox_id": row["id"], "app": row["app"], "entity": row["entity"],
        "record_id": row["record_id"], "subject": payload.get("subject"),
        "body": str(payload.get("body") or payload.get("subject") or ""), "created_at": now,
    }  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=["outbox_id"])
    return conn.execute(statement.returning(table.c.id)).first() is not None


def page(
    conn: Connection, table: Table, user_id: int, before: int | None = None, limit: int = PAGE_SIZE
) -> list[Notification]:
    """The user's notifications, newest first, older than id ``before``; ``limit`` + 1 are read so
    the caller knows whether there is a next page."""
    query = select(table).where(table.c.user_id == user_id)
    if before is not None:
        query = query.where(table.c.id < before)
    rows = conn.execute(query.order_by(table.c.id.desc()).limit(limit + 1)).mappings()
    return [_notification(r) for r in rows]


def unread_count(conn: Connection, table: Table, user_id: int, cap: int = UNREAD_CAP) -> int:
    """How many are unread, counting no further than ``cap`` + 1 (more than ``cap``: "99+")."""
    unread = (
        select(table.c.id)
        .where(table.c.user_id == user_id, table.c.read_at.is_(None))
        .limit(cap + 1)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(unread)).scalar_one())


def mark_read(
    conn: Connection, table: Table, user_id: int, ids: Iterable[int] | None, now: dt.datetime
) -> int:
    """Mark the user's notifications ``ids`` (None: all of them) read; returns how many changed.
    Ids of other users' notifications change nothing."""
    statement = update(table).where(table.c.user_id == user_id, table.c.read_at.is_(None))
    if ids is not None:
        statement = statement.where(table.c.id.in_(list(ids)))
    return conn.execute(statement.values(read_at=now)).rowcount


def get(conn: Connection, table: Table, user_id: int, notification_id: int) -> Notification | None:
    row = (
        conn.execute(select(table).where(table.c.id == notification_id, table.c.user_id == user_id))
        .mappings()
        .first()
    )
    return _notification(row) if row else None


def _notification(m: Any) -> Notification:
    return Notification(
        m["id"], m["app"], m["entity"], m["record_id"], m["subject"], m["body"], m["created_at"], m["read_at"]
    )
