"""System tags and marks of records: ``add_tag``/``remove_tag`` on an entity without a tags
field, and ``mark``/``unmark`` (flags such as red, shown in every list and as a banner).

They live in ``kiln_tags`` and ``kiln_marks`` rather than in the entity's table, so a rule can tag
or flag any record without the definition declaring a field (and without a migration). The JSON
of a record shows them as ``tags`` and ``flags`` (read in one query per page: no N+1).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.model import Action, Entity

if TYPE_CHECKING:
    from engine.records import Records

TAG_ACTIONS = frozenset({"add_tag", "remove_tag"})
MARK_ACTIONS = frozenset({"mark", "unmark"})


def tags_field(entity: Entity) -> str | None:
    """The entity's own tags field (``type: tags``), which tag actions use when there is one."""
    return next((f.name for f in entity.fields if f.type == "tags" and not f.disabled), None)


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def add(conn: Connection, records: Records, entity: Entity, record_id: int, tags: Iterable[str]) -> list[str]:
    """Add system tags; returns the tags that were new."""
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
    """Flag a record; False when it already had that flag."""
    if color in flags_of(conn, records, entity, [record_id]).get(record_id, []):
        return False
    row = {"app": records.app.name, "entity": entity.name, "record_id": record_id, "color": color, "marked_at": now, "rule": rule}
    _upsert(conn, records.schema.system["kiln_marks"], [row])
    return True


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


def flags_of(conn: Connection, records: Records, entity: Entity, ids: list[int]) -> dict[int, list[str]]:
    """Flags (mark colours) per record id."""
    table = records.schema.system["kiln_marks"]
    query = (
        select(table.c.record_id, table.c.color)
        .where(table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id.in_(ids))
        .order_by(table.c.record_id, table.c.color)
    )
    found: dict[int, list[str]] = {}
    for record_id, color in conn.execute(query):
        found.setdefault(record_id, []).append(color)
    return found


# Which entities can have system tags or marks at all: only those whose rules or SLA escalations
# use the actions. Records of other entities skip both queries (the create hot path).
_usage: weakref.WeakKeyDictionary[Records, dict[str, tuple[bool, bool]]] = weakref.WeakKeyDictionary()


def _actions(entity: Entity) -> Iterable[Action]:
    for rule in entity.rules:
        yield from rule.actions
    for sla in entity.sla:
        for escalation in sla.escalations:
            yield from escalation.actions


def usage(records: Records, entity: Entity) -> tuple[bool, bool]:
    """(may have system tags, may have marks) for records of ``entity``."""
    per_app = _usage.setdefault(records, {})
    if entity.name not in per_app:
        kinds = {a.kind for a in _actions(entity)}
        per_app[entity.name] = (bool(kinds & TAG_ACTIONS) and tags_field(entity) is None, bool(kinds & MARK_ACTIONS))
    return per_app[entity.name]


def attach(conn: Connection, records: Records, entity: Entity, items: list[dict[str, Any]]) -> None:
    """Add ``tags`` (system tags) and ``flags`` to records' JSON where the entity has no field of
    that name; one query each for the whole list."""
    show_tags, show_flags = entity.field("tags") is None, entity.field("flags") is None
    if not (show_tags or show_flags):
        return
    may_tag, may_mark = usage(records, entity)
    ids = [item["id"] for item in items]
    tags = of(conn, records, entity, ids) if show_tags and may_tag and ids else {}
    flags = flags_of(conn, records, entity, ids) if show_flags and may_mark and ids else {}
    for item in items:
        if show_tags:
            item["tags"] = tags.get(item["id"], [])
        if show_flags:
            item["flags"] = flags.get(item["id"], [])
