"""Writes a time-scan batch gathers and sends at its end, a statement per table instead of a
round trip per row (docs/sla.md#cost).

A batch of due SLA clocks whose levels only ``notify`` and ``mark`` (and breaches) writes, per
escalation, an outbox row, a mark and two audit entries, none of which anything in the batch reads
back. While :func:`deferring` is open on a connection, :func:`engine.audit.record_change`,
:func:`engine.outbox.enqueue` and :func:`engine.tags.mark` add their rows here, and the end of the
block inserts each table's rows in one executemany, in the order they came, in the same
transaction. ``mark`` answers "was it new?" from the marks the batch read up front
(:meth:`Deferred.preload_marks`) plus those it added.

Only the scan opens it, around the levels it knows to be only those actions (engine/sla.py); any
other action runs after :meth:`Deferred.flush`, so nothing ever reads a table with rows still held
here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, select, text
from sqlalchemy.dialects import sqlite

KEY = "kiln_deferred"
Writer = Callable[[Connection, list[dict[str, Any]]], None]


class Deferred:
    def __init__(self) -> None:
        self._rows: dict[tuple[Any, ...], tuple[Any, Any, list[dict[str, Any]]]] = {}
        self._marks: dict[tuple[str, str, int], set[str]] = {}
        self.locales: dict[int, str | None] = {}  # users' locales, read once per batch

    def add(self, statement: Any, row: dict[str, Any], writer: Writer | None = None) -> None:
        """Hold ``row`` for ``statement`` (taking one row's parameters), which ``writer(conn,
        rows)`` writes at the end (default: an executemany)."""
        self._rows.setdefault(("statement", id(statement)), (statement, writer, []))[2].append(row)

    def insert(self, table: Table, row: dict[str, Any], ignore_conflicts: bool = False) -> None:
        """Hold ``row`` for ``table`` (``ignore_conflicts``: ON CONFLICT DO NOTHING)."""
        self._rows.setdefault(("insert", id(table), ignore_conflicts), ((table, ignore_conflicts), _insert_all, []))[2].append(row)

    def flush(self, conn: Connection) -> None:
        for statement, writer, rows in self._rows.values():
            if not rows:
                continue
            if writer is _insert_all:
                _insert_all(conn, statement, rows)
            elif writer is not None:
                writer(conn, rows)
            else:
                conn.execute(statement, rows)
        self._rows.clear()


    def preload_marks(self, conn: Connection, marks: Table, app: str, entity: str, ids: Iterable[int]) -> None:
        """Read the marks of the batch's records, so :meth:`new_mark` can answer for them."""
        ids = [i for i in ids if (app, entity, i) not in self._marks]
        for record_id in ids:
            self._marks[(app, entity, record_id)] = set()
        if not ids:
            return
        c = marks.c
        query = select(c.record_id, c.color).where(c.app == app, c.entity == entity, c.record_id.in_(ids))
        for record_id, color in conn.execute(query):
            self._marks[(app, entity, record_id)].add(color)

    def new_mark(self, app: str, entity: str, record_id: int, color: str) -> bool | None:
        """True when the mark is new (and is now counted), False when the record has it, None for
        a record not preloaded (the caller writes it at once)."""
        found = self._marks.get((app, entity, record_id))
        if found is None:
            return None
        if color in found:
            return False
        found.add(color)
        return True


def _insert_all(conn: Connection, target: tuple[Table, bool], rows: list[dict[str, Any]]) -> None:
    """The rows of one table: on SQLite an executemany (in process); on PostgreSQL one INSERT of
    the rows passed as one JSON parameter (``json_to_recordset``): one short statement text,
    prepared once, and one ``json.dumps``, where a multi-row VALUES or arrays per column cost more
    to build and send than the database's own work."""
    table, ignore = target
    if conn.dialect.name != "postgresql":
        statement = sqlite.insert(table)
        conn.execute(statement.on_conflict_do_nothing() if ignore else statement, rows)
        return
    keys = tuple(rows[0])
    conn.execute(text(_json_insert(table, keys, ignore, conn.dialect)), {"rows": as_json(rows)})


def as_json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON array for ``json_to_recordset`` (times as ISO 8601 with their offset)."""
    return json.dumps(rows, default=_plain, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the engine stores aware UTC times only")
        return value.isoformat()
    if isinstance(value, dt.date | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@functools.lru_cache(maxsize=64)
def _json_insert(table: Table, keys: tuple[str, ...], ignore: bool, dialect: Any) -> str:
    types = ", ".join(f"{k} {table.c[k].type.compile(dialect=dialect)}" for k in keys)
    conflict = " ON CONFLICT DO NOTHING" if ignore else ""
    columns = ", ".join(keys)
    return f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM json_to_recordset(CAST(:rows AS JSON)) AS v({types}){conflict}"


def of(conn: Connection) -> Deferred | None:
    return conn.info.get(KEY)


@contextmanager
def deferring(conn: Connection) -> Iterator[Deferred]:
    """Hold the rows written on ``conn`` in this block; written at its end (not on an error: the
    caller's savepoint rolls the batch back)."""
    if KEY in conn.info:
        raise RuntimeError("deferring is already open on this connection")
    batch = conn.info[KEY] = Deferred()
    try:
        yield batch
        batch.flush(conn)
    finally:
        conn.info.pop(KEY, None)
