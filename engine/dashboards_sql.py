"""The aggregations of dashboard cards, in SQL over ``Query.filtered`` (engine/dashboards.py).

Each card reads the SELECT of its list (row scope, filters, ``where``) with other columns: a
count, a sum, an average of a duration (epoch seconds, as the expression language computes
them), an exact nearest-rank percentile (window functions: the row numbered ceil(p * n / 100)
in duration order, on both SQLite and PostgreSQL), groups, trend buckets whose bounds are local
midnights (hours, Mondays, first days of months) of the app's timezone turned into UTC instants,
and SLA clocks. Links and users group by their id and are labelled afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, literal, or_, select

from engine import exports, kpis
from engine.actors import Actor
from engine.errors import Loc
from engine.expressions import SqlContext, compile_expression
from engine.expressions.dialect import Epoch
from engine.expressions.durations import parse_duration
from engine.model import Card, Entity
from engine.queries import BadQuery
from engine.tables import entered_column

if TYPE_CHECKING:
    from engine.dashboards import Dashboards, Drill, Figure, PathInfo

UNIT = {"count": "count", "sum": "number", "avg": "number", "ratio": "ratio", "avg_duration": "seconds",
        "percentile_duration": "seconds", "top": "count", "trend": "count", "breaches": "count", "list": "count"}  # fmt: skip
BUCKETS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400}
DEFAULT_LAST = {"hour": "24h", "day": "30d", "week": "84d", "month": "365d"}


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
        if "." not in path and path in self.table.c:
            return self.table.c[path]
        compiled = compile_expression(path, Loc("card", 1, 1), self.records.app, self.entity, expect=None)
        return compiled.clause(SqlContext(self.records.schema, self.records.app, self.entity, self.now, self.actor))

    def info(self, path: str) -> PathInfo:
        from engine.dashboards import resolve

        found = resolve(self.records, self.entity, path)
        if found is None:
            raise BadQuery(f"unknown field path '{path}' of {self.entity.name}", {"card": "unknown field"})
        return found

    def duration(self, card: Card) -> tuple[Any, str]:
        """Seconds from ``from`` to ``to``, and the condition that both are there."""
        start, end = str(card.option("from")), str(card.option("to"))
        seconds = Epoch(self.value(end)) - Epoch(self.value(start))
        present = " and ".join(f"not is_empty({p})" for p in (start, end) if p not in ("created_at", "updated_at"))
        return seconds, present

    def run(self, card: Card, figure: Figure) -> None:
        getattr(self, f"card_{card.type}")(card, figure)

    # -- groups --------------------------------------------------------------------------------

    def grouped(self, card: Card, figure: Figure, *aggregates: Any, drill: Drill | None = None) -> list[tuple[Any, ...]]:
        """Rows of (group key, aggregates...) for the card's ``group_by``."""
        path = str(card.option("group_by"))
        key = self.value(path).label("g")
        return [tuple(r) for r in self.conn.execute(self.select(drill or figure.drill, key, *aggregates).group_by(key))]

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
        figure.value = self.conn.execute(self.select(figure.drill, func.count())).scalar_one()
        if card.option("group_by"):
            figure.groups = self.group_points(card, figure, self.grouped(card, figure, func.count()))

    def card_sum(self, card: Card, figure: Figure) -> None:
        self._aggregate(card, figure, func.sum, average=False)

    def card_avg(self, card: Card, figure: Figure) -> None:
        self._aggregate(card, figure, func.avg, average=True)

    def _aggregate(self, card: Card, figure: Figure, fn: Any, average: bool) -> None:
        path = str(card.option("field"))
        column = self.value(path)
        if average:  # the records averaged: those with a value
            figure.drill = figure.drill.and_where(f"not is_empty({path})")
        n, value = self.conn.execute(self.select(figure.drill, func.count(column), fn(column))).one()
        figure.value, figure.extra["n"] = _number(value if n else (None if average else 0)), n
        if card.option("group_by"):
            rows = self.grouped(card, figure, fn(column), func.count(column))
            figure.groups = self.group_points(card, figure, [(r[0], _number(r[1])) for r in rows])

    def card_ratio(self, card: Card, figure: Figure) -> None:
        base = figure.drill
        numerator = str(card.option("numerator"))
        hit = base.with_filter("reopened", ["no"]) if numerator == "not_reopened" else base.and_where(numerator)
        total = self.conn.execute(self.select(base, func.count())).scalar_one()
        hits = self.conn.execute(self.select(hit, func.count())).scalar_one()
        figure.value = round(hits / total, 6) if total else None
        figure.extra.update(numerator=hits, denominator=total, numerator_list=hit)
        if card.option("group_by"):
            totals = dict(self.grouped(card, figure, func.count()))
            hits_by = dict(self.grouped(card, figure, func.count(), drill=hit))
            rows = [(k, round(hits_by.get(k, 0) / n, 6) if n else None, hits_by.get(k, 0), n) for k, n in totals.items()]
            figure.groups = self.group_points(card, figure, rows, extra=lambda r: {"numerator": r[2], "denominator": r[3]})

    def card_avg_duration(self, card: Card, figure: Figure) -> None:
        seconds, present = self.duration(card)
        figure.drill = figure.drill.and_where(present)
        n, value = self.conn.execute(self.select(figure.drill, func.count(), func.avg(seconds))).one()
        figure.value, figure.extra["n"] = _seconds(value) if n else None, n
        if card.option("group_by"):
            rows = self.grouped(card, figure, func.avg(seconds), func.count())
            figure.groups = self.group_points(card, figure, [(r[0], _seconds(r[1]), r[2]) for r in rows], extra=lambda r: {"n": r[2]})

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
        from engine.dashboards import Point

        by = str(card.option("by", "day"))
        last = parse_duration(str(card.option("last", DEFAULT_LAST[by])))
        count = max(1, math.ceil(last.total_seconds() / BUCKETS[by])) if last else 30
        tz = self.records.timezone
        bounds = buckets(self.now, tz, by, count)
        metric = str(card.option("metric", "created_count"))
        figure.extra.update(metric=metric, by=by)
        values, drills = getattr(self, f"trend_{metric}")(figure.drill, bounds)
        figure.series = [Point(b.astimezone(tz).isoformat(), bucket_label(b.astimezone(tz), by), v, d)
                         for b, v, d in zip(bounds, values, drills, strict=False)]  # fmt: skip
        figure.value = values[-1] if metric == "open_count" else sum(values)

    def _bucket_index(self, column: Any, bounds: list[dt.datetime]) -> Any:
        """The bucket of a timestamp: -1 before the first bound, i inside bucket i, NULL after."""
        whens = [(column < bounds[0], -1)] + [(column < b, i) for i, b in enumerate(bounds[1:])]
        return case(*whens, else_=None)

    def _counts(self, drill: Drill, column: Any, bounds: list[dt.datetime], since: bool = True) -> dict[int, int]:
        index = self._bucket_index(column, bounds).label("b")
        query = self.select(drill, index, func.count()).where(column.is_not(None), column < bounds[-1])
        if since:
            query = query.where(column >= bounds[0])
        return {int(b): n for b, n in self.conn.execute(query.group_by(index)) if b is not None}

    def _finals(self) -> list[str]:
        return kpis.final_states(self.entity)

    def trend_created_count(self, base: Drill, bounds: list[dt.datetime]) -> tuple[list[int], list[Drill]]:
        counts = self._counts(base, self.table.c.created_at, bounds)
        drills = [base.and_where(f'created_at >= "{_iso(a)}" and created_at < "{_iso(b)}"') for a, b in zip(bounds, bounds[1:], strict=False)]
        return [counts.get(i, 0) for i in range(len(bounds) - 1)], drills

    def trend_closed_count(self, base: Drill, bounds: list[dt.datetime]) -> tuple[list[int], list[Drill]]:
        totals = [0] * (len(bounds) - 1)
        for state in self._finals():
            column = self.table.c[entered_column(state)]
            for i, n in self._counts(base.and_where(f"state == {json.dumps(state)}"), column, bounds).items():
                totals[i] += n
        drills = [base.and_where(self._closed_between(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
        return totals, drills

    def _closed_between(self, start: dt.datetime | None, end: dt.datetime) -> str:
        parts = []
        for state in self._finals():
            col = entered_column(state)
            since = f' and {col} >= "{_iso(start)}"' if start else ""
            parts.append(f'(state == {json.dumps(state)}{since} and {col} < "{_iso(end)}")')
        return " or ".join(parts)

    def trend_open_count(self, base: Drill, bounds: list[dt.datetime]) -> tuple[list[int], list[Drill]]:
        """Open at the end of each bucket (at ``now`` for the current one): created before it and
        not in a final state entered before it. Read as: the records open now by bucket of
        creation, plus the records closed since the first bound by buckets of creation and of
        closing (both index ranges on a real backlog)."""
        ends = [min(b, self.now) for b in bounds[1:]]
        n = len(ends)
        created_col = self.table.c.created_at
        finals = self._finals()
        opened = [0] * (n + 1)  # opened[j + 1]: records created in bucket j (index 0: before the first)
        closed_at = [[0] * (n + 1) for _ in range(n + 1)]  # [created bucket + 1][closed bucket]
        open_states = [s.name for s in self.entity.workflow.states if not s.final] if self.entity.workflow else []
        now_open = base.and_where(f"state in {json.dumps(open_states, ensure_ascii=False)}")
        created_index = self._bucket_index(created_col, bounds).label("c")
        for c, count in self.conn.execute(self.select(now_open, created_index, func.count()).group_by(created_index)):
            if c is not None:
                opened[c + 1] += count
        for state in finals:
            column = self.table.c[entered_column(state)]
            closed_index = self._bucket_index(column, bounds).label("k")
            query = (
                self.select(base.and_where(f"state == {json.dumps(state)}"), created_index, closed_index, func.count())
                .where(column >= bounds[0]).group_by(created_index, closed_index)
            )  # fmt: skip
            for c, k, count in self.conn.execute(query):
                if c is not None:
                    closed_at[c + 1][k if k is not None else n] += count
        values = []
        for i in range(n):
            still_open = sum(opened[: i + 2])
            closed_later = sum(closed_at[c][k] for c in range(i + 2) for k in range(i + 1, n + 1))
            values.append(still_open + closed_later)
        drills = [base.and_where(f'created_at < "{_iso(e)}" and not ({self._closed_between(None, e)})') for e in ends]
        return values, drills

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


def buckets(now: dt.datetime, tz: Any, by: str, count: int) -> list[dt.datetime]:
    """``count + 1`` bounds (UTC) of the last ``count`` buckets, the last one holding ``now``:
    local hours, days, weeks (from Monday) or months of ``tz``."""
    local = now.astimezone(tz)
    if by == "hour":  # real hours, counted in UTC (a DST day has 23 or 25 of them)
        current = local.replace(minute=0, second=0, microsecond=0).astimezone(dt.UTC)
        return [current - dt.timedelta(hours=count - 1 - i) for i in range(count + 1)]
    day = local.date()
    if by == "day":
        days = [day - dt.timedelta(days=count - 1 - i) for i in range(count + 1)]
    elif by == "week":
        monday = day - dt.timedelta(days=day.weekday())
        days = [monday - dt.timedelta(weeks=count - 1 - i) for i in range(count + 1)]
    else:
        months = [(day.year * 12 + day.month - 1) - (count - 1 - i) for i in range(count + 1)]
        days = [dt.date(m // 12, m % 12 + 1, 1) for m in months]
    return [dt.datetime.combine(d, dt.time(0), tzinfo=tz).astimezone(dt.UTC) for d in days]


def _iso(moment: dt.datetime | None) -> str:
    assert moment is not None
    return moment.astimezone(dt.UTC).isoformat()


def bucket_label(start: dt.datetime, by: str) -> str:
    """A bucket by its local start: ``03-04 10:00``, ``2026-03-04``, ``2026-03``."""
    return {"hour": start.strftime("%m-%d %H:00"), "month": start.strftime("%Y-%m")}.get(by, start.date().isoformat())


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

