"""A filtered keyset page of 50 over 1,000,000 records (target: under 20 ms at the median).

The records are bulk-loaded straight into the tables the engine built (the service's create path
is measured by ``creates``); the SQLite database is kept in data/bench/ and reused while the
definition is unchanged, since loading a million rows takes a while.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from pathlib import Path

from sqlalchemy import func, insert, select

from benchmarks.common import TICKET_APP, Result, median_ms, write_app
from benchmarks.databases import fresh_database
from engine import migrations
from engine.actors import Actor
from engine.instance import Instance

STATES = ["pending", "dispatched", "in_progress", "awaiting_check", "closed"]
CATEGORIES = ["mechanical", "electrical", "network", "system"]
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def rows(count: int, devices: int):
    rnd = random.Random(7)
    for i in range(1, count + 1):
        created = START + dt.timedelta(seconds=i * 30)
        state = rnd.choice(STATES)
        yield {
            "id": i, "number": f"B{i:08d}", "state": state, "created_at": created, "created_by": None,
            "updated_at": created, "version": 1, "summary": f"设备故障 {i} 轴承异响" if i % 3 else f"网络中断 {i}",
            "device": rnd.randint(1, devices), "category": rnd.choice(CATEGORIES), "urgency": rnd.choice(["high", "normal"]),
            "server_ip": None, "packet_loss": None, "est_cost": None, "assignee": None,
            "entered_pending_at": created, "entered_dispatched_at": None, "entered_in_progress_at": None,
            "entered_awaiting_check_at": None, "entered_closed_at": None,
        }  # fmt: skip


def fill(instance: Instance, count: int) -> None:
    tables = instance.schema.entity("bench", "ticket")
    device_table = instance.schema.entity("bench", "device").main
    now = dt.datetime.now(dt.UTC)
    with instance.engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(tables.main)).scalar_one() >= count:
            return
        conn.execute(
            insert(device_table),
            [{"code": f"D{i:04d}", "name": f"设备{i}", "line": "abc"[i % 3], "created_at": now, "updated_at": now, "version": 1}
             for i in range(1, 101)],
        )  # fmt: skip
    batch: list[dict] = []
    for row in rows(count, 100):
        batch.append(row)
        if len(batch) == 20_000:
            with instance.engine.begin() as conn:
                conn.execute(insert(tables.main), batch)
            batch = []
    if batch:
        with instance.engine.begin() as conn:
            conn.execute(insert(tables.main), batch)
    if instance.engine.dialect.name == "postgresql":
        with instance.engine.begin() as conn:  # the ids were given: move the sequences past them
            for table in (device_table, tables.main):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT max(id) FROM \"{table.name}\"))")
        with instance.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # VACUUM too: a database that has lived a while has its visibility map set, so counts
            # over an index read the index alone
            conn.exec_driver_sql(f'VACUUM ANALYZE "{tables.main.name}"')
    else:
        with instance.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def measure(instance: Instance, label: str, runs: int = 200) -> list[Result]:
    records = instance.records("bench")
    dispatcher = Actor(1, "dispatcher", frozenset({"dispatcher"}))
    filters = {"state": "pending", "category": "network"}
    first = median_ms(lambda: records.list("ticket", dispatcher, filters=filters, limit=50), runs=runs)
    cursor = None
    for _ in range(20):
        cursor = records.list("ticket", dispatcher, filters=filters, limit=50, cursor=cursor).next_cursor
    deep = median_ms(lambda: records.list("ticket", dispatcher, filters=filters, limit=50, cursor=cursor), runs=runs)
    by_date = median_ms(
        lambda: records.list("ticket", dispatcher, filters={"category": "system"}, sort="-created_at", limit=50), runs=runs
    )
    count = median_ms(lambda: records.count("ticket", dispatcher, filters=filters), runs=max(3, runs // 10))
    return [
        Result(f"list: filtered page of 50, first page, {label}", first, "ms (median)", "< 20 ms"),
        Result(f"list: filtered page of 50, 21st page (keyset), {label}", deep, "ms (median)", "< 20 ms"),
        Result(f"list: filtered, sorted by created_at, {label}", by_date, "ms (median)"),
        Result(f"list: capped count (10,000+), {label}", count, "ms (median)"),
    ]


def run(options: dict) -> list[Result]:
    count = int(options.get("rows", 1_000_000))
    results: list[Result] = []
    cache = Path(options.get("cache", "data/bench"))
    with tempfile.TemporaryDirectory() as tmp:
        definitions = write_app(Path(tmp) / "definitions", TICKET_APP)
        cache.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{cache}/list-{count}.db"
        instance = Instance.open(definitions, url, env={})
        try:
            migrations.apply(instance.engine, instance.compiled)
            fill(instance, count)
            results += measure(instance, f"{count:,} records, sqlite", options.get("runs", 200))
        finally:
            instance.close()
        if options.get("list_pg", True):
            with fresh_database("postgresql", Path(tmp), options) as pg:
                if pg is not None:
                    instance = Instance.open(definitions, pg, env={})
                    try:
                        migrations.apply(instance.engine, instance.compiled)
                        fill(instance, count)
                        results += measure(instance, f"{count:,} records, postgresql", options.get("runs", 200))
                    finally:
                        instance.close()
    return results
