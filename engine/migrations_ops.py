"""Carrying out a plan's steps with Alembic operations, inside the caller's transaction.

Column changes go through ``op.batch_alter_table``: on SQLite that is batch mode (the table is
recreated, copied and renamed when ALTER cannot do the change), on PostgreSQL it issues plain
ALTER statements. Renames use ALTER directly on both (SQLite has had RENAME COLUMN since 3.25 and
it rewrites indexes and foreign keys; a batch copy would move every row for nothing). Nothing here
commits: :func:`engine.migrations.apply` owns the one transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Connection, column, inspect, table, update
from sqlalchemy.sql import func

from engine.migrations_convert import copy_converted
from engine.migrations_plan import Targets
from engine.migrations_steps import Plan, Step

Runner = Callable[[Operations, Connection, Step, Targets], None]
TEMP_PREFIX = "_kiln_new_"


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def drop_index(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    op.drop_index(str(step.new), table_name=step.table)


def drop_unique(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    with op.batch_alter_table(step.table) as batch:
        batch.drop_constraint(str(step.new), type_="unique")


def add_column(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    col = targets.pre.metadata.tables[step.table].c[str(step.column)]
    with op.batch_alter_table(step.table) as batch:
        batch.add_column(Column(col.name, col.type, nullable=col.nullable))


def change_type(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    """New column of the new type, every value copied converted, old column dropped, new renamed.

    ALTER ... TYPE (or a batch copy with CAST) would convert with the database's rules, which differ
    between backends and, on SQLite, turn '2024-05-01' into 2024; the plan checked every value with
    the converters used here, so the copy is exactly what the plan showed.
    """
    name, col = step.table, str(step.column)
    target = targets.pre.metadata.tables[name].c[col]
    temp = (TEMP_PREFIX + col)[:63]
    inspector = inspect(conn)
    indexes = [i for i in inspector.get_indexes(name) if col in i["column_names"] and not i.get("duplicates_constraint")]
    uniques = [u for u in inspector.get_unique_constraints(name) if col in u["column_names"]]
    keys = list(inspector.get_pk_constraint(name)["constrained_columns"])
    with op.batch_alter_table(name) as batch:
        batch.add_column(Column(temp, target.type, nullable=True))
    copy_converted(conn, name, keys, col, temp, target.type)
    for index in indexes:
        op.drop_index(index["name"], table_name=name)
    with op.batch_alter_table(name) as batch:
        for unique in uniques:
            batch.drop_constraint(unique["name"], type_="unique")
        batch.drop_column(col)
        batch.alter_column(temp, new_column_name=col, existing_type=target.type, nullable=target.nullable)
    if uniques:  # a batch of its own: within the one above, the batch copy drops it with the old column
        with op.batch_alter_table(name) as batch:
            for unique in uniques:
                batch.create_unique_constraint(unique["name"], unique["column_names"])
    for index in indexes:
        op.create_index(index["name"], name, index["column_names"], unique=bool(index["unique"]))


def alter_nullable(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    col = targets.pre.metadata.tables[step.table].c[str(step.column)]
    with op.batch_alter_table(step.table) as batch:
        batch.alter_column(col.name, existing_type=col.type, nullable=bool(step.detail["nullable"]))


def map_states(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    entered_from, entered_to = step.detail.get("entered_from"), step.detail["entered_to"]
    t = table(step.table, column("state"), column(entered_to), *([column(entered_from)] if entered_from else []))
    values = {"state": step.new}
    if entered_from:
        values[entered_to] = func.coalesce(t.c[entered_to], t.c[entered_from])
    conn.execute(update(t).where(t.c.state == step.column).values(values))


def drop_column(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    with op.batch_alter_table(step.table) as batch:
        batch.drop_column(str(step.column))


def rename_column(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    op.alter_column(step.table, str(step.column), new_column_name=str(step.new))


def rename_table(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    op.rename_table(step.table, str(step.new))


def rename_index(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    old, new = str(step.column), str(step.new)
    unique = step.detail.get("what") == "unique constraint"
    if conn.dialect.name == "postgresql":
        if unique:  # renames the constraint and the index behind it
            op.execute(f"ALTER TABLE {_quote(conn, step.table)} RENAME CONSTRAINT {_quote(conn, old)} TO {_quote(conn, new)}")
        else:
            op.execute(f"ALTER INDEX {_quote(conn, old)} RENAME TO {_quote(conn, new)}")
        return
    # SQLite cannot rename an index or a table constraint: drop and recreate under the new name.
    if unique:
        with op.batch_alter_table(step.table) as batch:
            batch.drop_constraint(old, type_="unique")
            batch.create_unique_constraint(new, step.detail["columns"])
        return
    target = next(i for i in targets.target.metadata.tables[step.table].indexes if i.name == new)
    op.drop_index(old, table_name=step.table)
    op.create_index(new, step.table, step.detail["columns"], unique=bool(target.unique))


def create_tables(op: Operations, conn: Connection, steps: list[Step], targets: Targets) -> None:
    """New tables with all their indexes, parents before children."""
    names = {s.table for s in steps}
    wanted = [t for t in targets.target.metadata.sorted_tables if t.name in names]
    targets.target.metadata.create_all(conn, tables=wanted, checkfirst=False)


def add_index(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    op.create_index(str(step.new), step.table, step.detail["columns"], unique=bool(step.detail.get("unique")))
    if conn.dialect.name == "sqlite" and _has_statistics(conn):
        # SQLite's planner trusts an index it has no statistics for over indexes it has measured:
        # a new (state, entered_closed_at) index once took the list page's ``state = ?`` from
        # (state, id) and sorted the whole state instead (283 ms a page). Measure the new one too.
        conn.exec_driver_sql(f'ANALYZE "{step.new}"')


def _has_statistics(conn: Connection) -> bool:
    """Whether ANALYZE has run on this SQLite database (without it, no index has statistics)."""
    found = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
    return found.first() is not None


def add_unique(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    with op.batch_alter_table(step.table) as batch:
        batch.create_unique_constraint(str(step.new), step.detail["columns"])


def drop_table(op: Operations, conn: Connection, step: Step, targets: Targets) -> None:
    op.drop_table(step.table)


RUNNERS: dict[str, Runner] = {
    "drop_index": drop_index,
    "drop_unique": drop_unique,
    "add_column": add_column,
    "change_type": change_type,
    "alter_nullable": alter_nullable,
    "map_states": map_states,
    "drop_column": drop_column,
    "rename_column": rename_column,
    "rename_table": rename_table,
    "rename_index": rename_index,
    "add_index": add_index,
    "add_unique": add_unique,
    "drop_table": drop_table,
}


def execute(conn: Connection, plan: Plan, targets: Targets) -> None:
    """Run every step that changes the database, in plan order, on ``conn`` (already in a transaction)."""
    op = Operations(MigrationContext.configure(conn))
    creates = [s for s in plan.changes if s.kind == "create_table"]
    created = False
    for step in plan.changes:
        if step.kind == "create_table":
            if not created:  # all at once: create_all orders them by their foreign keys
                create_tables(op, conn, creates, targets)
                created = True
            continue
        RUNNERS[step.kind](op, conn, step, targets)
