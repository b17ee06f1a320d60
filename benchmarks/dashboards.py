"""A dashboard of 8 cards over 1,000,000 tickets (target: under 300 ms on SQLite and PostgreSQL).

The tickets are the ``list`` benchmark's (benchmarks/listpage.py, its cached SQLite database is
copied once to data/bench/dashboards-<rows>.db), made to look like a year of service: every
ticket older than 14 days is closed (dispatched within 0-2 h, closed within 1-25 h, rated 1-5),
the last 14 days keep their random states (a closed one closed within 10-70 min). The dashboard
is the operations dashboard of S19 over today and the last 30 days, as a manager opens it:
today's pending, today's 2-hour first-response rate, average close time by production line (a
linked record's field), the top-5 devices, the backlog and its 30-day trend, tickets created per
day, CSAT. ``now`` is the last ticket's time. The rows are written directly, so the rollups
(engine/rollups.py) are recounted after, as ``migrate`` does; the dashboard is measured with them
and from the rows alone.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import TICKET_APP, Result, median_ms, write_app
from benchmarks.databases import fresh_database
from benchmarks.listpage import START, fill
from benchmarks.web import base_database
from engine import migrations, rollups
from engine.actors import Actor
from engine.dashboards import Dashboards
from engine.instance import Instance

DASHBOARD = """
      rating: {type: rating, max: 5}
dashboards:
  ops:
    cards:
      - {name: today_pending, type: count, entity: ticket, where: 'state == "pending" and created_at >= today()'}
      - {name: first_response_2h, kpi: first_response_rate, entity: ticket, where: 'created_at >= today()'}
      - {name: avg_close, type: avg_duration, entity: ticket, from: created_at, to: entered_closed_at,
         where: 'created_at >= today() - "30d"', group_by: device.line}
      - {name: top_devices, type: top, entity: ticket, group_by: device, limit: 5, where: 'created_at >= today() - "30d"'}
      - {name: backlog, kpi: backlog, entity: ticket}
      - {name: backlog_trend, kpi: backlog_trend, entity: ticket, last: 30d}
      - {name: created, type: trend, entity: ticket, by: day, last: 30d}
      - {name: csat, kpi: csat, entity: ticket, where: 'created_at >= today() - "30d"'}
"""

RECENT = dt.timedelta(days=14)


def app_text() -> str:
    marker = "      tags: {type: tags}\n"
    assert marker in TICKET_APP
    fields, rest = TICKET_APP.split(marker)
    extra, dashboards = DASHBOARD.split("dashboards:\n", 1)
    return fields + marker + extra.lstrip("\n") + rest + "dashboards:\n" + dashboards


def age(instance: Instance, count: int) -> bool:
    """Close every ticket older than 14 days before the last one (once: the rows keep it), and give
    every closed ticket its closing time (the list benchmark's rows leave it empty); then the
    statistics, and on PostgreSQL the visibility map that autovacuum keeps on a live table (an
    index-only count reads no row without it)."""
    table = instance.schema.entity("bench", "ticket").main.name
    cutoff = START + dt.timedelta(seconds=count * 30) - RECENT
    sqlite = instance.engine.dialect.name == "sqlite"

    def plus(column: str, seconds: str) -> str:
        if sqlite:
            return f"(strftime('%Y-%m-%d %H:%M:%f', {column}, '+' || ({seconds}) || ' seconds') || '000')"
        return f"({column} + ({seconds}) * interval '1 second')"

    stamp = cutoff.replace(tzinfo=None).isoformat(sep=" ") if sqlite else cutoff.isoformat()
    mod = "%" if sqlite else "%%"  # psycopg reads a lone % as a placeholder
    with instance.engine.begin() as conn:
        changed = 0
        if not conn.exec_driver_sql(f'SELECT count(*) FROM "{table}" WHERE rating IS NOT NULL').scalar_one():
            changed += conn.exec_driver_sql(
                f'UPDATE "{table}" SET state = \'closed\', rating = id {mod} 5 + 1, '
                f"entered_dispatched_at = {plus('created_at', f'id {mod} 7200')}, "
                f"entered_closed_at = {plus('created_at', f'3600 + id {mod} 86400')} "
                f"WHERE created_at < '{stamp}'"
            ).rowcount  # fmt: skip
            conn.exec_driver_sql(
                f"UPDATE \"{table}\" SET entered_dispatched_at = {plus('created_at', f'id {mod} 7200')} "
                f"WHERE created_at >= '{stamp}' AND state <> 'pending'"
            )  # fmt: skip
        changed += conn.exec_driver_sql(
            f"UPDATE \"{table}\" SET entered_closed_at = {plus('created_at', f'600 + id {mod} 3600')} "
            f"WHERE state = 'closed' AND entered_closed_at IS NULL"
        ).rowcount  # fmt: skip
    if not changed:
        return False
    if sqlite:
        with instance.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with instance.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'VACUUM ANALYZE "{table}"')
    return True


def recount(instance: Instance, count: int, label: str) -> Result:
    """The rollups recounted from the rows written directly (as ``migrate`` and the demo do)."""
    start = time.perf_counter()
    with instance.engine.begin() as conn:
        rollups.rebuild(conn, instance.schema, instance.records("bench").app)
    return Result(f"rollup recount of {count:,} tickets, {label}", time.perf_counter() - start, "s")


def measure(instance: Instance, count: int, label: str, runs: int) -> list[Result]:
    now = START + dt.timedelta(seconds=count * 30)
    dispatcher = Actor(1, "dispatcher", frozenset({"dispatcher"}))
    results = []
    for use_rollups, how in ((True, ""), (False, ", no rollups")):
        service = Dashboards(instance.records("bench"), use_rollups=use_rollups)
        ops = service.app.dashboards[0]
        failed = [f"{f.name}: {f.error}" for f in service.compute(ops, dispatcher, now=now) if f.error]
        assert not failed, failed
        whole = median_ms(lambda service=service, ops=ops: service.compute(ops, dispatcher, now=now), runs=runs, warmup=1)
        results.append(Result(f"dashboard: 8 cards over {count:,} tickets, {label}{how}", whole, "ms (median)", "< 300 ms"))
        for card in ops.cards:
            ms = median_ms(lambda card=card, service=service, ops=ops: service.compute(ops, dispatcher, now=now, only=card.name),
                           runs=max(3, runs // 2), warmup=0)  # fmt: skip
            results.append(Result(f"  card {card.name}, {label}{how}", ms, "ms (median)"))
    return results


def run(options: dict) -> list[Result]:
    count = int(options.get("rows", 1_000_000))
    runs = int(options.get("dashboard_runs", 7))
    cache = Path(options.get("cache", "data/bench"))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="kiln-dash-") as name:
        tmp = Path(name)
        listing = write_app(tmp / "list", TICKET_APP)
        definitions = write_app(tmp / "definitions", app_text())
        path = cache / f"dashboards-{count}.db"
        if not path.exists():
            shutil.copyfile(base_database(listing, cache, count), path)
        instance = Instance.open(definitions, f"sqlite:///{path}", env={})
        try:
            migrations.apply(instance.engine, instance.compiled)
            if age(instance, count):
                results.append(recount(instance, count, "sqlite"))
            results += measure(instance, count, "sqlite", runs)
        finally:
            instance.close()
        with fresh_database("postgresql", tmp, options) as pg:
            if pg is not None:
                instance = Instance.open(definitions, pg, env={})
                try:
                    migrations.apply(instance.engine, instance.compiled)
                    fill(instance, count)
                    age(instance, count)
                    results.append(recount(instance, count, "postgresql"))
                    results += measure(instance, count, "postgresql", runs)
                finally:
                    instance.close()
    return results
