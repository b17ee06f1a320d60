"""Daily rollups of dashboard cards, kept in the transaction of every change (docs/dashboards.md).

A card that counts, sums or averages records by a few equality fields over whole local days of
creation (``created_at >= today() - "30d"``, the dashboard's day filter) needs, per day and per
combination of those fields, only the number of records and the total of its measure. The
rollup of an entity holds exactly that (``kiln_rollups``): its *dimensions* are the direct
equality fields the dashboards group and filter by (``device`` for ``device.line``), its
*measures* the records (``""``), a summed field (``rating``) and a duration
(``created_at>entered_closed_at``); totals are integers (a decimal scaled by its places, a
duration in microseconds), so they add up exactly on both databases.

Every create and update of a record (:func:`on_change`, called by the records service) adds its
new contribution and takes away its old one with an atomic ``n = n + ?`` upsert: concurrent
writers only add, so they never lose each other's counts. :func:`rebuild` recounts an entity
from its rows (after a migration, a bulk load, the demo data) under a table lock, and records
the rollup's *signature*: a rollup whose signature is not the definition's is never read.

:func:`plan_for` reads a card's list (the dashboard's filters, the card's ``where``) and says
whether the rollup answers it: the actor reads every record, the conditions are whole local
days of ``created_at`` and equalities on dimensions (or on a linked record's field, through a
dimension link), and nothing else. Any other card is computed from the rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from engine import kpis
from engine.errors import DefinitionError, Loc
from engine.expressions import EvalContext, compile_expression
from engine.expressions.nodes import BoolOp, Call, Compare, FieldRef, In, ListLit, Node, Not
from engine.model import App, Card, Entity
from engine.tables import Schema
from engine.values import BadValue, parse

if TYPE_CHECKING:
    from engine.records import Records
    from engine.rules import Change

CARD_TYPES = frozenset({"count", "top", "sum", "avg", "avg_duration", "trend"})
TREND_METRICS = frozenset({"created_count", "open_count"})  # records by day of creation
DIMENSION_TYPES = frozenset({"select", "link", "user", "boolean", "team"})
SUM_TYPES = frozenset({"integer", "rating", "decimal"})
DATETIMES = ("created_at", "updated_at")
MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Measure:
    """What a record adds to a card: 1 (``name == ""``), a field's value, or a duration."""

    name: str
    start: str | None = None  # a duration's from
    end: str | None = None  # a duration's to, or the summed field
    scale: int = 0  # a decimal's places: totals are value * 10**scale

    def contribution(self, record: dict[str, Any]) -> int | None:
        """The record's integer total, or None when it has nothing to add (a value missing)."""
        if not self.name:
            return 0
        if self.start is not None:
            start, end = record.get(self.start), record.get(self.end or "")
            return None if start is None or end is None else (end - start) // MICROSECOND
        value = record.get(self.end or "")
        return None if value is None else int(Decimal(str(value)).scaleb(self.scale).to_integral_value())

    def value(self, total: int) -> Any:
        """A total in the unit the rows' SQL gives: seconds, the field's number."""
        if self.start is not None:
            return total / 1_000_000
        return Decimal(total).scaleb(-self.scale) if self.scale else total


@dataclass(frozen=True)
class Rollup:
    app: str
    entity: str
    timezone: str
    dimensions: tuple[str, ...]
    measures: tuple[Measure, ...]

    @property
    def signature(self) -> str:
        shape = [self.timezone, self.dimensions, [(m.name, m.start, m.end, m.scale) for m in self.measures]]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:32]

    def measure(self, name: str) -> Measure | None:
        return next((m for m in self.measures if m.name == name), None)

    def key(self, record: dict[str, Any]) -> str:
        return json.dumps([record.get(d) for d in self.dimensions], ensure_ascii=False)


# -- what the definition rolls up ------------------------------------------------------------


_PLANNED: dict[int, tuple[App, dict[str, Rollup]]] = {}


def rollups_of(app: App) -> dict[str, Rollup]:
    """The rollup of each entity that a dashboard card of ``app`` can be answered from (worked
    out once per app: every write of a record asks)."""
    found = _PLANNED.get(id(app))
    if found is None or found[0] is not app:
        if len(_PLANNED) >= 64:  # the apps of a few instances; a test run opens many
            _PLANNED.clear()
        found = _PLANNED[id(app)] = (app, _plan_app(app))
    return found[1]


def _plan_app(app: App) -> dict[str, Rollup]:
    dims: dict[str, set[str]] = defaultdict(set)
    measures: dict[str, dict[str, Measure]] = defaultdict(dict)
    for dashboard in app.dashboards:
        for card in dashboard.cards:
            entity = app.entity(card.entity)
            if entity is None:
                continue
            try:
                plain = kpis.expand(card, entity) if card.option("kpi") is not None else card
            except kpis.KpiError:
                continue
            measure = card_measure(entity, plain)
            group = plain.option("group_by")
            dim = dimension(entity, str(group)) if group else None
            if measure is None or (group and dim is None):
                continue
            measures[entity.name][measure.name] = measure
            measures[entity.name].setdefault("", Measure(""))
            if dim:
                dims[entity.name].add(dim)
            for path in dashboard.filters:
                found = dimension(entity, path)
                if found:
                    dims[entity.name].add(found)
    return {
        name: Rollup(app.name, name, app.timezone, tuple(sorted(dims[name])), tuple(sorted(found.values(), key=lambda m: m.name)))
        for name, found in measures.items()
    }  # fmt: skip


def dimension(entity: Entity, path: str) -> str | None:
    """The direct field a group or a filter on ``path`` reads: the field itself, or the link a
    linked record's field is reached through (``device`` for ``device.line``)."""
    first, dot, _rest = path.partition(".")
    f = entity.field(first)
    if f is None or f.disabled or f.is_multi or f.type not in DIMENSION_TYPES:
        return None
    if dot and (f.type != "link" or not f.entity):
        return None
    return first


def card_measure(entity: Entity, card: Card) -> Measure | None:
    """The measure a card reads, when the rollup can answer its type."""
    if card.type not in CARD_TYPES:
        return None
    if card.type in ("count", "top"):
        return Measure("")
    if card.type == "trend":  # buckets of whole local days: the records created per day
        by, metric = card.option("by", "day"), card.option("metric", "created_count")
        return Measure("") if by != "hour" and metric in TREND_METRICS else None
    if card.type == "avg_duration":
        start, end = str(card.option("from")), str(card.option("to"))
        if not (_datetime(entity, start) and _datetime(entity, end)):
            return None
        return Measure(f"{start}>{end}", start=start, end=end)
    name = str(card.option("field"))
    f = entity.field(name)
    if f is None or f.disabled or f.is_multi or f.type not in SUM_TYPES:
        return None
    return Measure(name, end=name, scale=f.scale if f.type == "decimal" else 0)


def _datetime(entity: Entity, name: str) -> bool:
    if name in DATETIMES or (name.startswith("entered_") and name.endswith("_at") and name[8:-3] in entity.states):
        return True
    f = entity.field(name)
    return f is not None and not f.disabled and f.type == "datetime"


# -- writes ----------------------------------------------------------------------------------


def contributions(rollup: Rollup, record: dict[str, Any], tz: dt.tzinfo, sign: int) -> dict[tuple[str, dt.date, str], list[int]]:
    day = record["created_at"].astimezone(tz).date()
    key = rollup.key(record)
    out = {}
    for m in rollup.measures:
        total = m.contribution(record)
        if total is not None:
            out[(m.name, day, key)] = [sign, sign * total]
    return out


def on_change(records: Records, conn: Connection, change: Change) -> None:
    """Move the record's contribution from what it was to what it is, in the change's
    transaction (nothing when no measure, dimension or day of it changed)."""
    rollup = rollups_of(records.app).get(change.entity.name)
    if rollup is None:
        return
    deltas: dict[tuple[str, dt.date, str], list[int]] = defaultdict(lambda: [0, 0])
    for sign, record in ((-1, change.before), (1, change.after)):
        if record is not None:
            for k, (n, total) in contributions(rollup, record, records.timezone, sign).items():
                deltas[k][0] += n
                deltas[k][1] += total
    rows = [
        {"app": rollup.app, "entity": rollup.entity, "measure": m, "day": day, "key": key, "n": n, "total": total}
        for (m, day, key), (n, total) in deltas.items() if n or total
    ]  # fmt: skip
    if rows:
        add(conn, records.schema.system["kiln_rollups"], rows)


def add(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Add ``rows``' counts to the stored ones (insert the rows not there yet), atomically; in
    key order, so two writers moving records between the same keys lock them in the same order."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = sorted(rows, key=lambda r: (r["measure"], r["day"], r["key"]))
    statement = insert(table).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.app, table.c.entity, table.c.measure, table.c.day, table.c.key],
        set_={"n": table.c.n + statement.excluded.n, "total": table.c.total + statement.excluded.total},
    )
    conn.execute(statement)


def rebuild(conn: Connection, schema: Schema, app: App, now: dt.datetime | None = None) -> list[str]:
    """Recount the rollups of the app's entities from their rows; the entities rebuilt."""
    table, builds = schema.system["kiln_rollups"], schema.system["kiln_rollup_builds"]
    if conn.dialect.name == "postgresql":  # writers wait: their deltas go on top of the recount
        conn.exec_driver_sql(f'LOCK TABLE "{table.name}" IN EXCLUSIVE MODE')
    tz = ZoneInfo(app.timezone)
    done = []
    for rollup in rollups_of(app).values():
        main = schema.entity(app.name, rollup.entity).main
        names = sorted({"created_at", *rollup.dimensions, *(c for m in rollup.measures for c in (m.start, m.end) if c)})
        totals: dict[tuple[str, dt.date, str], list[int]] = defaultdict(lambda: [0, 0])
        keys: dict[tuple[Any, ...], str] = {}  # the JSON of each combination of dimension values, once
        result = conn.execute(select(*(main.c[n] for n in names)).execution_options(yield_per=20_000))
        for row in result:
            record = dict(zip(names, row, strict=True))
            day = record["created_at"].astimezone(tz).date()
            values = tuple(record[d] for d in rollup.dimensions)
            key = keys.get(values) or keys.setdefault(values, json.dumps(list(values), ensure_ascii=False))
            for m in rollup.measures:
                total = m.contribution(record)
                if total is not None:
                    found = totals[(m.name, day, key)]
                    found[0] += 1
                    found[1] += total
        conn.execute(delete(table).where(table.c.app == app.name, table.c.entity == rollup.entity))
        rows = [{"app": app.name, "entity": rollup.entity, "measure": m, "day": day, "key": key, "n": n, "total": total}
                for (m, day, key), (n, total) in totals.items()]  # fmt: skip
        for start in range(0, len(rows), 5000):
            conn.execute(table.insert(), rows[start : start + 5000])
        conn.execute(delete(builds).where(builds.c.app == app.name, builds.c.entity == rollup.entity))
        conn.execute(builds.insert().values(app=app.name, entity=rollup.entity, signature=rollup.signature,
                                            built_at=now or dt.datetime.now(dt.UTC)))  # fmt: skip
        done.append(rollup.entity)
    return done


def stale(conn: Connection, schema: Schema, app: App) -> list[str]:
    """The entities whose built rollup is not the definition's (or was never built)."""
    builds = schema.system["kiln_rollup_builds"]
    built = dict(conn.execute(select(builds.c.entity, builds.c.signature).where(builds.c.app == app.name)).all())
    return [r.entity for r in rollups_of(app).values() if built.get(r.entity) != r.signature]


def refresh(conn: Connection, schema: Schema, apps: list[App], changed: set[str], now: dt.datetime | None = None) -> None:
    """After a migration: rebuild the rollups of the apps whose tables changed (their rows may
    have been rewritten by the steps) and of those whose rollup's shape is not the built one."""
    for app in apps:
        if rollups_of(app) and (app.name in changed or stale(conn, schema, app)):
            rebuild(conn, schema, app, now)


# -- reads -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """How the rollup answers one card's list: the local days and the allowed dimension values."""

    rollup: Rollup
    measure: Measure
    low: dt.date | None = None  # first day (inclusive)
    high: dt.date | None = None  # last day (exclusive)
    allowed: dict[int, set[Any]] = field(default_factory=dict)  # dimension index -> values

    def rows(self, conn: Connection, table: Any, group: str | None) -> list[tuple[Any, int, int]]:
        """(the value of dimension ``group`` or None, records, total) of the records allowed."""
        where = [table.c.app == self.rollup.app, table.c.entity == self.rollup.entity, table.c.measure == self.measure.name]
        if self.low is not None:
            where.append(table.c.day >= self.low)
        if self.high is not None:
            where.append(table.c.day < self.high)
        if self.low is not None and self.high is not None and self.low >= self.high:
            return []
        query = select(table.c.key, func.sum(table.c.n), func.sum(table.c.total)).where(and_(*where)).group_by(table.c.key)
        index = self.rollup.dimensions.index(group) if group else None
        out: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
        for key, n, total in conn.execute(query):
            values = json.loads(key)
            if all(values[i] in allowed for i, allowed in self.allowed.items()):
                group_value = values[index] if index is not None else None
                out[group_value][0] += int(n)
                out[group_value][1] += int(total)
        return [(k, n, total) for k, (n, total) in out.items() if n]

    def days(self, conn: Connection, table: Any, since: dt.date) -> dict[dt.date, int]:
        """The records allowed per local day of creation, from ``since`` on (a trend's buckets)."""
        where = [table.c.app == self.rollup.app, table.c.entity == self.rollup.entity, table.c.measure == self.measure.name,
                 table.c.day >= max(since, self.low) if self.low else table.c.day >= since]  # fmt: skip
        if self.high is not None:
            where.append(table.c.day < self.high)
        out: dict[dt.date, int] = defaultdict(int)
        if not self.allowed:
            for day, n in conn.execute(select(table.c.day, func.sum(table.c.n)).where(*where).group_by(table.c.day)):
                out[day] += int(n)
            return out
        for day, key, n in conn.execute(select(table.c.day, table.c.key, table.c.n).where(*where)):
            values = json.loads(key)
            if all(values[i] in allowed for i, allowed in self.allowed.items()):
                out[day] += int(n)
        return out


def plan_for(records: Records, conn: Connection, entity: Entity, card: Card, where: str | None,
             filters: tuple[tuple[str, tuple[str, ...]], ...], now: dt.datetime) -> Plan | None:  # fmt: skip
    """The rollup's answer to a card over the list (``where``, ``filters``), or None."""
    rollup = rollups_of(records.app).get(entity.name)
    measure = card_measure(entity, card) if rollup is not None else None
    if rollup is None or measure is None or rollup.measure(measure.name) is None:
        return None
    group = card.option("group_by")
    if group and dimension(entity, str(group)) not in rollup.dimensions:
        return None
    plan = Plan(rollup, measure)
    for name, raw in filters:
        f = entity.field(name)
        if name not in rollup.dimensions or f is None:
            return None
        raw = raw[-1:] if f.type == "boolean" else raw  # the list reads a boolean's last value (Drill.spec)
        try:
            values = [parse(f, v, records.timezone) for v in raw]
        except BadValue:
            return None
        if f.type == "user":
            found = records.users.ids(conn, [v for v in values if isinstance(v, str)])
            values = [found.get(v, -1) if isinstance(v, str) else v for v in values]
        _allow(plan, name, values or [None])
    if not where:
        return plan
    try:
        compiled = compile_expression(where, Loc("where", 1, 1), records.app, entity)
    except DefinitionError:
        return None
    constants = EvalContext(record={}, app=records.app, entity=entity, now=now, user=None)

    def constant(node: Node) -> Any:
        return compiled.evaluate_part(node, constants)

    operands = {measure.start, measure.end} - {None, *DATETIMES}
    for part in _conjuncts(compiled.root):
        if not _condition(records, conn, plan, part, constant, operands):
            return None
    return plan


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, BoolOp) and node.op == "and":
        return [p for v in node.values for p in _conjuncts(v)]
    return [node]


def _condition(records: Records, conn: Connection, plan: Plan, node: Node, constant: Callable[[Node], Any],
               operands: set[Any]) -> bool:  # fmt: skip
    """Narrow ``plan`` by one condition of the list; False when the rollup cannot tell it."""
    if isinstance(node, Not) and isinstance(node.operand, Call) and node.operand.name == "is_empty":
        arg = node.operand.args[0]  # the measure's own ``not is_empty(...)``: its records are those
        return isinstance(arg, FieldRef) and arg.root == "record" and arg.dotted in operands
    if isinstance(node, Compare) and isinstance(node.left, FieldRef) and node.right.const:
        path, value = node.left.dotted, constant(node.right)
        if path == "created_at" and node.op in (">=", "<"):
            return _day_bound(plan, node.op, value, records.timezone)
        if node.op == "==" and value is not None:
            return _equal(records, conn, plan, node.left, [value])
        return False
    if isinstance(node, In) and not node.negate and node.mode == "list" and isinstance(node.left, FieldRef):
        if isinstance(node.right, ListLit) and node.right.const:
            return _equal(records, conn, plan, node.left, [v for v in constant(node.right) if v is not None])
    return False


def _day_bound(plan: Plan, op: str, value: Any, tz: dt.tzinfo) -> bool:
    if not isinstance(value, dt.datetime):
        return False
    local = value.astimezone(tz)
    if local.time() != dt.time(0):  # not a local midnight: the rollup's days cannot tell it
        return False
    if op == ">=":
        plan.low = max(plan.low, local.date()) if plan.low else local.date()
    else:
        plan.high = min(plan.high, local.date()) if plan.high else local.date()
    return True


def _equal(records: Records, conn: Connection, plan: Plan, ref: FieldRef, values: list[Any]) -> bool:
    if ref.root != "record" or ref.hops[0].field.name not in plan.rollup.dimensions:
        return False
    name = ref.hops[0].field.name
    if len(ref.hops) == 1:
        if ref.last.type == "user":  # users are compared by username, stored by id
            found = records.users.ids(conn, [v for v in values if isinstance(v, str)])
            values = [found.get(v, -1) if isinstance(v, str) else v for v in values]
        _allow(plan, name, values)
        return True
    if len(ref.hops) != 2 or ref.last.is_multi:  # one hop past the link: the linked record's field
        return False
    target = records.tables(ref.hops[1].entity).main
    column = target.c.get(ref.last.name)
    if column is None:
        return False
    ids = [r[0] for r in conn.execute(select(target.c.id).where(column.in_(values)))] if values else []
    _allow(plan, name, ids)
    return True


def _allow(plan: Plan, name: str, values: list[Any]) -> None:
    index = plan.rollup.dimensions.index(name)
    found = set(values)
    plan.allowed[index] = plan.allowed[index] & found if index in plan.allowed else found
