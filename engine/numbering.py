"""Auto numbers such as ``MX{created:%Y%m%d}-{seq:4}`` -> ``MX20260218-0872``.

Parts: ``{created:FORMAT}`` (the creation time in the app's timezone, strftime format),
``{seq}`` or ``{seq:N}`` (a counter zero-padded to N digits), ``{FIELD}`` (a field's value).
The counter is kept per rendered prefix in ``kiln_sequences``, so it restarts with each new date
prefix. The counter row is bumped with ``UPDATE ... RETURNING`` inside the record's own
transaction: the row lock (PostgreSQL) or the write lock (SQLite) makes concurrent creates wait
for each other, so no two records ever get the same number, and a rolled back create gives its
number back.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, and_, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.db import Prepared

_PART = re.compile(r"\{([a-z_][a-z0-9_]*)(?::([^}]*))?\}")


@dataclass(frozen=True)
class NumberFormat:
    pattern: str

    def render(self, record: Mapping[str, Any], created: dt.datetime, timezone: str, seq: int | None) -> str:
        local = created.astimezone(ZoneInfo(timezone))

        def part(match: re.Match[str]) -> str:
            name, spec = match.group(1), match.group(2)
            if name == "created":
                return local.strftime(spec or "%Y%m%d")
            if name == "seq":
                if seq is None:
                    return "{seq}"  # the counter's slot in the prefix key
                return str(seq).zfill(int(spec or 1))
            value = record.get(name)
            return "" if value is None else str(value)

        return _PART.sub(part, self.pattern)

    def prefix(self, record: Mapping[str, Any], created: dt.datetime, timezone: str) -> str:
        """The counter's key: the number with the counter left out."""
        return self.render(record, created, timezone, None)

    @property
    def has_seq(self) -> bool:
        return any(m.group(1) == "seq" for m in _PART.finditer(self.pattern))


@functools.lru_cache(maxsize=8)
def _statements(sequences: Table) -> tuple[Prepared, Prepared, Prepared]:
    """The bump and the two inserts, compiled once: this runs on every create."""
    key = and_(
        sequences.c.app == bindparam("k_app"), sequences.c.entity == bindparam("k_entity"),
        sequences.c.prefix == bindparam("k_prefix"),
    )  # fmt: skip
    # The step and the first value are named parameters the caller gives, so the driver's
    # parameters are built in one pass (Prepared: an anonymous literal is filled in more slowly).
    bump = update(sequences).where(key).values(value=sequences.c.value + bindparam("k_step")).returning(sequences.c.value)
    first = {"app": bindparam("k_app"), "entity": bindparam("k_entity"), "prefix": bindparam("k_prefix"), "value": bindparam("k_first")}
    pg_insert = postgresql.insert(sequences).values(first).on_conflict_do_nothing()
    sqlite_insert = sqlite.insert(sequences).values(first).on_conflict_do_nothing()
    return Prepared(bump), Prepared(pg_insert), Prepared(sqlite_insert)


def next_value(conn: Connection, sequences: Table, app: str, entity: str, prefix: str) -> int:
    """Bump and return the counter of ``prefix`` (first value 1), in the caller's transaction."""
    bump, pg_insert, sqlite_insert = _statements(sequences)
    params = {"k_app": app, "k_entity": entity, "k_prefix": prefix, "k_step": 1, "k_first": 0}
    value = bump.execute(conn, params).scalar()
    if value is not None:
        return int(value)
    (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert).execute(conn, params)
    return int(bump.execute(conn, params).scalar_one())


def make_number(
    conn: Connection, sequences: Table, app: str, entity: str, fmt: NumberFormat, record: Mapping[str, Any],
    created: dt.datetime, timezone: str,
) -> str:  # fmt: skip
    seq = next_value(conn, sequences, app, entity, fmt.prefix(record, created, timezone)) if fmt.has_seq else None
    return fmt.render(record, created, timezone, seq)

