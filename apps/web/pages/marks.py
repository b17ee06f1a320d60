"""Marks on the pages (``mark: red`` of a rule or an SLA escalation, SPEC.md section 5): a flag on
the record's row in every list, and a banner on the workspace of each user whose role sees flagged
records, linking to the list filtered to them (``?flag=red``). Both read through the query layer
(the banner's count is the list's count with the user's row scope) and cost nothing for an entity
whose rules and escalations never mark."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from engine import tags
from engine.actors import Actor
from engine.model import App, Entity
from engine.queries import COUNT_CAP

RED = "red"


def may_mark(records: Any, entity: Entity) -> bool:
    return tags.usage(records, entity)[3]


def row_flags(conn: Connection, records: Any, entity: Entity, ids: list[int]) -> dict[int, list[str]]:
    """The flag colours of a list page's rows, in one query on the page's connection (none when
    nothing can mark)."""
    if not ids or not may_mark(records, entity):
        return {}
    found = tags.flags_of(conn, records, entity, ids)
    return {record_id: sorted(colours) for record_id, colours in found.items()}


def alert(
    instance: Any, app: App, entity: Entity, actor: Actor, label: str, gettext: Any
) -> dict[str, Any] | None:
    """The workspace banner for one entity: how many records this actor sees flagged red."""
    records = instance.records(app.name)
    if not may_mark(records, entity):
        return None
    count, more = records.count(entity.name, actor, filters={"flag": [RED]}, cap=COUNT_CAP)
    if not count:
        return None
    shown = f"{COUNT_CAP:,}+" if more else str(count)
    return {
        "app": app.name, "entity": entity.name, "count": count, "more": more, "href": f"/a/{app.name}/{entity.name}?flag={RED}",
        "text": gettext("%(n)s %(entity)s overdue or flagged red", n=shown, entity=label),
    }  # fmt: skip
