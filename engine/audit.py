"""The audit trail: one entry per change, with who, when, the before/after values and the rule.

Entries are written by the services in the same transaction as the change they record, so a
change and its entry commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, insert, select

from engine import deferred
from engine.actors import Actor
from engine.db import Prepared
from engine.values import to_json


def diff(before: Mapping[str, Any], after: Mapping[str, Any], fields: list[str]) -> dict[str, list[Any]]:
    """``{field: [before, after]}`` for the fields whose value changed, as JSON."""
    changes = {}
    for name in fields:
        old, new = _none_if_empty(before.get(name)), _none_if_empty(after.get(name))
        if old != new:
            changes[name] = [to_json(old), to_json(new)]
    return changes


def _none_if_empty(value: Any) -> Any:
    """An empty multi-valued field and an unset one read the same in the trail."""
    return None if value == [] else value


def record_change(
    conn: Connection, audit: Table, *, app: str, entity: str, record_id: int, action: str, actor: Actor,
    at: dt.datetime, changes: Mapping[str, Any], comment: str | None = None,
) -> None:  # fmt: skip
    write(conn, audit, [entry(app=app, entity=entity, record_id=record_id, action=action, actor=actor, at=at, changes=changes, comment=comment)])


def entry(
    *, app: str, entity: str, record_id: int | None, action: str, actor: Actor, at: dt.datetime, changes: Mapping[str, Any],
    comment: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One entry as a row of ``kiln_audit`` (to write now or with others, :func:`write`); a
    record being created has no id yet (None: filled in when it is stored)."""
    return {
        "app": app, "entity": entity, "record_id": record_id, "action": action, "actor_id": actor.id,
        "actor": actor.username, "at": at, "changes": dict(changes), "rule": actor.rule, "comment": comment,
    }  # fmt: skip


def write(conn: Connection, audit: Table, entries: list[dict[str, Any]]) -> None:
    """Write entries in the order given: one statement for all of them (the rules of one event
    hold theirs until they write the record, engine/rules.py)."""
    batch = deferred.of(conn)
    if batch is not None:  # a time-scan batch: one insert at its end (engine/deferred.py)
        for row in entries:
            batch.insert(audit, row)
    elif len(entries) == 1:
        _insert(audit).execute(conn, entries[0])
    else:
        _insert(audit).execute_many(conn, entries)


@functools.lru_cache(maxsize=4)
def _insert(audit: Table) -> Prepared:
    return Prepared(insert(audit), ["app", "entity", "record_id", "action", "actor_id", "actor", "at", "changes", "rule", "comment"])


def history(conn: Connection, audit: Table, app: str, entity: str, record_id: int) -> list[dict[str, Any]]:
    """The entries of one record, oldest first (the index on (app, entity, record_id, id))."""
    rows = conn.execute(
        select(audit)
        .where(audit.c.app == app, audit.c.entity == entity, audit.c.record_id == record_id)
        .order_by(audit.c.id)
    ).mappings()
    return [
        {
            "id": row["id"],
            "action": row["action"],
            "actor": row["actor"],
            "at": row["at"].isoformat(),
            "changes": row["changes"],
            "rule": row["rule"],
            "comment": row["comment"],
        }
        for row in rows
    ]
