"""System tags and marks of records: ``add_tag``/``remove_tag`` on an entity without a tags
field, and ``mark``/``unmark`` (flags such as red, shown in every list and as a banner).

They live in ``kiln_tags`` and ``kiln_marks`` rather than in the entity's table, so a rule can tag
or flag any record without the definition declaring a field (and without a migration). The JSON
of a record shows them as ``tags`` and ``flags`` (read in one query per page: no N+1).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from engine import deferred
from engine.db import TRANSACTION_SCOPED
from engine.model import Action, Entity

if TYPE_CHECKING:
    from engine.records import Records
    from engine.rules import Scope

TAG_ACTIONS = frozenset({"add_tag", "remove_tag"})
MARK_ACTIONS = frozenset({"mark", "unmark"})


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


# Records created in the open transaction that no tag or mark action has touched since: their
# JSON has no system tags and no flags, so handing a new record out (the create's answer) reads
# neither table. Kept on the connection, so it ends with the transaction.
FRESH = "kiln_fresh_records"
TRANSACTION_SCOPED.add(FRESH)


def created(conn: Connection, records: Records, entity: Entity, record_id: int) -> None:
    """Note a record created in this transaction (engine/records.py)."""
    conn.info.setdefault(FRESH, set()).add((records.app.name, entity.name, record_id))


def _touched(conn: Connection, records: Records, entity: Entity, record_id: int) -> None:
    fresh = conn.info.get(FRESH)
    if fresh:
        fresh.discard((records.app.name, entity.name, record_id))


def add(conn: Connection, records: Records, entity: Entity, record_id: int, tags: Iterable[str]) -> list[str]:
    """Add system tags; returns the tags that were new."""
    _touched(conn, records, entity, record_id)
    table = records.schema.system["kiln_tags"]
    have = set(of(conn, records, entity, [record_id]).get(record_id, []))
    new = [t for t in dict.fromkeys(tags) if t not in have]
    if new:
        _upsert(conn, table, [{"app": records.app.name, "entity": entity.name, "record_id": record_id, "tag": t} for t in new])
    return new


def remove(conn: Connection, records: Records, entity: Entity, record_id: int, tags: Iterable[str]) -> list[str]:
    """Remove system tags; returns the tags that were there."""
    table = records.schema.system["kiln_tags"]
    have = set(of(conn, records, entity, [record_id]).get(record_id, []))
    gone = [t for t in dict.fromkeys(tags) if t in have]
    if gone:
        conn.execute(
            delete(table).where(
                table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == record_id,
                table.c.tag.in_(gone),
            )
        )  # fmt: skip
    return gone


def mark(conn: Connection, records: Records, entity: Entity, record_id: int, color: str, now: dt.datetime, rule: str | None) -> bool:
    """Flag a record; False when it already had that flag (one statement either way)."""
    _touched(conn, records, entity, record_id)
    table = records.schema.system["kiln_marks"]
    row = {"app": records.app.name, "entity": entity.name, "record_id": record_id, "color": color, "marked_at": now, "rule": rule}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    batch = deferred.of(conn)
    new = batch.new_mark(records.app.name, entity.name, record_id, color) if batch is not None else None
    if new is not None:  # a time-scan batch that read the record's marks: one insert at its end
        if new:
            batch.insert(table, row, ignore_conflicts=True)
        return new
    # RETURNING, not the row count: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING.
    return conn.execute(dialect.insert(table).on_conflict_do_nothing().returning(table.c.record_id), row).first() is not None


def unmark(conn: Connection, records: Records, entity: Entity, record_id: int, color: str) -> bool:
    table = records.schema.system["kiln_marks"]
    result = conn.execute(
        delete(table).where(
            table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == record_id,
            table.c.color == color,
        )
    )  # fmt: skip
    return result.rowcount > 0


def of(conn: Connection, records: Records, entity: Entity, ids: list[int]) -> dict[int, list[str]]:
    """System tags per record id, in name order."""
    table = records.schema.system["kiln_tags"]
    query = (
        select(table.c.record_id, table.c.tag)
        .where(table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id.in_(ids))
        .order_by(table.c.record_id, table.c.tag)
    )
    found: dict[int, list[str]] = {}
    for record_id, tag in conn.execute(query):
        found.setdefault(record_id, []).append(tag)
    return found


def flags_of(conn: Connection, records: Records, entity: Entity, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Flags per record id: ``{colour: {"since": ISO time, "rule": name}}`` (the API's ``flags``)."""
    table = records.schema.system["kiln_marks"]
    query = (
        select(table.c.record_id, table.c.color, table.c.marked_at, table.c.rule)
        .where(table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id.in_(ids))
        .order_by(table.c.record_id, table.c.color)
    )
    found: dict[int, dict[str, Any]] = {}
    for record_id, color, marked_at, rule in conn.execute(query):
        found.setdefault(record_id, {})[color] = {"since": marked_at.isoformat(), "rule": rule}
    return found


# Which entities can have system tags or marks at all: only those whose rules or SLA escalations
# use the actions. Records of other entities skip both queries (the create hot path).
_usage: weakref.WeakKeyDictionary[Records, dict[str, tuple[bool, bool, bool, bool]]] = weakref.WeakKeyDictionary()


def _actions(entity: Entity) -> Iterable[Action]:
    for rule in entity.rules:
        yield from rule.actions
    for sla in entity.sla:
        for escalation in sla.escalations:
            yield from escalation.actions


def usage(records: Records, entity: Entity) -> tuple[bool, bool, bool, bool]:
    """(show ``tags``, show ``flags``, may have system tags, may have marks) for ``entity``:
    worked out once per app, as this runs for every record handed out."""
    per_app = _usage.get(records)
    if per_app is None:
        per_app = _usage[records] = {}
    if entity.name not in per_app:
        kinds = {a.kind for a in _actions(entity)}
        per_app[entity.name] = (
            entity.field("tags") is None, entity.field("flags") is None,
            bool(kinds & TAG_ACTIONS) and entity.tags_field is None, bool(kinds & MARK_ACTIONS),
        )  # fmt: skip
    return per_app[entity.name]


def attach(conn: Connection, records: Records, entity: Entity, items: list[dict[str, Any]]) -> None:
    """Add ``tags`` (system tags) and ``flags`` to records' JSON where the entity has no field of
    that name; one query each for the whole list, none when no action can have set them."""
    show_tags, show_flags, may_tag, may_mark = usage(records, entity)
    if not (show_tags or show_flags):
        return
    fresh = conn.info.get(FRESH) or ()
    ids = [item["id"] for item in items if (records.app.name, entity.name, item["id"]) not in fresh]
    tags = of(conn, records, entity, ids) if show_tags and may_tag and ids else {}
    flags = flags_of(conn, records, entity, ids) if show_flags and may_mark and ids else {}
    for item in items:
        if show_tags:
            item["tags"] = tags.get(item["id"], [])
        if show_flags:
            item["flags"] = flags.get(item["id"], {})


# -- rule actions ------------------------------------------------------------------------------


def tag_list(args: Any) -> list[str]:
    """The tags an action names, as a tags field stores them (trimmed, none empty)."""
    return [tag for tag in (str(t).strip() for t in (args if isinstance(args, list) else [args])) if tag]


def own_tags_edit(own: str, wanted: list[str], adding: bool) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
    """What adding (or removing) ``wanted`` does to a record's tags field ``own``: its new list,
    None when it changes nothing."""

    def edit(record: Mapping[str, Any]) -> dict[str, Any] | None:
        current = record.get(own) or []
        new = [*current, *(t for t in wanted if t not in current)] if adding else [t for t in current if t not in wanted]
        return None if new == current else {own: new}

    return edit


def _tag_action(scope: Scope, args: Any, adding: bool) -> bool:
    """Tags go into the entity's tags field when it has one (a change of the record, with its
    own events), else into ``kiln_tags`` with an audit entry naming the rule."""
    wanted = tag_list(args)
    own = scope.entity.tags_field
    if own is not None:
        incoming = own_tags_edit(own, wanted, adding)(scope.record)
        return False if incoming is None else scope.change_parsed(incoming)
    record_id = scope.record["id"]
    before = of(scope.conn, scope.records, scope.entity, [record_id]).get(record_id, [])
    done = (add if adding else remove)(scope.conn, scope.records, scope.entity, record_id, wanted)
    if done:
        after = sorted(set(before) | set(done)) if adding else [t for t in before if t not in done]
        _audit(scope, "add_tag" if adding else "remove_tag", {"tags": [before or None, after or None]})
    return False


def action_add_tag(scope: Scope, args: Any) -> bool:
    return _tag_action(scope, args, adding=True)


def action_remove_tag(scope: Scope, args: Any) -> bool:
    return _tag_action(scope, args, adding=False)


def action_mark(scope: Scope, color: Any) -> bool:
    if mark(scope.conn, scope.records, scope.entity, scope.record["id"], str(color), scope.now, scope.rule.name):
        _audit(scope, "mark", {"flags": [None, str(color)]})
    return False


def action_unmark(scope: Scope, color: Any) -> bool:
    if unmark(scope.conn, scope.records, scope.entity, scope.record["id"], str(color)):
        _audit(scope, "unmark", {"flags": [str(color), None]})
    return False


def _audit(scope: Scope, action: str, changes: dict[str, Any]) -> None:
    scope.audit(action, changes)
