"""The aggregations of dashboard cards, in SQL over ``Query.filtered`` (engine/dashboards.py).

Each card reads the SELECT of its list (row scope, filters, ``where``) with other columns: a
count, a sum, an average of a duration (epoch seconds, as the expression language computes
them), an exact nearest-rank percentile (window functions: the row numbered ceil(p * n / 100)
in duration order, on both SQLite and PostgreSQL), groups, and SLA clocks; trends are in
:mod:`engine.dashboards_trends`. Links and users group by their id and are labelled afterwards;
a path through a link (``device.line``) is grouped by the link's id and named after. Where the
daily rollup (:mod:`engine.rollups`) answers a card for the user, it is read instead of the rows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Numeric, and_, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import True_
from sqlalchemy.sql.functions import FunctionElement

from engine import dashboards_trends, exports, rollups
from engine.actors import Actor
from engine.errors import Loc
from engine.expressions import SqlContext, compile_expression
from engine.expressions.dialect import Epoch
from engine.model import Card, Entity
from engine.queries import BadQuery

if TYPE_CHECKING:
    from engine.dashboards import Dashboards, Drill, Figure, PathInfo

UNIT = {"count": "count", "sum": "number", "avg": "number", "ratio": "ratio", "avg_duration": "seconds",
        "percentile_duration": "seconds", "top": "count", "trend": "count", "breaches": "count", "list": "count"}  # fmt: skip


class Seconds(FunctionElement):
    """``to - from`` in seconds, of two datetimes: the difference of their epoch seconds
    (:class:`Epoch`), which SQLite reads as a difference of Julian days: its ``julianday``
    holds whole milliseconds, as the rounded epoch does, and a ``round`` per row would cost
    three times the rest of an average over many records."""

    type = Numeric()
    inherit_cache = True


@compiles(Seconds)
def _seconds(element: Seconds, compiler: Any, **kw: Any) -> str:
    end, start = (compiler.process(c, **kw) for c in element.clauses)
    return f"(EXTRACT(EPOCH FROM {end}) - EXTRACT(EPOCH FROM {start}))"


@compiles(Seconds, "sqlite")
def _seconds_sqlite(element: Seconds, compiler: Any, **kw: Any) -> str:
    end, start = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


class CardQuery:
    def __init__(self, dashboards: Dashboards, conn: Any, entity: Entity, actor: Actor, now: dt.datetime, locale: str) -> None:
        self.dashboards = dashboards
        self.records = dashboards.records
        self.conn = conn
        self.entity = entity
        self.actor = actor
        self.now = now
        self.locale = locale
        self.table = self.records.tables(entity).main

    # -- plumbing ------------------------------------------------------------------------------

    def select(self, drill: Drill, *columns: Any) -> Any:
        """The list's SELECT (scope, filters, where) with ``columns`` instead of the row."""
        query = self.records.query.filtered(self.entity, self.actor, drill.spec(self.entity, self.now), self.conn)
        return query.with_only_columns(*columns, maintain_column_froms=True)

    def value(self, path: str) -> Any:
        """A field path as a SQL value: a column, or a correlated subquery through links."""
        from engine.dashboards import hidden_hop

        hidden = hidden_hop(self.records, self.entity, path, self.actor)
        if hidden:
            raise BadQuery(f"this card reads {hidden}, which your role does not see", {"card": "hidden field"})
        return self._path_value(self.entity, path)

    def _path_value(self, entity: Entity, path: str) -> Any:
        table = self.records.tables(entity).main
        if "." not in path and path in table.c:
            return table.c[path]
        compiled = compile_expression(path, Loc("card", 1, 1), self.records.app, entity, expect=None)
        return compiled.clause(SqlContext(self.records.schema, self.records.app, entity, self.now, self.actor))

    def through_link(self, path: str) -> tuple[str, Entity, str] | None:
        """``device.line`` -> (``device``, the device entity, ``line``): a path that starts with a
        link of the card's entity, which a card groups by the link's id (no lookup per record)
        and then names by one query on the linked table."""
        first, dot, rest = path.partition(".")
        f = self.entity.field(first)
        if not dot or f is None or f.type != "link" or f.is_multi or not f.entity or first not in self.table.c:
            return None
        return first, self.records.entity(f.entity), rest

    def linked_values(self, target: Entity, rest: str, ids: list[Any]) -> dict[Any, Any]:
        """The value of ``rest`` on each of the linked records ``ids``, read as the correlated
        subquery of :meth:`value` reads it (no row scope on the linked table: the list's
        ``device.line == "a"`` does not apply one either)."""
        table = self.records.tables(target).main
        column = self._path_value(target, rest)
        found: dict[Any, Any] = {}
        keys = [i for i in ids if i is not None]
        for start in range(0, len(keys), 5000):
            chunk = keys[start : start + 5000]
            found.update((r[0], r[1]) for r in self.conn.execute(select(table.c.id, column).where(table.c.id.in_(chunk))))
        return found

    def info(self, path: str) -> PathInfo:
        from engine.dashboards import resolve

        found = resolve(self.records, self.entity, path)
        if found is None:
            raise BadQuery(f"unknown field path '{path}' of {self.entity.name}", {"card": "unknown field"})
        return found

    def duration(self, card: Card) -> tuple[Any, str]:
        """Seconds from ``from`` to ``to``, and the condition that both are there."""
        start, end = str(card.option("from")), str(card.option("to"))
        if all(self.info(p).type == "datetime" for p in (start, end)):
            seconds = Seconds(self.value(end), self.value(start))
        else:
            seconds = Epoch(self.value(end)) - Epoch(self.value(start))
        present = " and ".join(f"not is_empty({p})" for p in (start, end) if p not in ("created_at", "updated_at"))
        return seconds, present

    def run(self, card: Card, figure: Figure) -> None:
        getattr(self, f"card_{card.type}")(card, figure)

    # -- groups --------------------------------------------------------------------------------

    def aggregate(self, card: Card, drill: Drill, *aggregates: Aggregate) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """The card's ``aggregates`` (``count`` | ``sum`` | ``avg`` of a column, None for
        ``count(*)``) over the drill's records, and with a ``group_by`` the rows of (group key,
        aggregates...) too, in one read: the whole is the groups merged (an average as its sum
        and count). A path through a link is grouped by the link's id and merged per value of
        the linked field (one small read of the linked table, no lookup per record). The daily
        rollup answers instead where it can (:meth:`from_rollup`)."""
        path = card.option("group_by")
        linked = self.through_link(str(path)) if path else None
        found = self.from_rollup(card, drill, aggregates)
        if found is None:
            columns = [c for kind, column in aggregates for c in _partial_sql(kind, column)]
            if not path:
                found = [(None, *self.conn.execute(self.select(drill, *columns)).one())]
            else:
                column = self.table.c[linked[0]] if linked else self.value(str(path))
                key = self._group_key(column, drill).label("g")
                found = [tuple(r) for r in self.conn.execute(self.select(drill, key, *columns).group_by(key))]
        if linked:
            self.value(str(path))  # the hidden-field check of the whole path
            names = self.linked_values(linked[1], linked[2], [r[0] for r in found])
            found = [(names.get(r[0]), *r[1:]) for r in found]
        merged: dict[Any, list[tuple[Any, ...]]] = {}
        for row in found:
            merged.setdefault(row[0], []).append(tuple(row[1:]))
        groups = [(k, *_merge(aggregates, parts)) for k, parts in merged.items()] if path else []
        return groups, _merge(aggregates, [tuple(r[1:]) for r in found])

    def from_rollup(self, card: Card, drill: Drill, aggregates: tuple[Aggregate, ...]) -> list[tuple[Any, ...]] | None:
        """Rows of (group key, partial aggregates...) from the daily rollup (engine/rollups.py),
        when it answers this card for this actor: one who reads every record (a row scope is
        applied to the rows themselves), a rollup built for the definition, and a list of whole
        local days and equalities on the rollup's dimensions. None: read the rows."""
        plan = self.rollup_plan(card, drill)
        if plan is None:
            return None
        path = card.option("group_by")
        if path:
            self.value(str(path))
        group = rollups.dimension(self.entity, str(path)) if path else None
        table = self.records.schema.system["kiln_rollups"]
        out = []
        for key, n, total in plan.rows(self.conn, table, group):
            parts: list[Any] = []
            for kind, _column in aggregates:
                value = plan.measure.value(total)
                parts += [n] if kind == "count" else [value] if kind == "sum" else [value, n]
            out.append((key, *parts))
        return out

    def rollup_plan(self, card: Card, drill: Drill) -> rollups.Plan | None:
        if not self.dashboards.use_rollups or not isinstance(self.records.query.readable(self.entity, self.actor), True_):
            return None
        plan = rollups.plan_for(self.records, self.conn, self.entity, card, drill.where, drill.filters, self.now)
        if plan is None or self.entity.name in rollups.stale(self.conn, self.records.schema, self.records.app):
            return None
        self.select(drill, func.count())  # the list's own checks (hidden fields, filter values): the same errors
        return plan

    def _group_key(self, key: Any, drill: Drill) -> Any:
        """On SQLite, a column grouped over some of the rows as an expression: SQLite would
        otherwise read the whole (column, id) index in group order, a row lookup each, rather
        than the range of the card's where, then sort a few groups (over every row, that index
        order is the right plan, and it is kept)."""
        if self.conn.dialect.name == "sqlite" and (drill.where or drill.filters) and isinstance(key, Column):
            return func.coalesce(key, key)
        return key

    def group_points(self, card: Card, figure: Figure, rows: list[tuple[Any, Any]], extra: Any = None, keep: bool = False) -> list:
        """Points for (key, value) rows: labelled, with the drill of each group, in option order
        (``keep``: in the rows' order)."""
        from engine.dashboards import Point

        path = str(card.option("group_by"))
        info = self.info(path)
        labels = self.labels(info, [r[0] for r in rows])
        points = []
        for row in rows:
            key, value = row[0], row[1]
            points.append(Point(self.key_json(info, key, labels), labels.get(key, "—" if key is None else str(key)), value,
                                self.group_drill(figure.drill, info, key, labels), extra(row) if extra else {}))  # fmt: skip
        if not keep:
            order = {k: i for i, k in enumerate(self.key_order(info))}
            points.sort(key=lambda p: (p.key is None, order.get(p.key, len(order)), str(p.key)))
        return points

    def key_json(self, info: PathInfo, key: Any, labels: dict[Any, str]) -> Any:
        if info.type == "user":
            return labels.get(key, key)
        return key.isoformat() if isinstance(key, dt.date) else key

    def key_order(self, info: PathInfo) -> list[Any]:
        if info.field is not None and info.field.options:
            return list(info.field.option_keys)
        if info.type == "state" and info.entity.workflow:
            return [s.name for s in info.entity.workflow.states]
        return []

    def labels(self, info: PathInfo, keys: list[Any]) -> dict[Any, str]:
        f = info.field
        if f is not None and f.options:
            return {k: label.get(self.locale) for k, label in f.options}
        if info.type == "state" and info.entity.workflow:
            return {s.name: s.label.get(self.locale) for s in info.entity.workflow.states}
        if info.type == "boolean":
            yes, no = ("是", "否") if self.locale == "zh" else ("yes", "no")
            return {True: yes, False: no}
        if info.type == "user":
            return dict(self.records.users.usernames(self.conn, [k for k in keys if k is not None]))
        if info.type == "team":
            return {t.name: t.label.get(self.locale) for t in self.records.app.teams}
        if info.type == "link" and f is not None and f.entity:
            target = self.records.entity(f.entity)
            rows = self.records.query.titles(self.conn, target, self.actor, [int(k) for k in keys if k is not None])
            return {r["id"]: exports.record_title(target, r) for r in rows}
        return {}

    def group_drill(self, base: Drill, info: PathInfo, key: Any, labels: dict[Any, str]) -> Drill:
        from engine.dashboards import EQUALITY_TYPES, literal

        if key is None:
            return base.and_where(f"is_empty({info.path})")
        if info.direct and (info.type in EQUALITY_TYPES or info.type == "state") and info.type != "multiselect":
            value = labels.get(key, key) if info.type == "user" else key
            value = ("true" if value else "false") if isinstance(value, bool) else value
            return base.with_filter(info.path, [str(value)])
        if info.type == "user":
            return base.and_where(f"{info.path} == {literal(labels.get(key, key))}")
        if isinstance(key, dt.date):
            key = key.isoformat()
        return base.and_where(f"{info.path} == {literal(key)}")

    # -- card types ----------------------------------------------------------------------------

    def card_count(self, card: Card, figure: Figure) -> None:
        rows, (figure.value,) = self.aggregate(card, figure.drill, ("count", None))
        if card.option("group_by"):
            figure.groups = self.group_points(card, figure, rows)

    def card_sum(self, card: Card, figure: Figure) -> None:
        self._aggregate(card, figure, average=False)

    def card_avg(self, card: Card, figure: Figure) -> None:
        self._aggregate(card, figure, average=True)

    def _aggregate(self, card: Card, figure: Figure, average: bool) -> None:
        path = str(card.option("field"))
        column = self.value(path)
        if average:  # the records averaged: those with a value
            figure.drill = figure.drill.and_where(f"not is_empty({path})")
        rows, (value, n) = self.aggregate(card, figure.drill, ("avg" if average else "sum", column), ("count", column))
        figure.value, figure.extra["n"] = _number(value if n else (None if average else 0)), n
        if card.option("group_by"):
            figure.groups = self.group_points(card, figure, [(r[0], _number(r[1])) for r in rows])

    def card_ratio(self, card: Card, figure: Figure) -> None:
        base = figure.drill
        numerator = str(card.option("numerator"))
        hit = base.with_filter("reopened", ["no"]) if numerator == "not_reopened" else base.and_where(numerator)
        totals, (total,) = self.aggregate(card, base, ("count", None))
        hits_by, (hits,) = self.aggregate(card, hit, ("count", None))
        figure.value = round(hits / total, 6) if total else None
        figure.extra.update(numerator=hits, denominator=total, numerator_list=hit)
        if card.option("group_by"):
            found = dict(hits_by)
            rows = [(k, round(found.get(k, 0) / n, 6) if n else None, found.get(k, 0), n) for k, n in totals]
            figure.groups = self.group_points(card, figure, rows, extra=lambda r: {"numerator": r[2], "denominator": r[3]})

    def card_avg_duration(self, card: Card, figure: Figure) -> None:
        seconds, present = self.duration(card)
        figure.drill = figure.drill.and_where(present)
        # both ends are there (``present``): the sum over the count is the mean, one duration a row
        rows, (total, n) = self.aggregate(card, figure.drill, ("sum", seconds), ("count", None))
        figure.value, figure.extra["n"] = _seconds(total / n) if n else None, n
        if card.option("group_by"):
            points = [(r[0], _seconds(r[1] / r[2]) if r[2] else None, r[2]) for r in rows]
            figure.groups = self.group_points(card, figure, points, extra=lambda r: {"n": r[2]})

    def card_percentile_duration(self, card: Card, figure: Figure) -> None:
        p = int(card.option("percentile", 90))
        seconds, present = self.duration(card)
        figure.drill = figure.drill.and_where(present)
        grouped = bool(card.option("group_by"))
        key = self.value(str(card.option("group_by"))).label("g") if grouped else literal(1).label("g")
        inner = self.select(figure.drill, key, seconds.label("d")).subquery()
        ranked = select(
            inner.c.g, inner.c.d,
            func.row_number().over(partition_by=inner.c.g, order_by=inner.c.d).label("rn"),
            func.count().over(partition_by=inner.c.g).label("n"),
        ).subquery()  # fmt: skip
        rows = self.conn.execute(select(ranked.c.g, ranked.c.d, ranked.c.n).where(ranked.c.rn == (ranked.c.n * p + 99) // 100)).all()
        figure.extra["percentile"] = p
        if not grouped:
            figure.value = _seconds(rows[0][1]) if rows else None
            figure.extra["n"] = rows[0][2] if rows else 0
            return
        total = self.conn.execute(self.select(figure.drill, func.count())).scalar_one()
        figure.extra["n"] = total
        figure.groups = self.group_points(card, figure, [(r[0], _seconds(r[1]), r[2]) for r in rows], extra=lambda r: {"n": r[2]})

    def card_top(self, card: Card, figure: Figure) -> None:
        limit = int(card.option("limit", 10))
        path = str(card.option("group_by"))
        key = self.value(path)
        if self.through_link(path) is not None or self.rollup_plan(card, figure.drill) is not None:
            # counted per link (merged per linked value) or per rollup key: every group, the top here
            found, (figure.value,) = self.aggregate(card, figure.drill, ("count", None))
            rows = sorted((r for r in found if r[0] is not None), key=lambda r: (-r[1], r[0]))
            figure.groups = self.group_points(card, figure, rows[:limit], keep=True)
            return
        if self.conn.dialect.name == "sqlite" and "." not in path:
            # an expression, not the column: SQLite would otherwise read the whole (column, id)
            # index in group order rather than the range of the card's where, then sort a few groups
            key = func.coalesce(key, key)
        key = key.label("g")
        count = func.count().label("n")
        query = self.select(figure.drill, key, count).where(key.is_not(None)).group_by(key).order_by(count.desc(), key).limit(limit)
        figure.groups = self.group_points(card, figure, [tuple(r) for r in self.conn.execute(query)], keep=True)
        figure.value = self.conn.execute(self.select(figure.drill, func.count())).scalar_one()

    def card_list(self, card: Card, figure: Figure) -> None:
        names = list(card.option("fields") or self.entity.title_fields or ("id",))
        spec = figure.drill.spec(self.entity, self.now, sort=str(card.option("sort", "-created_at")),
                                 limit=int(card.option("limit", 10)))  # fmt: skip
        page = self.records.query.page(self.conn, self.entity, self.actor, spec)
        items = self.records.to_api(self.conn, self.entity, page.items, self.actor)
        figure.columns = names
        figure.items = [{"id": i.get("id"), **{n: i.get(n) for n in names}} for i in items]
        figure.value = self.conn.execute(self.select(figure.drill, func.count())).scalar_one()

    # -- trend ---------------------------------------------------------------------------------

    def card_trend(self, card: Card, figure: Figure) -> None:
        dashboards_trends.card_trend(self, card, figure)

    # -- breaches ------------------------------------------------------------------------------

    def card_breaches(self, card: Card, figure: Figure) -> None:
        from engine.dashboards import Point

        names = list(dict.fromkeys(s.name for s in self.entity.sla))
        if not names:
            raise BadQuery(f"entity {self.entity.name} has no SLA clocks (sla:) to count breaches of", {"card": "no sla"})
        clocks = self.records.schema.system["kiln_sla_clocks"]
        ids = self.select(figure.drill, self.table.c.id).scalar_subquery()
        mine = and_(clocks.c.app == self.records.app.name, clocks.c.entity == self.entity.name, clocks.c.record_id.in_(ids))
        if str(card.option("by", "sla")) == "state":
            self._breaches_by_state(figure, names)
            return
        late = case((or_(clocks.c.breached_at.is_not(None), clocks.c.met_at > clocks.c.due_at), 1), else_=None)
        query = select(clocks.c.name, func.count(), func.count(late)).where(mine).group_by(clocks.c.name)
        found = {name: (started, breached) for name, started, breached in self.conn.execute(query)}
        labels = {s.name: s.name for s in self.entity.sla}
        figure.groups = [
            Point(name, labels[name], found.get(name, (0, 0))[1], figure.drill.with_filter("breached", [name]),
                  {"started": found.get(name, (0, 0))[0], "rate": _rate(*reversed(found.get(name, (0, 0))))})
            for name in names
        ]  # fmt: skip
        started = sum(s for s, _ in found.values())
        breached = sum(b for _, b in found.values())
        figure.value = breached
        figure.extra.update(started=started, rate=_rate(breached, started))
        figure.drill = figure.drill.with_filter("breached", names)

    def _breaches_by_state(self, figure: Figure, names: list[str]) -> None:
        """Per state that is not final: the records in it now with a clock past due and not met
        (the stalls of S21, where each state's clock is an ``sla:`` entry)."""
        from engine.dashboards import Point

        overdue = figure.drill.with_filter("overdue", names)
        state = self.table.c.state
        counts = dict(tuple(r) for r in self.conn.execute(self.select(overdue, state, func.count()).group_by(state)))
        states = [s for s in (self.entity.workflow.states if self.entity.workflow else ()) if not s.final]
        figure.groups = [
            Point(s.name, s.label.get(self.locale), counts.get(s.name, 0), overdue.with_filter("state", [s.name])) for s in states
        ]
        figure.value = sum(p.value for p in figure.groups)
        figure.drill = overdue


# -- helpers ---------------------------------------------------------------------------------

Aggregate = tuple[str, Any]  # (count | sum | avg, a column, or None for count(*))


def _aggregate_sql(kind: str, column: Any) -> Any:
    if kind == "count":
        return func.count() if column is None else func.count(column)
    return func.sum(column) if kind == "sum" else func.avg(column)


def _partial_sql(kind: str, column: Any) -> list[Any]:
    """What merges across groups: an average as its sum and count."""
    return [func.sum(column), func.count(column)] if kind == "avg" else [_aggregate_sql(kind, column)]


def _merge(aggregates: tuple[Aggregate, ...], parts: list[tuple[Any, ...]]) -> list[Any]:
    """Partial aggregates of several groups (:func:`_partial_sql`'s columns) as one group's."""
    out, i = [], 0
    for kind, _column in aggregates:
        width = 2 if kind == "avg" else 1
        sums = [_sum(p[i + j] for p in parts) for j in range(width)]
        if kind == "avg":
            out.append(sums[0] / sums[1] if sums[1] else None)
        else:
            out.append(sums[0] if kind == "sum" else sums[0] or 0)
        i += width
    return out


def _sum(values: Any) -> Any:
    """The sum of the non-null values; None when there are none (SQL's ``sum``)."""
    present = [v for v in values if v is not None]
    return sum(present[1:], present[0]) if present else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)

