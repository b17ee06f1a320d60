"""SQL constructs whose spelling differs between SQLite and PostgreSQL.

Datetimes take part in arithmetic as epoch seconds: PostgreSQL's ``EXTRACT(EPOCH ...)`` is exact;
SQLite's ``julianday`` is a float with about 10 microseconds of error, so its seconds are rounded
to the millisecond (stored times are whole microseconds; comparisons at a boundary then agree).
Local times (``time_between``, ``date()``) use the IANA zone: PostgreSQL knows it; SQLite gets
a small Python function ``kiln_local`` registered on every connection.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from sqlalchemy import Boolean, Date, Numeric, Text, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import Pool
from sqlalchemy.sql.functions import FunctionElement

from engine.db import UTCDateTime

from .evaluate import zone

_JULIAN_UNIX_EPOCH = 2440587.5


class Epoch(FunctionElement):
    """Seconds since 1970-01-01 UTC of a datetime (or of midnight UTC of a date)."""

    type = Numeric()
    inherit_cache = True


@compiles(Epoch)
def _epoch_pg(element: Epoch, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(Epoch, "sqlite")
def _epoch_sqlite(element: Epoch, compiler: Any, **kw: Any) -> str:
    return f"round((julianday({compiler.process(element.clauses, **kw)}) - {_JULIAN_UNIX_EPOCH}) * 86400.0, 3)"


class FromEpoch(FunctionElement):
    """A datetime from epoch seconds (the value of ``created_at + "2h"`` as a column)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(FromEpoch)
def _from_epoch_pg(element: FromEpoch, compiler: Any, **kw: Any) -> str:
    return f"to_timestamp({compiler.process(element.clauses, **kw)})"


@compiles(FromEpoch, "sqlite")
def _from_epoch_sqlite(element: FromEpoch, compiler: Any, **kw: Any) -> str:
    # The stored format: 'YYYY-MM-DD HH:MM:SS.ffffff' (strftime gives milliseconds; pad them).
    return f"(strftime('%Y-%m-%d %H:%M:%f', {compiler.process(element.clauses, **kw)}, 'unixepoch') || '000')"


class EpochDate(FunctionElement):
    """A date from epoch seconds of its midnight UTC."""

    type = Date()
    inherit_cache = True


@compiles(EpochDate)
def _epoch_date_pg(element: EpochDate, compiler: Any, **kw: Any) -> str:
    return f"CAST(timezone('UTC', to_timestamp({compiler.process(element.clauses, **kw)})) AS DATE)"


@compiles(EpochDate, "sqlite")
def _epoch_date_sqlite(element: EpochDate, compiler: Any, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)}, 'unixepoch')"


class LocalText(FunctionElement):
    """The local wall-clock time of a datetime as 'YYYY-MM-DD HH:MM:SS[.ffffff]': (t, zone)."""

    type = Text()
    inherit_cache = True


@compiles(LocalText)
def _local_text_pg(element: LocalText, compiler: Any, **kw: Any) -> str:
    moment, tz = list(element.clauses)
    return f"CAST(timezone({compiler.process(tz, **kw)}, {compiler.process(moment, **kw)}) AS TEXT)"


@compiles(LocalText, "sqlite")
def _local_text_sqlite(element: LocalText, compiler: Any, **kw: Any) -> str:
    return f"kiln_local({compiler.process(element.clauses, **kw)})"


class LocalDate(FunctionElement):
    """The local date of a datetime: (t, zone)."""

    type = Date()
    inherit_cache = True


@compiles(LocalDate)
def _local_date_pg(element: LocalDate, compiler: Any, **kw: Any) -> str:
    moment, tz = list(element.clauses)
    return f"CAST(timezone({compiler.process(tz, **kw)}, {compiler.process(moment, **kw)}) AS DATE)"


@compiles(LocalDate, "sqlite")
def _local_date_sqlite(element: LocalDate, compiler: Any, **kw: Any) -> str:
    return f"substr(kiln_local({compiler.process(element.clauses, **kw)}), 1, 10)"


class TimeText(FunctionElement):
    """A time column as 'HH:MM:SS[.ffffff]' text."""

    type = Text()
    inherit_cache = True


@compiles(TimeText)
def _time_text(element: TimeText, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


class Contains(FunctionElement):
    """Case-sensitive substring test, as Python's ``in``: (haystack, needle)."""

    type = Boolean()
    inherit_cache = True


@compiles(Contains)
def _contains_pg(element: Contains, compiler: Any, **kw: Any) -> str:
    return f"(strpos({compiler.process(element.clauses, **kw)}) > 0)"


@compiles(Contains, "sqlite")
def _contains_sqlite(element: Contains, compiler: Any, **kw: Any) -> str:
    # instr, not LIKE: SQLite's LIKE ignores ASCII case and treats % and _ as wildcards.
    return f"(instr({compiler.process(element.clauses, **kw)}) > 0)"


def kiln_local(stored: str | None, tz: str) -> str | None:
    """SQLite function: a stored UTC datetime text as local wall-clock text in zone ``tz``."""
    if stored is None:
        return None
    moment = dt.datetime.fromisoformat(str(stored)).replace(tzinfo=dt.UTC).astimezone(zone(tz))
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


@event.listens_for(Pool, "connect")
def _register_sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("kiln_local", 2, kiln_local, deterministic=True)


class TypedParameter(FunctionElement):
    """A statement parameter whose SQL type PostgreSQL is told: a prepared count's ``this.x``
    may be null, and ``$1 IS NOT NULL`` alone leaves its type unknown there. SQLite needs no
    cast (and would give a date's text numeric affinity with one)."""

    inherit_cache = True

    def __init__(self, param: Any) -> None:
        super().__init__(param)
        self.type = param.type


@compiles(TypedParameter)
def _typed_pg(element: TypedParameter, compiler: Any, **kw: Any) -> str:
    sql_type = compiler.dialect.type_compiler_instance.process(element.type)
    return f"CAST({compiler.process(element.clauses, **kw)} AS {sql_type})"


@compiles(TypedParameter, "sqlite")
def _typed_sqlite(element: TypedParameter, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)
