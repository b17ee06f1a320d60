"""Schema migrations computed from the definition (SPEC.md section 6).

``plan`` compares the tables the definition compiles to with the live database (Alembic's
``compare_metadata``) and says what would change: tables and columns added, renamed, retyped,
kept or dropped, indexes, and records whose workflow state disappeared. ``apply`` carries the plan
out in one transaction and records it in ``kiln_migrations``; a plan with blocking reasons raises
:class:`MigrationRefused` and changes nothing. ``pending`` is the server's start check.

The pieces: :mod:`engine.migrations_plan` (computing), :mod:`engine.migrations_steps` (what a plan
holds and how it reads), :mod:`engine.migrations_convert` (type-change checks and copies),
:mod:`engine.migrations_ops` (running the steps).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, insert, select

from engine import rollups
from engine.compiler import Compiled
from engine.db import is_sqlite, read
from engine.migrations_ops import execute
from engine.migrations_plan import build
from engine.migrations_steps import SYSTEM, Plan, Step

__all__ = ["MigrationIncomplete", "MigrationRefused", "Plan", "Step", "apply", "pending", "plan"]

START_HINT = "the definition has unapplied database changes; run: python run.py migrate"


class MigrationRefused(Exception):
    """The plan has blocking reasons; nothing was changed. ``str()`` lists the reasons."""

    def __init__(self, plan: Plan) -> None:
        super().__init__("\n".join(plan.blocking))
        self.plan = plan


class MigrationIncomplete(RuntimeError):
    """After applying, the database still differs from the definition (a bug); rolled back."""

    def __init__(self, remaining: Plan) -> None:
        super().__init__("the migration did not reach the definition; rolled back. Still to do:\n" + remaining.render())
        self.remaining = remaining


def plan(engine: Engine, compiled: Compiled, allow_destructive: bool = False) -> Plan:
    """What ``apply`` would do now; reads only."""
    with read(engine) as conn:
        return build(conn, compiled, allow_destructive)[0]


def pending(engine: Engine, compiled: Compiled) -> Plan | None:
    """The plan when the database is not up to date with the definition (the server's start check:
    refuse to serve and print ``START_HINT``), else None."""
    current = plan(engine, compiled)
    return None if current.is_empty else current


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction for the whole migration, DDL included.

    PostgreSQL has transactional DDL. So does SQLite, when the connection is in manual transaction
    mode (engine.db turns pysqlite's own handling off and issues BEGIN IMMEDIATE). SQLite's batch
    mode recreates a table (copy, drop, rename); with foreign keys on, dropping a parent table would
    delete its child tables' rows through ON DELETE CASCADE, so foreign keys are off for the
    migration (the pragma only works outside a transaction) and checked before commit instead.
    """
    with engine.connect().execution_options(kiln_write=True) as conn:
        raw = conn.connection.driver_connection if is_sqlite(conn) else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if raw is not None:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration would break foreign keys: {broken[:5]}")
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def _record(conn: Connection, compiled: Compiled, done: Plan, now: dt.datetime) -> None:
    """One kiln_migrations row per app whose tables changed or whose definition is new to it."""
    migrations = compiled.schema.system["kiln_migrations"]
    last: dict[str, str] = {}
    for app, definition_hash in conn.execute(select(migrations.c.app, migrations.c.definition_hash).order_by(migrations.c.id)):
        last[app] = definition_hash
    system = [s.as_json() for s in done.for_app(SYSTEM) if s.changes_database]
    apps = set(compiled.apps) | {s.app for s in done.changes if s.app != SYSTEM}
    rows = []
    for app in sorted(apps):
        steps = [s.as_json() for s in done.for_app(app)]
        definition_hash = compiled.apps[app].definition_hash if app in compiled.apps else ""  # "": app removed
        changed = any(s["kind"] not in ("keep_table", "keep_column") for s in steps) or bool(system)
        if not changed and last.get(app) == definition_hash:
            continue
        summary = {"steps": steps, "system_steps": system, "allow_destructive": done.allow_destructive}
        rows.append({"app": app, "definition_hash": definition_hash, "applied_at": now, "summary": summary})
    if rows:
        conn.execute(insert(migrations), rows)


def apply(engine: Engine, compiled: Compiled, allow_destructive: bool = False, now: dt.datetime | None = None) -> Plan:
    """Apply the plan in one transaction; raise MigrationRefused (changing nothing) when blocked.

    The plan is computed again inside the transaction, so what is applied is what the database
    holds at that moment, not what it held when ``migrate --plan`` ran. After the steps, the plan is
    computed once more: anything left is a bug and rolls everything back.
    """
    now = now or dt.datetime.now(dt.UTC)
    with _transaction(engine) as conn:
        todo, targets = build(conn, compiled, allow_destructive)
        if todo.blocking:
            raise MigrationRefused(todo)
        execute(conn, todo, targets)
        remaining = build(conn, compiled, allow_destructive)[0]
        if not remaining.is_empty:
            raise MigrationIncomplete(remaining)
        _record(conn, compiled, todo, now)
        changed = {s.app for s in todo.changes}
        rollups.refresh(conn, compiled.schema, [c.app for c in compiled.apps.values()], changed, now)
    return todo
