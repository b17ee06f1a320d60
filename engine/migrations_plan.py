"""Computing a migration plan: the definition's tables against the live database.

Renames are resolved first, from the definition (``renamed_from`` on entities, fields and states):
a rename applies when the old table or column exists and the new one does not. The definition is
then rewritten under those *old* names (the "pre-rename" schema) and compared with the database by
Alembic's ``compare_metadata``; that way a renamed column compares equal to itself instead of
showing up as one column dropped and another added, and only real differences remain. Those are
translated into :class:`Step` objects; renames, index renames and state moves are added beside
them. Planning only reads: nothing here changes the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    Index,
    Table,
    UniqueConstraint,
    and_,
    column,
    func,
    inspect,
    select,
    table,
)
from sqlalchemy.engine.reflection import Inspector

from engine.compiler import Compiled
from engine.migrations_convert import MAX_LISTED, scan, shown
from engine.migrations_steps import PHASES, Plan, Step
from engine.model import App, Entity
from engine.tables import Schema, build_schema, child_table_name, entered_column, table_name

SYSTEM_PREFIX = "kiln_"


@dataclass
class Targets:
    """What applying needs beyond the plan: the definition's tables before and after the renames."""

    pre: Schema  # the definition's tables under the names the database has now
    target: Schema  # the definition's tables (compiled.schema)
    tables: dict[str, str] = field(default_factory=dict)  # pre table name -> target table name


class _Database:
    """The live database as the planner sees it, with the reflection it needs cached."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inspector: Inspector = inspect(conn)
        self.tables = set(self.inspector.get_table_names())
        self._columns: dict[str, set[str]] = {}

    def columns(self, name: str) -> set[str]:
        if name not in self.tables:
            return set()
        if name not in self._columns:
            self._columns[name] = {c["name"] for c in self.inspector.get_columns(name)}
        return self._columns[name]

    def index_names(self, name: str) -> set[str]:
        if name not in self.tables:
            return set()
        names = {i["name"] for i in self.inspector.get_indexes(name) if i.get("name")}
        return names | {u["name"] for u in self.inspector.get_unique_constraints(name) if u.get("name")}

    def primary_key(self, name: str) -> list[str]:
        return list(self.inspector.get_pk_constraint(name)["constrained_columns"])

    def count(self, name: str, col: str | None = None) -> int:
        t = table(name, column(col)) if col else table(name)
        counted = func.count(t.c[col]) if col else func.count()
        return int(self.conn.execute(select(counted).select_from(t)).scalar_one())

    def recorded_apps(self) -> set[str]:
        if "kiln_migrations" not in self.tables:
            return set()
        t = table("kiln_migrations", column("app"))
        return {row[0] for row in self.conn.execute(select(t.c.app).distinct())}


@dataclass
class _Renames:
    """The renames that apply, and the definition rewritten under the database's current names."""

    apps: list[App] = field(default_factory=list)
    computed: dict[tuple[str, str, str], str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)
    entity: dict[tuple[str, str], str] = field(default_factory=dict)  # (app, entity) -> name in db
    fields: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (app, entity, field) -> in db
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # pre table -> {pre col: col}


def _resolve_entity(db: _Database, ren: _Renames, app: App, e: Entity) -> Entity:
    db_name = e.name
    if e.renamed_from and e.renamed_from != e.name:
        old, new = table_name(app.name, e.renamed_from), table_name(app.name, e.name)
        if old in db.tables and new not in db.tables:
            if app.entity(e.renamed_from) is not None:
                ren.blocking.append(f"{app.name}.{e.name}: renamed_from '{e.renamed_from}' names an entity the definition still has")
            else:
                db_name = e.renamed_from
                ren.steps.append(Step("rename_table", old, new=new, detail={"entity": e.name}))
    ren.entity[(app.name, e.name)] = db_name
    main = table_name(app.name, db_name)
    main_columns = db.columns(main)
    renamed_columns: dict[str, str] = {}
    fields = []
    for f in e.fields:
        pre_name = f.name
        if f.renamed_from and f.renamed_from != f.name:
            old = f.renamed_from
            if f.is_multi:
                old_t, new_t = child_table_name(app.name, db_name, old), child_table_name(app.name, db_name, f.name)
                applies = old_t in db.tables and new_t not in db.tables
            else:
                applies = old in main_columns and f.name not in main_columns
            if applies and e.field(old) is not None:
                ren.blocking.append(f"{app.name}.{e.name}.{f.name}: renamed_from '{old}' names a field the definition still has")
            elif applies:
                pre_name = old
                if f.is_multi:
                    target = child_table_name(app.name, e.name, f.name)
                    ren.steps.append(Step("rename_table", child_table_name(app.name, db_name, old), new=target))
                else:
                    renamed_columns[old] = f.name
                    ren.steps.append(Step("rename_column", main, column=old, new=f.name))
        if f.is_multi and db_name != e.name and pre_name == f.name:
            old_t = child_table_name(app.name, db_name, f.name)
            if old_t in db.tables:
                ren.steps.append(Step("rename_table", old_t, new=child_table_name(app.name, e.name, f.name)))
        ren.fields[(app.name, e.name, f.name)] = pre_name
        fields.append(replace(f, name=pre_name) if pre_name != f.name else f)
    workflow = e.workflow
    if workflow is not None:
        states = []
        for s in workflow.states:
            pre_state = s.name
            if s.renamed_from and s.renamed_from != s.name and workflow.state(s.renamed_from) is None:
                old_col, new_col = entered_column(s.renamed_from), entered_column(s.name)
                if old_col in main_columns and new_col not in main_columns:
                    pre_state = s.renamed_from
                    renamed_columns[old_col] = new_col
                    ren.steps.append(Step("rename_column", main, column=old_col, new=new_col, detail={"state": s.name}))
            states.append(replace(s, name=pre_state) if pre_state != s.name else s)
        workflow = replace(workflow, states=tuple(states))
    ren.columns[main] = renamed_columns
    return replace(e, name=db_name, fields=tuple(fields), workflow=workflow)


def _resolve_renames(db: _Database, compiled: Compiled) -> _Renames:
    ren = _Renames()
    for name, capp in compiled.apps.items():
        app = capp.app
        entities = tuple(_resolve_entity(db, ren, app, e) for e in app.entities)
        ren.apps.append(replace(app, entities=entities))
        for (entity, fname), vtype in capp.expressions.computed_types.items():
            key = (name, ren.entity.get((name, entity), entity), ren.fields.get((name, entity, fname), fname))
            ren.computed[key] = vtype
    return ren


def _pair_tables(compiled: Compiled, ren: _Renames, pre: Schema) -> dict[str, str]:
    pairs: dict[str, str] = {name: name for name in compiled.schema.system}
    for (app, entity), tables in compiled.schema.entities.items():
        db_entity = ren.entity[(app, entity)]
        pre_tables = pre.entity(app, db_entity)
        pairs[pre_tables.main.name] = tables.main.name
        for fname, child in tables.children.items():
            pairs[pre_tables.children[ren.fields[(app, entity, fname)]].name] = child.name
    return pairs


def _pair_indexes(pre: Schema, target: Schema, tables: dict[str, str], columns: dict[str, dict[str, str]]) -> dict[str, tuple[str, Any]]:
    """pre index or unique constraint name -> (target table, the target Index/UniqueConstraint)."""
    pairs: dict[str, tuple[str, Any]] = {}
    for pre_name, target_name in tables.items():
        pre_t, target_t = pre.metadata.tables[pre_name], target.metadata.tables[target_name]
        renamed = columns.get(pre_name, {})

        def key(item: Any, mapping: dict[str, str]) -> tuple:
            return (type(item).__name__, bool(getattr(item, "unique", True)), tuple(mapping.get(c.name, c.name) for c in item.columns))

        wanted = {key(i, {}): i for i in [*target_t.indexes, *(c for c in target_t.constraints if isinstance(c, UniqueConstraint))]}
        for item in [*pre_t.indexes, *(c for c in pre_t.constraints if isinstance(c, UniqueConstraint))]:
            match = wanted.get(key(item, renamed))
            if match is not None and item.name:
                pairs[str(item.name)] = (target_name, match)
    return pairs


def _flatten(diffs: list) -> list[tuple]:
    flat: list[tuple] = []
    for diff in diffs:
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


class _Translator:
    """Turns Alembic's differences (pre-rename names) into steps."""

    def __init__(self, db: _Database, targets: Targets, indexes: dict[str, tuple[str, Any]], destructive: bool) -> None:
        self.db = db
        self.targets = targets
        self.indexes = indexes
        self.destructive = destructive
        self.steps: list[Step] = []
        self.blocking: list[str] = []
        self.removed_columns: dict[str, set[str]] = {}
        self.added_indexes: set[str] = set()
        self.created_tables: set[str] = set()
        self.removed_tables: set[str] = set()
        self.dialect = db.conn.dialect

    def type_name(self, type_: Any) -> str:
        return str(type_.compile(dialect=self.dialect))

    def run(self, diffs: list[tuple]) -> None:
        for diff in diffs:  # first: index steps depend on which tables are new, which columns go
            if diff[0] == "remove_column":
                self.removed_columns.setdefault(diff[2], set()).add(diff[3].name)
            elif diff[0] == "add_table":
                self.created_tables.add(diff[1].name)
            elif diff[0] == "remove_table":
                self.removed_tables.add(diff[1].name)
        for diff in diffs:
            handler = getattr(self, f"on_{diff[0]}", None)
            if handler is None:
                self.blocking.append(f"cannot migrate automatically: {diff[0]} {diff[1:]!r}"[:300])
            else:
                handler(*diff[1:])

    def on_add_table(self, t: Table) -> None:
        target = self.targets.target.metadata.tables[self.targets.tables.get(t.name, t.name)]
        items = [*target.indexes, *(c for c in target.constraints if isinstance(c, UniqueConstraint))]
        indexes = sorted(str(i.name) if i.name else f"unique({', '.join(c.name for c in i.columns)})" for i in items)
        self.steps.append(Step("create_table", target.name, detail={"columns": len(target.columns), "indexes": indexes}))

    def on_remove_table(self, t: Table) -> None:
        if self.destructive:
            self.steps.append(Step("drop_table", t.name, detail={"rows": self.db.count(t.name)}))
        else:
            self.steps.append(Step("keep_table", t.name))

    def on_add_column(self, _schema: Any, tname: str, col: Column) -> None:
        self.steps.append(Step("add_column", tname, column=col.name, detail={"type": self.type_name(col.type)}))
        if not col.nullable and self.db.count(tname):
            self.blocking.append(f"{tname}.{col.name}: a NOT NULL column cannot be added to a table that has rows")

    def on_remove_column(self, _schema: Any, tname: str, col: Column) -> None:
        if self.destructive:
            self.steps.append(Step("drop_column", tname, column=col.name, detail={"values": self.db.count(tname, col.name)}))
        else:
            self.steps.append(Step("keep_column", tname, column=col.name))

    def on_modify_type(self, _schema: Any, tname: str, cname: str, _info: dict, existing: Any, new: Any) -> None:
        result = scan(self.db.conn, tname, self.db.primary_key(tname), cname, new)
        detail = {
            "from": self.type_name(existing),
            "to": self.type_name(new),
            "rows": result.rows,
            "failed": result.failed,
            "failures": [f.as_json() for f in result.failures],
        }
        self.steps.append(Step("change_type", tname, column=cname, detail=detail))
        if result.failed:
            listed = ", ".join(f"id {f.key}: {shown(f.value)}" for f in result.failures)
            more = f" and {result.failed - len(result.failures)} more" if result.failed > len(result.failures) else ""
            self.blocking.append(
                f"{tname}.{cname}: {result.failed} of {result.rows} values do not convert from {detail['from']} to "
                f"{detail['to']} ({listed}{more}); fix those records or keep the old type"
            )

    def on_modify_nullable(self, _schema: Any, tname: str, cname: str, _info: dict, _existing: bool, new: bool) -> None:
        self.steps.append(Step("alter_nullable", tname, column=cname, detail={"nullable": new}))
        if not new:
            t = table(tname, column(cname))
            nulls = self.db.conn.execute(select(func.count()).select_from(t).where(t.c[cname].is_(None))).scalar_one()
            if nulls:
                self.blocking.append(f"{tname}.{cname}: {nulls} rows have no value, so it cannot become NOT NULL")

    def _kept(self, tname: str, columns: list[str]) -> bool:
        return not self.destructive and bool(columns) and set(columns) <= self.removed_columns.get(tname, set())

    def _added(self, kind: str, item: Index | UniqueConstraint) -> None:
        if item.table.name in self.created_tables:  # type: ignore[union-attr]
            return  # created with its table
        target_table, target = self.indexes.get(str(item.name), (self.targets.tables.get(item.table.name, item.table.name), item))  # type: ignore[union-attr]
        columns = [c.name for c in target.columns]
        self.added_indexes.add(str(item.name))
        unique = kind == "add_unique" or bool(getattr(target, "unique", False))
        self.steps.append(Step(kind, target_table, new=str(target.name), detail={"columns": columns, "unique": unique}))
        if unique:
            self._check_duplicates(item.table.name, [c.name for c in item.columns])  # type: ignore[union-attr]

    def _check_duplicates(self, tname: str, columns: list[str]) -> None:
        if tname not in self.db.tables:
            return
        t = table(tname, *(column(c) for c in columns))
        cols = [t.c[c] for c in columns]
        query = select(*cols, func.count()).where(and_(*(c.is_not(None) for c in cols))).group_by(*cols).having(func.count() > 1)
        duplicates = list(self.db.conn.execute(query.limit(MAX_LISTED)))
        if duplicates:
            listed = ", ".join(f"{shown(r[0] if len(columns) == 1 else tuple(r[:-1]))} ({r[-1]} rows)" for r in duplicates)
            self.blocking.append(f"{tname}.{', '.join(columns)} cannot become unique: duplicate values {listed}")

    def on_add_index(self, index: Index) -> None:
        self._added("add_index", index)

    def on_add_constraint(self, constraint: Any) -> None:
        if not isinstance(constraint, UniqueConstraint):
            self.blocking.append(f"cannot migrate automatically: add constraint {constraint.name} on {constraint.table.name}")
            return
        self._added("add_unique", constraint)

    def _removed(self, kind: str, item: Index | UniqueConstraint) -> None:
        tname = item.table.name  # type: ignore[union-attr]
        columns = [c.name for c in item.columns]
        if tname in self.removed_tables:
            return  # kept or dropped with its table
        if not self._kept(tname, columns):  # an index of a kept column stays with it
            self.steps.append(Step(kind, tname, new=str(item.name), detail={"columns": columns}))

    def on_remove_index(self, index: Index) -> None:
        self._removed("drop_index", index)

    def on_remove_constraint(self, constraint: Any) -> None:
        if not isinstance(constraint, UniqueConstraint):
            self.blocking.append(f"cannot migrate automatically: drop constraint {constraint.name} on {constraint.table.name}")
            return
        self._removed("drop_unique", constraint)

    def index_renames(self) -> None:
        """Indexes named after a renamed table or column get the name the definition gives them."""
        for pre_name, (target_table, target) in sorted(self.indexes.items()):
            pre_table = next((p for p, t in self.targets.tables.items() if t == target_table), target_table)
            if pre_name == target.name or pre_name in self.added_indexes or pre_name not in self.db.index_names(pre_table):
                continue
            what = "unique constraint" if isinstance(target, UniqueConstraint) else "index"
            columns = [c.name for c in target.columns]
            self.steps.append(Step("rename_index", target_table, column=pre_name, new=str(target.name), detail={"what": what, "columns": columns}))


def _state_moves(db: _Database, compiled: Compiled, ren: _Renames) -> tuple[list[Step], list[str]]:
    """Records in states the definition no longer has: moved where it says, else refused."""
    steps: list[Step] = []
    blocking: list[str] = []
    for app_name, capp in compiled.apps.items():
        for e in capp.app.entities:
            workflow = e.workflow
            main = table_name(app_name, ren.entity[(app_name, e.name)])
            if workflow is None or "state" not in db.columns(main):
                continue
            renamed = {s.renamed_from: s.name for s in workflow.states if s.renamed_from}
            mapped = dict(workflow.state_map)
            t = table(main, column("state"))
            counts = db.conn.execute(select(t.c.state, func.count()).group_by(t.c.state).order_by(t.c.state))
            for value, records in counts:
                if value is None or value in workflow.state_names:
                    continue
                to = renamed.get(value) or mapped.get(value)
                where = f"{records} records of {app_name}.{e.name} are in state '{value}'"
                if to is None:
                    blocking.append(
                        f"{where}, which the definition no longer has: add `renamed_from: {value}` to the state that "
                        f"replaces it, or map it under the workflow with `state_map: {{{value}: NEW_STATE}}`"
                    )
                elif to not in workflow.state_names:
                    blocking.append(f"{where}: state_map sends them to '{to}', which is not a state of the workflow")
                else:
                    # A mapped (not renamed) state leaves its entered_ column behind; its times carry over.
                    pre_to = next((s.renamed_from for s in workflow.states if s.name == to and entered_column(s.renamed_from or "") in ren.columns.get(main, {})), to)
                    copy = entered_column(value) if value not in renamed and entered_column(value) in db.columns(main) else None
                    detail = {"records": records, "entered_from": copy, "entered_to": entered_column(pre_to)}
                    steps.append(Step("map_states", main, column=value, new=to, detail=detail))
    return steps, blocking


def build(conn: Connection, compiled: Compiled, allow_destructive: bool = False) -> tuple[Plan, Targets]:
    """The plan for ``compiled`` against the database of ``conn``; reads only."""
    db = _Database(conn)
    ren = _resolve_renames(db, compiled)
    pre = build_schema(ren.apps, ren.computed) if ren.steps else compiled.schema
    targets = Targets(pre, compiled.schema, _pair_tables(compiled, ren, pre))
    indexes = _pair_indexes(pre, compiled.schema, targets.tables, ren.columns)
    owners = set(compiled.apps) | db.recorded_apps()

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        # Only the engine's tables: the system tables and those of apps it compiled or migrated.
        if type_ != "table" or name is None:
            return True
        return name.startswith(SYSTEM_PREFIX) or name.split("__", 1)[0] in owners and "__" in name

    context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
    translator = _Translator(db, targets, indexes, allow_destructive)
    translator.run(_flatten(compare_metadata(context, pre.metadata)))
    translator.index_renames()
    moves, move_blocking = _state_moves(db, compiled, ren)
    steps = [*translator.steps, *ren.steps, *moves]
    # Child tables go before their parents when dropped; otherwise steps keep their found order.
    steps.sort(key=lambda s: (PHASES.index(s.kind), -s.table.count("__") if s.kind == "drop_table" else 0))
    plan = Plan(steps, [*ren.blocking, *translator.blocking, *move_blocking], allow_destructive)
    return plan, targets
