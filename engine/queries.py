"""The one query layer: every read of records goes through :class:`Query`.

It applies the actor's row scope (:mod:`engine.permissions`) to the filters, the search, the
``where`` expression, the sort and the keyset cursor of a list, and to counts. Lists page by keyset
(``(sort value, id)`` after the last row seen, never OFFSET) over indexes that end in ``id``, and
counts stop at a cap, so a page over a million rows reads about one page of index entries.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
)

from engine import permissions
from engine.actors import Actor
from engine.db import Prepared, UTCDateTime
from engine.errors import DefinitionError, Loc, RecordError
from engine.expressions import SqlContext, compile_expression
from engine.expressions.nodes import FieldRef, walk
from engine.model import TEXT_TYPES, Entity, Expr
from engine.tables import SYSTEM_COLUMNS, entered_column
from engine.values import BadValue, parse, to_json

if TYPE_CHECKING:
    from engine.records import Records

COUNT_CAP = 10_000
MAX_LIMIT = 500
MAX_PAGE_SHAPES = 512  # list statements kept per app (Query._reused_page)


class BadQuery(RecordError):
    status = 400
    code = "bad_query"


@dataclass
class ListSpec:
    where: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    search: str | None = None
    sort: str = "-id"
    limit: int = 50
    cursor: str | None = None  # the page after this (value, id)
    before: str | None = None  # the page before this (value, id): the "previous" link
    columns: tuple[str, ...] | None = None  # the fields to read (None: all); id and the sort key always
    now: dt.datetime | None = None  # the instant ``now()``/``today()`` mean (None: the clock's now)


class ColumnFilter(NamedTuple):
    """``column IN (values)``; with no values, ``column IS NULL`` for a field's filter (an empty
    value asked for), no row for the system columns' (e.g. a creator who does not exist)."""

    column: str
    values: list[Any]
    empty_is_null: bool

    def clause(self, column: Any, values: Any) -> ColumnElement[bool]:
        if not self.values:
            return column.is_(None) if self.empty_is_null else false()
        return column.in_(values)


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None = None  # a ``before`` for the previous page, if there is one


def day_range(name: str, low: str, high: str, error: type[RecordError] = BadQuery) -> tuple[str, str] | None:
    """A ``name.from``/``name.to`` pair of ISO days as a range, None when both are empty; a value
    that is not a day is ``error`` (the list's 400, a dashboard's own)."""
    for day in (low, high):
        if day:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise error(f"{name}: expected a date like 2026-02-18", {name: "invalid date"}) from None
    return (low, high) if low or high else None


def day_range_conditions(path: str, low: str, high: str, is_date: bool, tz: dt.tzinfo) -> list[str]:
    """The range as conditions of the expression language, both days included: a date field
    compares with the days, a datetime with the local midnights of the app's timezone (the days
    were checked by :func:`day_range`, so no user text reaches the expression)."""
    conditions = []
    if low:
        conditions.append(f'{path} >= "{low if is_date else _midnight(dt.date.fromisoformat(low), tz)}"')
    if high:
        if is_date:
            conditions.append(f'{path} <= "{high}"')
        else:
            conditions.append(f'{path} < "{_midnight(dt.date.fromisoformat(high) + dt.timedelta(days=1), tz)}"')
    return conditions


def _midnight(day: dt.date, tz: dt.tzinfo) -> str:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz).isoformat()


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([to_json(v) for v in values]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadQuery("the cursor is not valid; start again from the first page", {"cursor": "invalid"}) from None
    if not isinstance(values, list) or len(values) != 2:
        raise BadQuery("the cursor is not valid; start again from the first page", {"cursor": "invalid"})
    return values


class Query:
    def __init__(self, records: Records) -> None:
        self.records = records
        # Link titles for actors who read every row: one statement per (entity, title columns,
        # number of ids), reused, so SQLAlchemy neither builds it nor runs it per page.
        self._title_statements: dict[tuple[str, tuple[str, ...], int], Prepared] = {}
        self._pages: dict[tuple[Any, ...], Prepared] = {}  # list statements by shape (_reused_page)

    # -- scope ---------------------------------------------------------------------------------

    def _sql_context(self, entity: Entity, actor: Actor, now: dt.datetime | None = None) -> SqlContext:
        return SqlContext(self.records.schema, self.records.app, entity, now or dt.datetime.now(dt.UTC), actor)

    def _team_users(self, actor: Actor) -> Any:
        system = self.records.schema.system
        teams, members = system["kiln_teams"], system["kiln_team_members"]
        return (
            select(members.c.user_id)
            .join(teams, teams.c.id == members.c.team_id)
            .where(teams.c.app == self.records.app.name, teams.c.name.in_(sorted(actor.teams)))
        )

    def _parts(self, entity: Entity, actor: Actor) -> tuple[Any, Any, Any]:
        tables = self.records.tables(entity)

        def expr_clause(expr: Expr) -> ColumnElement[bool]:
            return self.records.expr(expr).clause(self._sql_context(entity, actor))

        return tables, lambda: self._team_users(actor), expr_clause

    def readable(self, entity: Entity, actor: Actor) -> ColumnElement[bool]:
        """The actor's rows as a WHERE clause (``true()``, which SQLAlchemy leaves out beside other
        conditions, when the actor reads every row)."""
        clause = self.read_clause(entity, actor)
        return true() if clause is None else clause

    def read_clause(self, entity: Entity, actor: Actor) -> ColumnElement[bool] | None:
        """The actor's rows as a WHERE clause, None when the actor reads every row."""
        tables, team_users, expr_clause = self._parts(entity, actor)
        return permissions.read_clause(entity, tables.main, actor, team_users, expr_clause, tables.children)

    def one(self, conn: Connection, entity: Entity, actor: Actor, record_id: Any) -> dict[str, Any] | None:
        try:
            record_id = int(record_id)
        except (TypeError, ValueError):
            return None
        table = self.records.tables(entity).main
        row = conn.execute(select(table).where(table.c.id == record_id, self.readable(entity, actor))).mappings().first()
        if row is None:
            return None
        records = [dict(row)]
        self.records.attach_children(conn, entity, records)
        return records[0]

    def titles(self, conn: Connection, entity: Entity, actor: Actor, ids: list[int]) -> list[dict[str, Any]]:
        """The readable records among ``ids`` with just their title fields (their JSON values),
        for showing links: one query, whatever the number of ids."""
        table = self.records.tables(entity).main
        names = [n for n in entity.title_fields if n in table.c]
        hidden = permissions.hidden_fields(entity, actor)
        names = [n for n in names if n not in hidden]
        readable = self.read_clause(entity, actor)
        if readable is None:
            # The ids padded (with the last one) to a power of two, so a few statements with
            # fixed IN lists serve every page.
            size = max(8, 1 << (len(ids) - 1).bit_length())
            key = (entity.name, tuple(names), size)
            statement = self._title_statements.get(key)
            if statement is None:
                columns = (table.c.id, *(table.c[n] for n in names))
                marks = [bindparam(f"id{i}", type_=table.c.id.type) for i in range(size)]
                statement = self._title_statements[key] = Prepared(select(*columns).where(table.c.id.in_(marks)))
            padded = [*ids, *[ids[-1]] * (size - len(ids))] if ids else [0] * size
            rows = statement.dicts(conn, {f"id{i}": v for i, v in enumerate(padded)})
        else:
            rows = _dicts(conn.execute(select(table.c.id, *(table.c[n] for n in names)).where(table.c.id.in_(ids), readable)))
        users = [n for n in names if (f := entity.field(n)) is not None and f.type == "user"]
        if users:
            found = self.records.users.usernames(conn, {r[n] for r in rows for n in users if r[n] is not None})
            for r in rows:
                r.update({n: found.get(r[n]) for n in users})
        return [{k: to_json(v) for k, v in r.items()} for r in rows]

    def may_update(self, conn: Connection, entity: Entity, actor: Actor, record_id: int) -> bool:
        tables, team_users, expr_clause = self._parts(entity, actor)
        clause = permissions.update_clause(entity, tables.main, actor, team_users, expr_clause, tables.children)
        return conn.execute(select(tables.main.c.id).where(tables.main.c.id == record_id, clause)).first() is not None

    # -- lists ---------------------------------------------------------------------------------

    def filtered(
        self, entity: Entity, actor: Actor, spec: ListSpec, conn: Connection, readable: ColumnElement[bool] | None = None
    ) -> Select:  # fmt: skip
        """SELECT of the main table with scope, filters, search and ``where`` applied; ``readable``:
        the actor's rows as the caller already worked them out (:meth:`readable`)."""
        query = select(*self._columns(entity, spec)).where(self.readable(entity, actor) if readable is None else readable)
        hidden = permissions.hidden_fields(entity, actor)
        for name, raw in spec.filters.items():
            query = query.where(self._filter(conn, entity, name, raw, hidden))
        if spec.search:
            query = query.where(self._search(entity, spec.search, hidden))
        if spec.where:
            query = query.where(self._where(entity, actor, spec.where, spec.now))
        return query

    def _columns(self, entity: Entity, spec: ListSpec) -> list[Any]:
        table = self.records.tables(entity).main
        if spec.columns is None:
            return [table]
        wanted = {"id", spec.sort.lstrip("-+") or "id", *spec.columns}
        return [c for c in table.c if c.name in wanted]

    def _filter(self, conn: Connection, entity: Entity, name: str, raw: Any, hidden: set[str]) -> ColumnElement[bool]:
        tables = self.records.tables(entity)
        table = tables.main
        plain = self._column_filter(conn, entity, name, raw, hidden)
        if plain is not None:
            return plain.clause(table.c[plain.column], plain.values)
        f = entity.field(name)
        if name == "flag" and f is None:  # records flagged by a rule or an SLA escalation (mark: red)
            marks = self.records.schema.system["kiln_marks"]
            colours = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
            return exists(
                select(marks.c.record_id).where(
                    marks.c.app == self.records.app.name, marks.c.entity == entity.name, marks.c.color.in_(colours),
                    marks.c.record_id == table.c.id,
                )
            )  # fmt: skip
        if name in ("breached", "overdue") and f is None and entity.sla:  # SLA clocks (dashboards' breaches)
            clocks = self.records.schema.system["kiln_sla_clocks"]
            # breached: the scan marked it, or it was met after its due time; overdue: breached and running
            late = [
                or_(clocks.c.breached_at.is_not(None), clocks.c.met_at > clocks.c.due_at) if name == "breached"
                else and_(clocks.c.breached_at.is_not(None), clocks.c.met_at.is_(None))
            ]  # fmt: skip
            return exists(
                select(clocks.c.record_id).where(
                    clocks.c.app == self.records.app.name, clocks.c.entity == entity.name, clocks.c.record_id == table.c.id,
                    clocks.c.name.in_([str(v) for v in (raw if isinstance(raw, list) else [raw])]), *late,
                )
            )  # fmt: skip
        if name == "reopened" and f is None and entity.workflow:  # sent back at least once (docs/dashboards.md)
            from engine.kpis import backward_transitions

            audit = self.records.schema.system["kiln_audit"]
            sent_back = exists(
                select(audit.c.record_id).where(
                    audit.c.app == self.records.app.name, audit.c.entity == entity.name, audit.c.record_id == table.c.id,
                    audit.c.action.in_([f"transition:{t}" for t in backward_transitions(entity)]),
                )
            )  # fmt: skip
            return sent_back if str(raw[-1] if isinstance(raw, list) else raw) in ("yes", "true", "1") else ~sent_back
        assert f is not None and f.is_multi  # the one kind _column_values leaves
        child = tables.children[name]
        flat = self._field_values(conn, entity, f, raw)
        return exists(select(child.c.record_id).where(child.c.record_id == table.c.id, child.c.value.in_(flat)))

    def _column_filter(self, conn: Connection, entity: Entity, name: str, raw: Any, hidden: set[str]) -> ColumnFilter | None:
        """A filter that is ``column IN (values)`` of the main table; None for the filters that
        are clauses of their own (flags, SLA breaches, reopened, multi-valued fields). Refuses a
        field that cannot be filtered on."""
        if name in ("state", "number", "id", "created_by"):
            values = raw if isinstance(raw, list) else [raw]
            if name == "id":  # a non-number would reach PostgreSQL as a bigint and fail there
                try:
                    values = [int(v) for v in values]
                except (TypeError, ValueError):
                    raise BadQuery("bad filter value for id: expected a record id", {"id": "expected a whole number"}) from None
            if name == "created_by":
                values = list(self.records.users.ids(conn, [str(v) for v in values]).values())
            return ColumnFilter(name, values, empty_is_null=False)
        f = entity.field(name)
        if f is None and (name == "flag" or (name in ("breached", "overdue") and entity.sla) or (name == "reopened" and entity.workflow)):
            return None
        if f is None or f.disabled or name in hidden:
            raise BadQuery(f"cannot filter on '{name}'", {name: "unknown field"})
        if f.is_multi:
            return None
        return ColumnFilter(name, self._field_values(conn, entity, f, raw), empty_is_null=True)

    def _field_values(self, conn: Connection, entity: Entity, f: Any, raw: Any) -> list[Any]:
        """A filter's values for field ``f`` as stored (users as ids; -1 for an unknown user)."""
        try:
            values = [parse(f, v, self.records.timezone) for v in (raw if isinstance(raw, list) else [raw])]
        except BadValue as exc:
            raise BadQuery(f"bad filter value for {f.name}: {exc}", {f.name: exc.message}) from None
        flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
        if f.type == "user":
            ids = self.records.users.ids(conn, [v for v in flat if isinstance(v, str)])
            flat = [ids.get(v, -1) if isinstance(v, str) else v for v in flat]
        return flat

    def _search(self, entity: Entity, text: str, hidden: set[str]) -> ColumnElement[bool]:
        table = self.records.tables(entity).main
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        columns = [table.c[f.name] for f in entity.fields if f.type in TEXT_TYPES and not f.disabled and f.name not in hidden and not f.is_multi]
        parts = [c.ilike(pattern, escape="\\") for c in columns]
        if entity.number:
            parts.append(table.c.number.ilike(pattern, escape="\\"))
        return or_(false(), *parts)

    def _where(self, entity: Entity, actor: Actor, source: str, now: dt.datetime | None = None) -> ColumnElement[bool]:
        try:
            compiled = compile_expression(source, Loc("where", 1, 1), self.records.app, entity)
        except DefinitionError as exc:
            raise BadQuery("the where expression is not valid: " + "; ".join(p.message for p in exc.problems), {"where": str(exc)}) from None
        probed = sorted(
            f"{hop.entity.name}.{hop.field.name}"
            for node in walk(compiled.root) if isinstance(node, FieldRef)
            for hop in node.hops if hop.field.name in permissions.hidden_fields(hop.entity, actor)
        )  # fmt: skip
        if probed:  # a hidden field must not be probed through a condition, even across a link
            raise BadQuery(f"cannot filter on hidden fields: {', '.join(probed)}", {"where": "hidden field"})
        return compiled.clause(self._sql_context(entity, actor, now))

    def _sort_column(self, entity: Entity, sort: str, hidden: set[str]) -> tuple[Any, bool]:
        descending = sort.startswith("-")
        name = sort.lstrip("-+") or "id"
        table = self.records.tables(entity).main
        allowed = set(SYSTEM_COLUMNS) | {entered_column(s) for s in entity.states}
        f = entity.field(name)
        if name not in allowed and (f is None or f.is_multi or f.disabled or name in hidden):
            raise BadQuery(f"cannot sort by '{name}'", {"sort": "unknown or unsortable field"})
        return table.c[name], descending

    def page(self, conn: Connection, entity: Entity, actor: Actor, spec: ListSpec) -> Page:
        limit = max(1, min(int(spec.limit or 50), MAX_LIMIT))
        hidden = permissions.hidden_fields(entity, actor)
        column, descending = self._sort_column(entity, spec.sort, hidden)
        if spec.before:
            return self._page_before(conn, entity, actor, spec, column, descending, limit)
        table = self.records.tables(entity).main
        after = self._decode_after(column, spec.cursor) if spec.cursor else None
        scope = self.read_clause(entity, actor)  # None: the actor reads every row
        rows = None if scope is not None else self._reused_page(conn, entity, spec, hidden, column, descending, after, limit)
        if rows is None:
            query = self.filtered(entity, actor, spec, conn, readable=true() if scope is None else scope)
            if after is not None:
                query = query.where(self._after(column, table.c.id, *after, descending))
            rows = _dicts(conn.execute(query.order_by(*_order(table, column, descending)).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        self.records.attach_children(conn, entity, rows, spec.columns)
        next_cursor = _cursor_of(column, rows[-1]) if more and rows else None
        prev_cursor = _cursor_of(column, rows[0]) if spec.cursor and rows else None
        return Page(rows, next_cursor, prev_cursor)

    def _reused_page(
        self, conn: Connection, entity: Entity, spec: ListSpec, hidden: set[str], column: Any, descending: bool,
        after: tuple[Any, int] | None, limit: int,
    ) -> list[dict[str, Any]] | None:  # fmt: skip
        """The rows of the common list page (one more than ``limit``) by a statement kept per
        shape, or None for a list of another kind. The common page (for an actor who reads every
        row, which the caller checked): filters that are ``column IN (values)``, no search, no
        ``where``. Its statement depends only on the columns, the filters' columns and numbers of
        values, the order, whether there is a cursor and the limit, so it is built and compiled
        once and run with the values as parameters (building, caching and executing a SELECT
        through SQLAlchemy cost more than the database's own work on the hot list page)."""
        if spec.search or spec.where:
            return None
        filters = []
        for name, raw in spec.filters.items():
            found = self._column_filter(conn, entity, name, raw, hidden)
            if found is None:
                return None
            filters.append(found)
        cursor_kind = None if after is None else ("id" if column.name == "id" else after[0] is not None)
        shape = (
            entity.name, tuple(c.name for c in self._columns(entity, spec)), column.name, descending, cursor_kind, limit,
            tuple((f.column, len(f.values), f.empty_is_null) for f in filters),
        )  # fmt: skip
        params: dict[str, Any] = {f"f{i}_{j}": v for i, f in enumerate(filters) for j, v in enumerate(f.values)}
        if after is not None:
            params["c_value"], params["c_id"] = after
        statement = self._pages.get(shape)
        if statement is None:
            table = self.records.tables(entity).main
            query = select(*self._columns(entity, spec))
            for i, f in enumerate(filters):
                target = table.c[f.column]
                query = query.where(f.clause(target, [bindparam(f"f{i}_{j}", type_=target.type) for j in range(len(f.values))]))
            if after is not None:
                value = None if after[0] is None else bindparam("c_value", type_=column.type)
                query = query.where(self._after(column, table.c.id, value, bindparam("c_id", type_=table.c.id.type), descending))
            query = query.order_by(*_order(table, column, descending)).limit(limit + 1)
            if len(self._pages) >= MAX_PAGE_SHAPES:  # shapes a client invents must not grow the cache for ever
                self._pages.clear()
            statement = self._pages[shape] = Prepared(query)
        return statement.dicts(conn, params)

    def _page_before(
        self, conn: Connection, entity: Entity, actor: Actor, spec: ListSpec, column: Any, descending: bool, limit: int
    ) -> Page:
        """The page preceding ``spec.before``: the same order read backwards, then flipped."""
        table = self.records.tables(entity).main
        raw_value, last_id = decode_cursor(spec.before or "")
        try:
            last_id = int(last_id)
        except (TypeError, ValueError):
            raise BadQuery("the cursor is not valid", {"cursor": "invalid"}) from None
        query = self.filtered(entity, actor, spec, conn).where(self._before(column, table.c.id, raw_value, last_id, descending))
        if column.name == "id":
            order = [table.c.id.asc() if descending else table.c.id.desc()]
        elif not column.nullable:
            order = [column.asc(), table.c.id.asc()] if descending else [column.desc(), table.c.id.desc()]
        elif descending:
            order = [column.asc().nulls_first(), table.c.id.asc()]
        else:
            order = [column.desc().nulls_first(), table.c.id.desc()]
        rows = _dicts(conn.execute(query.order_by(*order).limit(limit + 1)))
        more = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        self.records.attach_children(conn, entity, rows, spec.columns)
        return Page(rows, _cursor_of(column, rows[-1]) if rows else None, _cursor_of(column, rows[0]) if more and rows else None)

    def _before(self, column: Any, id_column: Any, raw: Any, last_id: int, descending: bool) -> ColumnElement[bool]:
        """Rows preceding ``(raw, last_id)`` in the list's order (NULLs sort last)."""
        id_before = id_column > last_id if descending else id_column < last_id
        if column.name == "id":
            return id_before
        if raw is None:
            return or_(column.is_not(None), and_(column.is_(None), id_before))
        value = _cursor_value(column, raw)
        earlier = column > value if descending else column < value
        return or_(earlier, and_(column == value, id_before))

    def _decode_after(self, column: Any, cursor: str) -> tuple[Any, int]:
        """A ``cursor`` (the last row's sort value and id) as the column's value and an id."""
        raw_value, last_id = decode_cursor(cursor)
        try:
            last_id = int(last_id)
        except (TypeError, ValueError):
            raise BadQuery("the cursor is not valid", {"cursor": "invalid"}) from None
        return (None if raw_value is None or column.name == "id" else _cursor_value(column, raw_value)), last_id

    def _after(self, column: Any, id_column: Any, value: Any, last_id: Any, descending: bool) -> ColumnElement[bool]:
        """Rows after the cursor's (value, id) in the list's order (NULLs sort last); ``value``
        and ``last_id`` are values or bound parameters."""
        if column.name == "id":
            return id_column < last_id if descending else id_column > last_id
        if value is None:
            return and_(column.is_(None), id_column < last_id if descending else id_column > last_id)
        beyond = column < value if descending else column > value
        tie = and_(column == value, id_column < last_id if descending else id_column > last_id)
        return or_(beyond, tie, column.is_(None))

    def count(self, conn: Connection, entity: Entity, actor: Actor, spec: ListSpec, cap: int = COUNT_CAP) -> tuple[int, bool]:
        """How many rows match, counting at most ``cap`` (+1 to know there are more)."""
        table = self.records.tables(entity).main
        inner = self.filtered(entity, actor, spec, conn).with_only_columns(table.c.id).limit(cap + 1).subquery()
        n = int(conn.execute(select(func.count()).select_from(inner)).scalar_one())
        return min(n, cap), n > cap


def _order(table: Any, column: Any, descending: bool) -> list[Any]:
    """The ORDER BY of a list sorted by ``column``, ties broken by id."""
    if column.name == "id":
        return [table.c.id.desc() if descending else table.c.id.asc()]
    if not column.nullable:
        # No NULLs to place: plain order, which both databases read straight off the
        # (column, id) index (PostgreSQL could not for DESC NULLS LAST).
        return [column.desc(), table.c.id.desc()] if descending else [column.asc(), table.c.id.asc()]
    if descending:
        return [column.desc().nulls_last(), table.c.id.desc()]
    return [column.asc().nulls_last(), table.c.id.asc()]


def _cursor_of(column: Any, row: dict[str, Any]) -> str:
    return encode_cursor([row[column.name], row["id"]])


def _cursor_value(column: Any, raw: Any) -> Any:
    """A cursor's JSON value back as the column's Python type (datetimes, dates, decimals)."""
    try:
        if isinstance(column.type, UTCDateTime):
            return dt.datetime.fromisoformat(raw)
        python_type = column.type.python_type
        if python_type is dt.date:
            return dt.date.fromisoformat(raw)
        if python_type is Decimal:
            return Decimal(raw)
    except (ValueError, TypeError, ArithmeticError, NotImplementedError):
        raise BadQuery("the cursor is not valid", {"cursor": "invalid"}) from None
    return raw


def _dicts(result: Any) -> list[dict[str, Any]]:
    """The rows of ``result`` as dicts (zipping plain rows with the keys: a page's rows cost a
    third less than through ``.mappings()``)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]
