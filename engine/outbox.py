"""The notification outbox: every notification and webhook, queued in the change's transaction.

A rule's ``notify`` and ``webhook`` (and SLA escalations) never send anything themselves: they
write one ``kiln_outbox`` row per (recipient, channel) in the same transaction as the change that
caused them, so a change and its notifications commit together or not at all. Delivery (with
retries and back-off) reads the pending rows after commit; it belongs to a later issue.

The row's ``event_key`` names the event that caused it (e.g. ``repair/ticket/7/v3/rule:夜班直派/2``);
the UNIQUE key (event_key, recipient, channel) makes queuing the same notification twice a no-op,
so a replayed event is never sent twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite

PENDING = "pending"


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
    statement = dialect.insert(outbox).values(**values).on_conflict_do_nothing(
        index_elements=["event_key", "recipient", "channel"]
    )
    return conn.execute(statement).rowcount == 1


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
