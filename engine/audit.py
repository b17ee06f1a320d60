"""The audit trail: one entry per change, with who, when, the before/after values and the rule.

Entries are written by the services in the same transaction as the change they record, so a
change and its entry commit together or not at all. The entries that rules make to one record in
answer to one event (five rules tagging and routing a new ticket), after the record's creation
when they answer it, are stored as one row, action ``rules``, whose ``changes`` list them in
order; :func:`history` hands them out one by one again, each with its own action, actor and rule.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, select

from engine import deferred
from engine.actors import Actor
from engine.db import PreparedRows
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
    insert = to_insert(conn, audit, entries)
    if insert is not None:
        insert[0].execute(conn, insert[1])


def to_insert(conn: Connection, audit: Table, entries: list[dict[str, Any]]) -> tuple[PreparedRows, list[dict[str, Any]]] | None:
    """The statement and rows that write ``entries``, for a caller that writes them with other
    rows (engine/db.py: insert_rows); None when a time-scan batch took them, to insert at its end
    (engine/deferred.py)."""
    batch = deferred.of(conn)
    if batch is None:
        return _insert(audit), _rows(entries)
    for row in entries:
        batch.insert(audit, row)
    return None


RULES = "rules"  # the action of a row holding an event's entries
_EVENT = ("app", "entity", "record_id", "at")  # what the entries of one row share


def _rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that store ``entries``. The entries of one event on one record (the same record,
    the same time) share one row: the rules' entries, after the creation that fired them when
    they came with it. Any other entry is a row of its own. A row per entry cost each rule's
    action a row, an index entry, its parameters and a JSON text of its own: the most of what a
    ticket's five routing rules added to its creation."""
    rows: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    event = None
    for entry in entries:
        key = (entry["app"], entry["entity"], entry["record_id"], entry["at"])  # _EVENT
        if entry["rule"] is None or key != event:
            rows.extend([_event_row(run)] if len(run) > 1 else run)
            run = []
        if entry["rule"] is not None or entry["action"] == "create":
            run.append(entry)
            event = key
        else:
            rows.append(entry)
            event = None
    rows.extend([_event_row(run)] if len(run) > 1 else run)
    return rows


def _event_row(run: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the entries ``run``: the first one's actor, each step with its own where it
    differs (a user's creation, then the rules acting as the system); no empty comments."""
    first = run[0]
    names = ", ".join(dict.fromkeys(e["rule"] for e in run if e["rule"] is not None))
    steps = []
    for e in run:
        step = {"action": e["action"], "rule": e["rule"], "changes": e["changes"]}
        if e["comment"] is not None:
            step["comment"] = e["comment"]
        if e["actor_id"] != first["actor_id"] or e["actor"] != first["actor"]:
            step["actor_id"], step["actor"] = e["actor_id"], e["actor"]
        steps.append(step)
    return {
        **{k: first[k] for k in _EVENT}, "actor_id": first["actor_id"], "actor": first["actor"], "action": RULES,
        "rule": names if len(names) <= 200 else names[:199] + "…", "changes": steps, "comment": None,
    }  # fmt: skip


@functools.lru_cache(maxsize=4)
def _insert(audit: Table) -> PreparedRows:
    return PreparedRows(audit, ["app", "entity", "record_id", "action", "actor_id", "actor", "at", "changes", "rule", "comment"])


def history(conn: Connection, audit: Table, app: str, entity: str, record_id: int) -> list[dict[str, Any]]:
    """The entries of one record, oldest first (the index on (app, entity, record_id, id))."""
    rows = conn.execute(
        select(audit)
        .where(audit.c.app == app, audit.c.entity == entity, audit.c.record_id == record_id)
        .order_by(audit.c.id)
    ).mappings()
    entries = []
    for row in rows:
        steps = row["changes"] if row["action"] == RULES and isinstance(row["changes"], list) else [row]
        entries.extend(
            {
                "id": row["id"], "action": step["action"], "actor": step.get("actor", row["actor"]),
                "at": row["at"].isoformat(), "changes": step["changes"], "rule": step["rule"], "comment": step.get("comment"),
            }  # fmt: skip
            for step in steps
        )
    return entries
