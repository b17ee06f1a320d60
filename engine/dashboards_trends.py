"""Trend cards (engine/dashboards.py): the records per bucket of the app's local hours, days,
weeks or months, each bucket an index range of its own.

A bucket's bounds are local midnights (hours, Mondays, first days of months) of the app's timezone
turned into UTC instants. Each metric counts every bucket in one statement holding one count per
bucket, each an index range (``created_at >= a and created_at < b``), where grouping every row by
a computed bucket would make SQLite sort them all; the backlog at each bucket's end is read from
counts since that instant (:func:`trend_open_count`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from engine import kpis
from engine.expressions.durations import parse_duration
from engine.tables import entered_column

if TYPE_CHECKING:
    from engine.dashboards import Drill, Figure
    from engine.dashboards_sql import CardQuery
    from engine.model import Card

Days = dict[dt.date, int] | None  # the records created per local day, from the daily rollup
BUCKETS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400}
DEFAULT_LAST = {"hour": "24h", "day": "30d", "week": "84d", "month": "365d"}


def card_trend(q: CardQuery, card: Card, figure: Figure) -> None:
    from engine.dashboards import Point

    by = str(card.option("by", "day"))
    last = parse_duration(str(card.option("last", DEFAULT_LAST[by])))
    count = max(1, math.ceil(last.total_seconds() / BUCKETS[by])) if last else 30
    tz = q.records.timezone
    bounds = buckets(q.now, tz, by, count)
    metric = str(card.option("metric", "created_count"))
    figure.extra.update(metric=metric, by=by)
    plan = q.rollup_plan(card, figure.drill) if by != "hour" else None
    days = plan.days(q.conn, q.records.schema.system["kiln_rollups"], _day(bounds[0], tz)) if plan else None
    values, drills = METRICS[metric](q, figure.drill, bounds, days)
    figure.series = [Point(b.astimezone(tz).isoformat(), bucket_label(b.astimezone(tz), by), v, d)
                     for b, v, d in zip(bounds, values, drills, strict=False)]  # fmt: skip
    figure.value = values[-1] if metric == "open_count" else sum(values)


def range_counts(q: CardQuery, drill: Drill, column: Any, edges: list[dt.datetime], open_end: bool = False) -> list[int]:
    """The drill's records with ``column`` in each ``[edges[i], edges[i + 1])`` (and, with
    ``open_end``, one more count from the last edge on): one statement of a count per range,
    each an index range of its own, where grouping by a computed bucket would sort every row."""
    count = q.select(drill, func.count())
    ranges = [count.where(column >= a, column < b) for a, b in zip(edges, edges[1:], strict=False)]
    if open_end:
        ranges.append(count.where(column >= edges[-1]))
    if not ranges:
        return []
    return list(q.conn.execute(select(*(r.scalar_subquery() for r in ranges))).one())


def trend_created_count(q: CardQuery, base: Drill, bounds: list[dt.datetime], days: Days) -> tuple[list[int], list[Drill]]:
    """Records created per bucket; from the daily rollup's records per day when it answers."""
    if days is not None:
        tz = q.records.timezone
        counts = [sum(n for d, n in days.items() if _day(a, tz) <= d < _day(b, tz)) for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        counts = range_counts(q, base, q.table.c.created_at, bounds)
    drills = [base.and_where(f'created_at >= "{_iso(a)}" and created_at < "{_iso(b)}"') for a, b in zip(bounds, bounds[1:], strict=False)]
    return counts, drills


def trend_closed_count(q: CardQuery, base: Drill, bounds: list[dt.datetime], days: Days) -> tuple[list[int], list[Drill]]:
    totals = [0] * (len(bounds) - 1)
    for state in kpis.final_states(q.entity):
        column = q.table.c[entered_column(state)]
        counts = range_counts(q, base.and_where(f"state == {json.dumps(state)}"), column, bounds)
        totals = [t + n for t, n in zip(totals, counts, strict=True)]
    drills = [base.and_where(closed_between(q, a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    return totals, drills


def closed_between(q: CardQuery, start: dt.datetime | None, end: dt.datetime) -> str:
    parts = []
    for state in kpis.final_states(q.entity):
        col = entered_column(state)
        since = f' and {col} >= "{_iso(start)}"' if start else ""
        parts.append(f'(state == {json.dumps(state)}{since} and {col} < "{_iso(end)}")')
    return " or ".join(parts)


def trend_open_count(q: CardQuery, base: Drill, bounds: list[dt.datetime], days: Days) -> tuple[list[int], list[Drill]]:
    """Open at the end ``e`` of each bucket (at ``now`` for the current one): created before
    ``e`` and not in a final state entered before ``e``. A record enters a state no earlier
    than it was created (engine/records.py), so a record closed before ``e`` was created
    before it, and

        open(e) = records created before e - records in a final state entered before e
                = open now + in a final state with no entered time
                  - created since e + in a final state entered since e

    where every term past the first reads an index range from ``e`` on (the first is the
    backlog, an index range of the open states): four small reads, not a pass over every
    record created before ``e``. With the daily rollup (``days``), the records created since each
    local midnight are its days from then on, and only those created since ``now`` are read."""
    ends = [min(b, q.now) for b in bounds[1:]]
    finals = kpis.final_states(q.entity)
    wf = q.entity.workflow
    open_states = [s.name for s in wf.states if not s.final] if wf else []
    open_now = q.conn.execute(
        q.select(base.and_where(f"state in {json.dumps(open_states, ensure_ascii=False)}"), func.count())
    ).scalar_one()  # fmt: skip
    tz = q.records.timezone
    if days is not None and all(e.astimezone(tz).time() == dt.time(0) for e in ends[:-1]):
        since_now = range_counts(q, base, q.table.c.created_at, ends[-1:], open_end=True)[0]
        created_since = [sum(n for d, n in days.items() if d >= _day(e, tz)) for e in ends[:-1]] + [since_now]
    else:
        created_since = _suffix_sums(range_counts(q, base, q.table.c.created_at, ends, open_end=True))
    closed_since = [0] * len(ends)
    for state in finals:
        column = q.table.c[entered_column(state)]
        in_state = base.and_where(f"state == {json.dumps(state)}")
        open_now += q.conn.execute(q.select(in_state, func.count()).where(column.is_(None))).scalar_one()
        since = _suffix_sums(range_counts(q, in_state, column, ends, open_end=True))
        closed_since = [a + b for a, b in zip(closed_since, since, strict=True)]
    values = [open_now - created + closed for created, closed in zip(created_since, closed_since, strict=True)]
    drills = [base.and_where(f'created_at < "{_iso(e)}" and not ({closed_between(q, None, e)})') for e in ends]
    return values, drills


METRICS = {"created_count": trend_created_count, "closed_count": trend_closed_count, "open_count": trend_open_count}


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


def _day(moment: dt.datetime, tz: Any) -> dt.date:
    return moment.astimezone(tz).date()


def _iso(moment: dt.datetime | None) -> str:
    assert moment is not None
    return moment.astimezone(dt.UTC).isoformat()


def bucket_label(start: dt.datetime, by: str) -> str:
    """A bucket by its local start: ``03-04 10:00``, ``2026-03-04``, ``2026-03``."""
    return {"hour": start.strftime("%m-%d %H:00"), "month": start.strftime("%Y-%m")}.get(by, start.date().isoformat())


def _suffix_sums(counts: list[int]) -> list[int]:
    """Per range of ``counts`` (the last one open-ended): the count from that range's start on."""
    out, total = [], 0
    for n in reversed(counts):
        total += n
        out.append(total)
    return out[::-1]
