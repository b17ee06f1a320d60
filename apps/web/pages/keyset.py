"""Keyset pages in both directions: ``next`` after the last row (the query layer's own cursor)
and ``previous`` before the first row, by reading the same order backwards.

The query layer orders by ``(sort column, id)`` with NULLs last in either direction; the page
before a row is the rows preceding it in that order, read in reverse and flipped back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from engine import permissions, queries
from engine.actors import Actor
from engine.model import Entity
from engine.queries import decode_cursor, encode_cursor


@dataclass
class Window:
    rows: list[dict[str, Any]]  # raw rows (Python values), in list order
    next_cursor: str | None
    prev_cursor: str | None  # the ``before`` of the previous page


def read(records: Any, conn: Any, entity: Entity, actor: Actor, spec: queries.ListSpec, before: str | None) -> Window:
    query = records.query
    hidden = permissions.hidden_fields(entity, actor)
    # The query layer checks the sort (a visible, sortable column) and resolves it.
    column, descending = query._sort_column(entity, spec.sort, hidden)
    if before is None:
        page = query.page(conn, entity, actor, spec)
        prev = _cursor(column, page.items[0]) if spec.cursor and page.items else None
        return Window(page.items, page.next_cursor, prev)
    table = records.tables(entity).main
    value, last_id = decode_cursor(before)
    try:
        last_id = int(last_id)
    except (TypeError, ValueError):
        raise queries.BadQuery("the cursor is not valid", {"cursor": "invalid"}) from None
    limit = max(1, min(int(spec.limit or 50), queries.MAX_LIMIT))
    select = query.filtered(entity, actor, replace(spec, cursor=None), conn)
    select = select.where(_before(column, table.c.id, value, last_id, descending))
    if column.name == "id":
        order = [table.c.id.asc() if descending else table.c.id.desc()]
    elif descending:
        order = [column.asc().nulls_first(), table.c.id.asc()]
    else:
        order = [column.desc().nulls_first(), table.c.id.desc()]
    rows = [dict(r) for r in conn.execute(select.order_by(*order).limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = list(reversed(rows[:limit]))
    records.attach_children(conn, entity, rows)
    return Window(rows, _cursor(column, rows[-1]) if rows else None, _cursor(column, rows[0]) if more and rows else None)


def _cursor(column: Any, row: dict[str, Any]) -> str:
    return encode_cursor([row[column.name], row["id"]])


def _before(column: Any, id_column: Any, raw: Any, last_id: int, descending: bool) -> ColumnElement[bool]:
    """Rows preceding ``(raw, last_id)`` in the list's order (NULLs sort last)."""
    id_before = id_column > last_id if descending else id_column < last_id
    if column.name == "id":
        return id_before
    if raw is None:
        return or_(column.is_not(None), and_(column.is_(None), id_before))
    value = queries._cursor_value(column, raw)
    earlier = column > value if descending else column < value
    return or_(earlier, and_(column == value, id_before))
