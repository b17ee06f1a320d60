"""Records: create, get, update and list, with every check of SPEC.md section 2.

The pages, the API, the rules and the demo loader all change records through this service. A
create or update runs in one transaction: the row, its child rows (multi-valued fields), its auto
number and its audit entry commit together or not at all. Reads go through :mod:`engine.queries`,
the one query layer that applies the actor's row scope.

Records are handed out as JSON-shaped dicts (users as usernames, datetimes ISO 8601 with offset,
decimals as strings); inside the engine a record is a dict of Python values with user ids
(see :mod:`engine.values`), which is what expressions evaluate against.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine import approvals, audit, outbox, permissions, queries, rollups, rules, sla, tags
from engine.actors import Actor
from engine.db import Prepared, PreparedRows, insert_rows, write
from engine.errors import (
    Conflict,
    Forbidden,
    NotFound,
    StaleVersion,
    ValidationFailed,
    did_you_mean,
    not_visible,
)
from engine.messages import Msg
from engine.model import Entity, Expr
from engine.numbering import NumberFormat, make_number
from engine.recordcheck import RecordChecker
from engine.rules import Change
from engine.tables import SYSTEM_COLUMNS, EntityTables, entered_column
from engine.values import BadValue, parse, to_json, trim_decimal

if TYPE_CHECKING:
    from engine.compiler import CompiledApp
    from engine.instance import Instance

READONLY_SYSTEM = frozenset(SYSTEM_COLUMNS)


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back.
RETRYABLE = frozenset({"40P01", "40001"})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Records:
    """The record services of one app."""

    def __init__(self, instance: Instance, compiled: CompiledApp) -> None:
        self.instance = instance
        self.compiled = compiled
        self.app = compiled.app
        self.schema = instance.compiled.schema
        self.timezone = ZoneInfo(self.app.timezone)
        self.users = instance.users
        self.query = queries.Query(self)
        self.checker = RecordChecker(self)

    # -- lookups -------------------------------------------------------------------------------

    def entity(self, name: str) -> Entity:
        entity = self.app.entity(name)
        if entity is None:
            raise NotFound(f"no entity '{name}' in app {self.app.name}")
        return entity

    def tables(self, entity: Entity | str) -> EntityTables:
        name = entity if isinstance(entity, str) else entity.name
        return self.schema.entity(self.app.name, name)

    def expr(self, expr: Expr) -> Any:
        return self.compiled.expressions[expr]

    # -- reading -------------------------------------------------------------------------------

    def load(self, conn: Connection, entity: Entity, record_id: int, lock: bool = False) -> dict[str, Any] | None:
        """The stored record as Python values (user ids), or None; ``lock`` takes a row lock."""
        tables = self.tables(entity)
        query = select(tables.main).where(tables.main.c.id == record_id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            return None
        records = [dict(row)]
        self.attach_children(conn, entity, records)
        return records[0]

    def attach_children(
        self, conn: Connection, entity: Entity, records: list[dict[str, Any]], only: Iterable[str] | None = None
    ) -> None:
        """Fill multi-valued fields of ``records`` (those in ``only``, if given) with one query per
        child table (no N+1)."""
        tables = self.tables(entity)
        children = {n: c for n, c in tables.children.items() if only is None or n in only}
        if not children or not records:
            return
        by_id = {r["id"]: r for r in records}
        for name, child in children.items():
            for r in records:
                r[name] = []
            rows = conn.execute(
                select(child.c.record_id, child.c.value).where(child.c.record_id.in_(list(by_id))).order_by(child.c.record_id, child.c.position)
            )
            for record_id, value in rows:
                by_id[record_id][name].append(value)

    def get(self, entity_name: str, record_id: int, actor: Actor) -> dict[str, Any]:
        entity = self.entity(entity_name)
        with self.instance.engine.connect() as conn:
            record = self.query.one(conn, entity, actor, record_id)
            if record is None:
                raise not_visible(entity, record_id)
            return self.to_api(conn, entity, [record], actor)[0]

    def list(
        self, entity_name: str, actor: Actor, *, where: str | None = None, filters: Mapping[str, Any] | None = None,
        search: str | None = None, sort: str = "-id", limit: int = 50, cursor: str | None = None,
        before: str | None = None,
    ) -> queries.Page:  # fmt: skip
        entity = self.entity(entity_name)
        spec = queries.ListSpec(
            where=where, filters=dict(filters or {}), search=search, sort=sort, limit=limit, cursor=cursor, before=before
        )
        with self.instance.engine.connect() as conn:
            page = self.query.page(conn, entity, actor, spec)
            page.items = self.to_api(conn, entity, page.items, actor)
            return page

    def count(self, entity_name: str, actor: Actor, *, where: str | None = None, filters: Mapping[str, Any] | None = None,
              search: str | None = None, cap: int = queries.COUNT_CAP) -> tuple[int, bool]:  # fmt: skip
        entity = self.entity(entity_name)
        spec = queries.ListSpec(where=where, filters=dict(filters or {}), search=search)
        with self.instance.engine.connect() as conn:
            return self.query.count(conn, entity, actor, spec, cap)

    def history(self, entity_name: str, record_id: int, actor: Actor) -> list[dict[str, Any]]:
        entity = self.entity(entity_name)
        with self.instance.engine.connect() as conn:
            if self.query.one(conn, entity, actor, record_id) is None:
                raise not_visible(entity, record_id)
            entries = audit.history(conn, self.schema.system["kiln_audit"], self.app.name, entity.name, record_id)
        hidden = permissions.hidden_fields(entity, actor)
        for entry in entries:
            entry["changes"] = {k: v for k, v in entry["changes"].items() if k not in hidden}
        return entries

    def to_api(
        self, conn: Connection, entity: Entity, records: list[dict[str, Any]], actor: Actor, *, extras: bool = True
    ) -> list[dict[str, Any]]:
        """Records as JSON for this actor: hidden and disabled fields left out, users by name;
        with ``extras``, their system tags, flags and SLA clocks too (a query each)."""
        hidden = permissions.hidden_fields(entity, actor)
        user_fields = [f.name for f in entity.fields if f.type == "user"] + ["created_by"]
        ids = {v for r in records for name in user_fields for v in _as_list(r.get(name)) if v is not None}
        names = self.users.usernames(conn, ids)
        shown = [f for f in entity.fields if not f.disabled and f.name not in hidden]
        out = []
        for r in records:
            item: dict[str, Any] = {"id": r["id"]}
            if entity.number:
                item["number"] = r.get("number")
            if entity.workflow:
                item["state"] = r.get("state")
            item["created_at"] = to_json(r.get("created_at"))  # .get: a page may read fewer columns
            item["created_by"] = names.get(r.get("created_by"))
            item["updated_at"] = to_json(r.get("updated_at"))
            item["version"] = r.get("version")
            for f in shown:
                value = r.get(f.name)
                if f.type == "user":
                    value = [names.get(v) for v in value] if isinstance(value, list) else names.get(value)
                elif f.is_computed:
                    value = trim_decimal(value)
                item[f.name] = to_json(value)
            for state in entity.states:
                item[entered_column(state)] = to_json(r.get(entered_column(state)))
            out.append(item)
        if extras:
            tags.attach(conn, self, entity, out)  # system tags and flags (rules' add_tag, mark)
            sla.attach(conn, self, entity, out, actor)  # the record's SLA clocks, for entities with some
        return out

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction; unique-constraint races surface as a validation error, and a
        deadlock PostgreSQL broke (two changes locking the same rows in opposite order, e.g.
        dashboard rollup counters) as a conflict to try again: rolled back, never a 500."""
        try:
            with write(self.instance.engine) as conn:
                try:
                    yield conn
                finally:
                    queued = conn.info.pop(outbox.QUEUED, False)
        except IntegrityError as exc:
            raise ValidationFailed("a value must be unique but is already used", _unique_fields(exc)) from None
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE:
                raise
            raise Conflict("the change met a concurrent one and was not made; try again") from None
        if queued:  # committed with notifications: wake the deliverer (engine/jobs.py)
            self.instance.outbox_committed()

    def create(self, entity_name: str, values: Mapping[str, Any], actor: Actor, now: dt.datetime | None = None) -> dict[str, Any]:
        entity = self.entity(entity_name)
        with self.transaction() as conn:
            record = self.create_in(conn, entity, values, actor, now or utcnow())
            return self.to_api(conn, entity, [record], actor)[0]

    def create_in(self, conn: Connection, entity: Entity, values: Mapping[str, Any], actor: Actor, now: dt.datetime) -> dict[str, Any]:
        """Create inside the caller's transaction (rules use this to create records of other
        entities); returns the stored record as Python values."""
        if not permissions.can_create(entity, actor):
            raise Forbidden(f"you may not create {entity.name} records")
        incoming = self.parse_input(conn, entity, values, actor, creating=True)
        record: dict[str, Any] = {f.name: ([] if f.is_multi else None) for f in entity.fields}
        record.update(incoming)
        record.update(created_at=now, updated_at=now, created_by=actor.id, version=1, id=None, number=None, state=None)
        if entity.workflow:
            record["state"] = entity.workflow.initial
            for state in entity.states:
                record[entered_column(state)] = None
            record[entered_column(entity.workflow.initial)] = now
        self.checker.apply_defaults(conn, entity, record, incoming, actor, now)
        self.checker.compute(conn, entity, record, actor, now)
        self.checker.validate(conn, entity, record, None, actor, now)
        if entity.number:
            record["number"] = make_number(
                conn, self.schema.system["kiln_sequences"], self.app.name, entity.name, NumberFormat(entity.number),
                record, now, self.app.timezone,
            )  # fmt: skip
        changes = audit.diff({}, self._audit_view(conn, entity, record), self._audited_fields(entity))
        created = audit.entry(app=self.app.name, entity=entity.name, record_id=None, action="create", actor=actor, at=now, changes=changes)
        # The rules of the creation change the record before it is stored (engine/rules.py: create)
        record = rules.create(self, conn, Change(entity, None, record, actor, now), created)
        approvals.on_change(self, conn, Change(entity, None, record, actor, now))
        return record

    def insert(
        self, conn: Connection, entity: Entity, record: dict[str, Any], entries: list[dict[str, Any]], actor: Actor, now: dt.datetime
    ) -> dict[str, Any]:  # fmt: skip
        """Store a new record as it is now (its creation's rules may have changed it in memory):
        the row, its multi-valued fields, its audit ``entries`` (the creation's first; their
        ``record_id`` is filled in here), the dashboards' counts and the SLA clocks its creation
        starts. Returns the record with its id."""
        tables = self.tables(entity)
        row = {c.name: record.get(c.name) for c in tables.main.columns if c.name != "id"}
        record = {**record, "id": _insert_row(tables.main).execute(conn, row).scalar_one()}
        tags.created(conn, self, entity, record["id"])
        for entry in entries:
            if entry["record_id"] is None:
                entry["record_id"] = record["id"]
        trail = audit.to_insert(conn, self.schema.system["kiln_audit"], entries)
        insert_rows(conn, [*self._child_rows(tables, record, entity.fields), *([trail] if trail else [])])
        self._count_and_time(conn, Change(entity, None, record, actor, now))
        return record

    def update(
        self, entity_name: str, record_id: int, changes: Mapping[str, Any], version: int | None, actor: Actor,
        now: dt.datetime | None = None, comment: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        entity = self.entity(entity_name)
        with self.transaction() as conn:
            record = self.update_in(conn, entity, record_id, changes, version, actor, now or utcnow(), comment)
            return self.to_api(conn, entity, [record], actor)[0]

    def update_in(
        self, conn: Connection, entity: Entity, record_id: int, changes: Mapping[str, Any], version: int | None,
        actor: Actor, now: dt.datetime, comment: str | None = None, *, move_to: str | None = None,
        transition: str | None = None, authorized: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Update inside the caller's transaction. ``version`` is the version the client saw;
        None is allowed only for the system (rules act on the current version).

        The workflow moves a record with ``move_to`` (the new state, whose ``entered_<state>_at``
        is set to ``now``) and names the ``transition``; it has checked the transition's own
        roles, so it passes ``authorized=True`` to skip the role's update scope."""
        if version is None and not actor.is_system:
            raise ValidationFailed("the record's version is required (If-Match)", {"version": "required"})
        if self.query.one(conn, entity, actor, record_id) is None:
            raise not_visible(entity, record_id)
        before = self.load(conn, entity, record_id, lock=True)
        if before is None:
            raise NotFound(f"{entity.name} {record_id} does not exist")
        if version is not None and before["version"] != version:
            raise StaleVersion(
                f"{entity.name} {record_id} was changed by someone else (version {before['version']}, you sent {version}); reload and try again"
            )
        if not authorized and not self.query.may_update(conn, entity, actor, record_id):
            raise Forbidden(f"you may not change {entity.name} {record_id} in state {before.get('state')}")
        incoming = self.parse_input(conn, entity, changes, actor, creating=False)
        self.checker.check_readonly_if(conn, entity, before, incoming, actor, now)
        record = dict(before)
        record.update(incoming)
        system_values: dict[str, Any] = {}
        if move_to is not None:
            record["state"] = system_values["state"] = move_to
            # never before the record's creation (a clock behind the creating server's): the
            # dashboards' backlog counts a record closed before an instant as created before it
            entered = max(now, before["created_at"])
            record[entered_column(move_to)] = system_values[entered_column(move_to)] = entered
        self.checker.compute(conn, entity, record, actor, now)
        changed = [f for f in entity.fields if record.get(f.name) != before.get(f.name)]
        if not changed and move_to is None:
            return record
        self.checker.validate(conn, entity, record, before, actor, now)
        record["version"] = before["version"] + 1
        record["updated_at"] = now
        tables = self.tables(entity)
        values = {f.name: record[f.name] for f in changed if not f.is_multi}
        written = _write_row(conn, tables.main, record_id, before["version"], {**values, **system_values, "version": record["version"], "updated_at": now})
        if written != 1:  # a concurrent writer got there first (SQLite has no row lock)
            raise StaleVersion(f"{entity.name} {record_id} was changed by someone else; reload and try again")
        self._write_children(conn, tables, record, changed)
        names = (["state"] if move_to is not None else []) + [f.name for f in changed]
        action = f"transition:{transition}" if transition else "update"
        self.audit_update(conn, entity, before, record, names, actor, now, action=action, comment=comment)
        record = self.after_change(conn, Change(entity, before, record, actor, now, transition=transition)) or record
        return record

    def audit_update(
        self, conn: Connection, entity: Entity, before: Mapping[str, Any], after: Mapping[str, Any], names: list[str],
        actor: Actor, now: dt.datetime, *, action: str = "update", comment: str | None = None,
    ) -> None:  # fmt: skip
        """The audit entry of one change of ``names`` from ``before`` to ``after``."""
        audit.record_change(
            conn, self.schema.system["kiln_audit"], app=self.app.name, entity=entity.name, record_id=after["id"],
            action=action, actor=actor, at=now, changes=self.audit_changes(conn, entity, before, after, names), comment=comment,
        )  # fmt: skip

    def audit_changes(
        self, conn: Connection, entity: Entity, before: Mapping[str, Any], after: Mapping[str, Any], names: list[str]
    ) -> dict[str, list[Any]]:  # fmt: skip
        """``{field: [before, after]}`` of the ``names`` that changed, as the trail shows them."""
        if entity.user_field_names.isdisjoint(names) and entity.computed_names.isdisjoint(names):
            return audit.diff(before, after, names)  # a rule's one-field change, the hot case: shown as stored
        return audit.diff(self._audit_view(conn, entity, before, names), self._audit_view(conn, entity, after, names), names)

    def write_staged(
        self, conn: Connection, entity: Entity, before: dict[str, Any], record: dict[str, Any], actor: Actor, now: dt.datetime
    ) -> dict[str, Any]:
        """Write what rules changed in ``record`` since ``before`` as one update, then what that
        update sets off. The rules fired by one event change their record in memory, each change
        with its own audit entry (engine/rules.py), and come here once for all of them: a ticket
        that five rules tag and route is one row write, not five."""
        changed = [f for f in entity.fields if record.get(f.name) != before.get(f.name)]
        if not changed:
            return record
        self.checker.validate(conn, entity, record, before, actor, now)
        record = {**record, "version": before["version"] + 1, "updated_at": now}
        tables = self.tables(entity)
        values = {f.name: record[f.name] for f in changed if not f.is_multi}
        written = _write_row(conn, tables.main, record["id"], before["version"], {**values, "version": record["version"], "updated_at": now})
        if written != 1:
            raise StaleVersion(f"{entity.name} {record['id']} was changed by someone else; reload and try again")
        self._write_children(conn, tables, record, changed)
        return self.after_change(conn, Change(entity, before, record, actor, now)) or record

    def after_change(self, conn: Connection, change: Change) -> dict[str, Any] | None:
        """Everything a change sets off, in its own transaction: the entity's rules (which may
        change records themselves, and so come back here), then the approvals and carbon copies
        the change opens (safe to run twice for one change). The record as the rules left it
        when one acted, else None."""
        self._count_and_time(conn, change)  # first: a rule moving the record on then stops the clock
        left = rules.run(self, conn, change)
        approvals.on_change(self, conn, change)
        return left

    def _count_and_time(self, conn: Connection, change: Change) -> None:
        """The dashboards' daily counts and the record's SLA clocks for ``change``, in its
        transaction (a creation's once its rules have run, engine/rules.py: create)."""
        rollups.on_change(self, conn, change)
        sla.on_change(self, conn, change)

    def parse_input(self, conn: Connection, entity: Entity, values: Mapping[str, Any], actor: Actor, creating: bool) -> dict[str, Any]:
        """Input values as Python values; every bad field is reported at once."""
        if not isinstance(values, dict | Mapping):  # dict first: the ABC's check is slow
            raise ValidationFailed("the body must be an object of field values")
        errors: dict[str, str] = {}
        parsed: dict[str, Any] = {}
        readonly = permissions.readonly_fields(entity, actor)
        for name, raw in values.items():
            field = entity.field(name)
            if name in READONLY_SYSTEM or (name.startswith("entered_") and name.endswith("_at")):
                errors[name] = Msg("set by the system; it cannot be changed") if name != "state" else Msg("changes only through a transition")
            elif field is None:
                errors[name] = f"unknown field{_suggest(name, entity)}"
            elif field.disabled:
                errors[name] = Msg("this field is disabled")
            elif field.is_computed:
                errors[name] = Msg("computed from other fields; it cannot be set")
            elif name in readonly:
                errors[name] = Msg("your role may not change this field")
            else:
                try:
                    parsed[name] = parse(field, raw, self.timezone)
                except BadValue as exc:
                    errors[name] = exc.message
                    continue
                if _out_of_range(parsed[name]):
                    # past 64 bits no column holds it (the database would fail, not refuse)
                    errors[name] = Msg("the number is out of range")
                    del parsed[name]
        if errors:
            raise ValidationFailed("some values are not valid", errors)
        self.checker.resolve_references(conn, entity, parsed)
        return parsed

    def _write_children(self, conn: Connection, tables: EntityTables, record: Mapping[str, Any], fields: Any) -> None:
        """Replace the values of the multi-valued ``fields`` of a stored record."""
        multi = [f for f in fields if f.is_multi]
        for f in multi:
            _child_statements(tables.children[f.name])[0].execute(conn, {"k_record": record["id"]})
        insert_rows(conn, self._child_rows(tables, record, multi))

    def _child_rows(
        self, tables: EntityTables, record: Mapping[str, Any], fields: Any
    ) -> list[tuple[PreparedRows, list[dict[str, Any]]]]:  # fmt: skip
        """The rows of the record's multi-valued ``fields``, per child table, as insert_rows takes them."""
        return [
            (_child_statements(tables.children[f.name])[1], [{"record_id": record["id"], "position": i, "value": v} for i, v in enumerate(record.get(f.name) or [])])
            for f in fields if f.is_multi
        ]  # fmt: skip

    def _audited_fields(self, entity: Entity) -> list[str]:
        return ["number", "state", *[f.name for f in entity.fields]]

    def _audit_view(self, conn: Connection, entity: Entity, record: Mapping[str, Any], names: list[str] | None = None) -> Mapping[str, Any]:
        """The record (or its fields ``names``) as the audit trail shows it: users by name,
        computed decimals trimmed."""
        view = dict(record) if names is None else {n: record.get(n) for n in names}
        user_fields = [f for f in entity.user_fields if f.name in view]
        ids = {v for f in user_fields for v in _as_list(record.get(f.name)) if v is not None}
        usernames = self.users.usernames(conn, ids) if ids else {}
        for f in user_fields:
            value = record.get(f.name)
            view[f.name] = [usernames.get(v) for v in value] if isinstance(value, list) else usernames.get(value)
        for name in entity.computed_names & view.keys():
            view[name] = trim_decimal(view[name])
        return view


@functools.lru_cache(maxsize=1024)
def _insert_row(table: Table) -> Prepared:
    """The INSERT of a whole main-table row, compiled once per table (the create hot path)."""
    return Prepared(insert(table).returning(table.c.id), [c.name for c in table.columns if c.name != "id"])


def _write_row(conn: Connection, table: Table, record_id: int, version: int, values: dict[str, Any]) -> int:
    """Set ``values`` on the row if it is still at ``version`` (the version check); the rows
    written, 0 when a concurrent writer got there first."""
    columns = tuple(values)
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(k_id=record_id, k_version=version)
    return _update_row(table, columns).execute(conn, params).rowcount


@functools.lru_cache(maxsize=4096)
def _update_row(table: Table, columns: tuple[str, ...]) -> Prepared:
    """The UPDATE of some columns of one row, compiled once per table and column list (the
    update and rule paths write a few columns of one row, again and again)."""
    return Prepared(
        update(table)
        .where(table.c.id == bindparam("k_id"), table.c.version == bindparam("k_version"))
        .values({name: bindparam(f"v_{name}", type_=table.c[name].type) for name in columns})
    )


@functools.lru_cache(maxsize=1024)
def _child_statements(child: Table) -> tuple[Prepared, PreparedRows]:
    """The DELETE of a record's values in a multi-valued field's table, and the INSERT of them."""
    remove = Prepared(delete(child).where(child.c.record_id == bindparam("k_record")))
    return remove, PreparedRows(child, ["record_id", "position", "value"])


def _out_of_range(value: Any) -> bool:
    """An integer (or a list holding one) that no 64-bit column holds."""
    if isinstance(value, list):
        return any(_out_of_range(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _suggest(name: str, entity: Entity) -> str:
    return did_you_mean(name, [f.name for f in entity.active_fields])


def _unique_fields(exc: IntegrityError) -> dict[str, str]:
    """The field a unique-constraint error names: SQLite says ``table.column``, PostgreSQL
    ``Key (column)=(value)``."""
    text = str(exc.orig)
    names = re.findall(r"UNIQUE constraint failed: [\w.]+?\.(\w+)", text) or re.findall(r"Key \((\w+)\)=", text)
    return {name: Msg("already used by another record") for name in names} or {"": Msg("already used by another record")}
