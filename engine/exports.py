"""CSV and XLSX exports of a record list, streamed through the one query layer.

An export walks the same keyset pages as the list page (``Records.query.page`` with the list's
filters, search, sort and ``where``), so it can never show a row or a field the list would not:
hidden fields are not columns at all. Rows are written as a person reads them: option labels,
linked records by title, users by username, datetimes in the app's timezone.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine import permissions, queries
from engine.actors import Actor
from engine.model import TITLE_PART, Entity, Field

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.records import Records

PAGE = 500  # rows per query: one keyset page of the query layer's maximum size


@dataclass(frozen=True)
class ExportColumn:
    key: str  # the record key in the API form
    label: str
    field: Field | None = None  # None: a system column


def may_export(entity: Entity, actor: Actor) -> bool:
    """Admins, and roles whose permission on the entity says ``export: true``."""
    return permissions.unrestricted(actor) or any(p.export for p in permissions.permissions_of(entity, actor))


def record_title(entity: Entity, item: dict[str, Any]) -> str:
    """A record as links and lists show it: the entity's ``title`` template, else its number or id."""
    if entity.title:
        text = TITLE_PART.sub(lambda m: _plain(item.get(m.group(1))), entity.title).strip()
        if text:
            return text
    return str(item.get("number") or f"#{item.get('id')}")


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def link_titles(
    records: Records, entity: Entity, items: Iterable[dict[str, Any]], actor: Actor, fields: Iterable[str] | None = None,
    conn: Connection | None = None,
) -> dict[str, dict[int, str]]:
    """``{link field: {id: title}}`` for the linked records the actor may see (one query per
    field, reading only the linked entity's title fields); ``fields`` limits the link fields;
    on ``conn`` when the caller has one open."""
    titles: dict[str, dict[int, str]] = {}
    rows = list(items)
    wanted = None if fields is None else set(fields)
    links = [f for f in entity.fields if f.type == "link" and f.entity and (wanted is None or f.name in wanted)]
    if not links:
        return titles
    if conn is None:
        with records.instance.engine.connect() as own:
            return link_titles(records, entity, rows, actor, fields, own)
    for f in links:
        ids = sorted({v for r in rows for v in _values(r.get(f.name)) if isinstance(v, int)})
        target = records.entity(f.entity)
        found = {r["id"]: record_title(target, r) for r in records.query.titles(conn, target, actor, ids)} if ids else {}
        titles[f.name] = found
    return titles


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def columns(entity: Entity, actor: Actor, locale: str) -> list[ExportColumn]:
    hidden = permissions.hidden_fields(entity, actor)
    cols = [ExportColumn("id", "ID")]
    if entity.number:
        cols.append(ExportColumn("number", "number"))
    if entity.workflow:
        cols.append(ExportColumn("state", "state"))
    cols += [ExportColumn(f.name, f.label.get(locale), f) for f in entity.fields if not f.disabled and f.name not in hidden]
    cols += [ExportColumn("created_at", "created_at"), ExportColumn("created_by", "created_by"), ExportColumn("updated_at", "updated_at")]
    return cols


def cell(column: ExportColumn, item: dict[str, Any], titles: dict[str, dict[int, str]], entity: Entity, locale: str, tz: dt.tzinfo) -> Any:
    """One value as a person reads it (a plain string, number or empty)."""
    value = item.get(column.key)
    if value is None or value == []:
        return ""
    f = column.field
    if column.key == "state" and entity.workflow:
        state = entity.workflow.state(value)
        return state.label.get(locale) if state else value
    if f is not None and f.type in ("select", "multiselect"):
        labels = {k: label.get(locale) for k, label in f.options}
        return ", ".join(labels.get(v, v) for v in _values(value))
    if f is not None and f.type == "link":
        return ", ".join(titles.get(f.name, {}).get(v, f"#{v}") for v in _values(value))
    if column.key in ("created_at", "updated_at") or (f is not None and f.type == "datetime"):
        return dt.datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M")
    if f is not None and f.type == "boolean":
        return "✓" if value else "✗"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if f is not None and f.type in ("integer", "rating") and isinstance(value, int):
        return value
    return str(value)


def rows(records: Records, entity: Entity, actor: Actor, spec: queries.ListSpec, locale: str) -> Iterator[list[Any]]:
    """The header, then every matching row, a keyset page at a time (never OFFSET)."""
    cols = columns(entity, actor, locale)
    yield [c.label for c in cols]
    cursor = spec.cursor
    while True:
        page = records.list(
            entity.name, actor, where=spec.where, filters=spec.filters, search=spec.search, sort=spec.sort,
            limit=PAGE, cursor=cursor,
        )  # fmt: skip
        titles = link_titles(records, entity, page.items, actor)
        for item in page.items:
            yield [cell(c, item, titles, entity, locale, records.timezone) for c in cols]
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def csv_chunks(lines: Iterable[list[Any]]) -> Iterator[bytes]:
    """CSV as UTF-8 with a byte-order mark (so spreadsheet programs read Chinese correctly)."""
    yield "\ufeff".encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for n, line in enumerate(lines, 1):
        writer.writerow([_safe_cell(v) for v in line])
        if n % 200 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _safe_cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote: exported
    data is users' data and must not become code on the reader's machine (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def xlsx_chunks(lines: Iterable[list[Any]], title: str = "export") -> Iterator[bytes]:
    """An XLSX workbook, built with openpyxl's write-only mode in a temporary file (memory stays
    flat on large exports), then streamed."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=re.sub(r"[\[\]:*?/\\]", "_", title)[:31] or "export")
    for line in lines:
        sheet.append([_safe_cell(v) for v in line])
    with tempfile.TemporaryFile() as handle:
        workbook.save(handle)
        handle.seek(0)
        while chunk := handle.read(64 * 1024):
            yield chunk


def export_spec(spec: queries.ListSpec) -> queries.ListSpec:
    """An export starts at the first row whatever page the list was on."""
    return replace(spec, cursor=None, limit=PAGE)
