"""The time scan with many SLA clocks (docs/sla.md): one scan over 1,000,000 running clocks none of
which is due (target under 50 ms: it reads an empty index range), one scan over 10,000 due
breaches without actions (the scan's own work per clock), and one scan that processes 10,000 due
escalations, each a notification and a red mark through the rules' actions (target under 10 s),
on SQLite and PostgreSQL. The clocks are written straight into their table; the escalated tickets
are real records, written straight into theirs."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from benchmarks.common import Result, median_ms, write_app
from benchmarks.databases import fresh_database
from engine import migrations, scan, sla
from engine.instance import Instance
from engine.tables import entered_column

APP = """
app: bench
timezone: Asia/Shanghai
roles: {agent: {label: 坐席}}
entities:
  ticket:
    fields:
      summary: {type: text, required: true}
      assignee: {type: user}
    workflow:
      initial: pending
      states: {pending: {}, done: {final: true}}
      transitions: {finish: {from: pending, to: done}}
    permissions:
      agent: {create: true, read: all, update: all}
    sla:
      - name: first_response
        start: created
        stop: left(pending)
        target: 1h
        escalations:
          - after: 30m
            do: [{notify: {to: assignee, channels: [in_app]}}, {mark: red}]
      - name: triage
        start: created
        stop: left(pending)
        target: 20m
"""
START = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)
CHUNK = 20_000


def clock_rows(first_record: int, count: int, started: dt.datetime, triage: bool = False) -> list[dict]:
    """Clocks of the app's ``first_response`` (its level due at 30 min) or ``triage`` (no
    escalations, breached at 20 min)."""
    minutes = 20 if triage else 60
    return [
        {
            "app": "bench",
            "entity": "ticket",
            "record_id": first_record + i,
            "name": "triage" if triage else "first_response",
            "entry": 1 if triage else 0,
            "calendar": "24x7",
            "target_seconds": minutes * 60,
            "started_at": started,
            "paused_at": None,
            "paused_seconds": 0,
            "due_at": started + dt.timedelta(minutes=minutes),
            "breached_at": None,
            "met_at": None,
            "next_check_at": started + dt.timedelta(minutes=min(minutes, 30)),
            "escalation_level": 0,
        }
        for i in range(count)
    ]


def fill_idle(instance: Instance, count: int) -> None:
    """``count`` running clocks whose next check is a day away (records need not exist for these)."""
    table = instance.schema.system[sla.TABLE]
    started = START + dt.timedelta(days=1)
    with instance.engine.begin() as conn:
        for first in range(0, count, CHUNK):
            conn.execute(insert(table), clock_rows(10_000_000 + first, min(CHUNK, count - first), started))


def fill_due(instance: Instance, count: int) -> None:
    """``count`` pending tickets assigned to a user, each with a ``triage`` clock breached at 20 min
    and a ``first_response`` clock whose level is due at 30 min."""
    system = instance.schema.system
    main = instance.schema.entity("bench", "ticket").main
    with instance.engine.begin() as conn:
        user = conn.execute(
            insert(system["kiln_users"]).values(username="tech", display_name="tech", is_admin=False, is_active=True, created_at=START)
            .returning(system["kiln_users"].c.id)
        ).scalar_one()  # fmt: skip
        rows = [
            {"summary": f"工单 {i}", "assignee": user, "state": "pending", "created_at": START, "updated_at": START, "version": 1,
             entered_column("pending"): START}
            for i in range(count)
        ]  # fmt: skip
        ids: list[int] = []
        for first in range(0, count, CHUNK):
            ids += (
                conn.execute(insert(main).returning(main.c.id), rows[first : first + CHUNK]).scalars().all()
            )
        table = system[sla.TABLE]
        for triage in (False, True):
            for first in range(0, count, CHUNK):
                part = clock_rows(0, min(CHUNK, count - first), START, triage)
                for row, record_id in zip(part, ids[first : first + CHUNK], strict=True):
                    row["record_id"] = record_id
                conn.execute(insert(table), part)


def timed(instance: Instance, now: dt.datetime, expected: int) -> float:
    start = time.perf_counter()
    report = scan.run_due(instance, now, deliver_outbox=False)
    seconds = time.perf_counter() - start
    assert len(report.fired) == expected and not report.errors, (len(report.fired), report.errors[:3])
    return seconds


def measure(url: str, definitions: Path, idle: int, due: int, backend: str) -> list[Result]:
    instance = Instance.open(definitions, url, env={})
    try:
        migrations.apply(instance.engine, instance.compiled)
        fill_idle(instance, idle)
        if instance.engine.dialect.name == "postgresql":
            with instance.engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {sla.TABLE}")
        now = START + dt.timedelta(hours=2)
        idle_ms = median_ms(lambda: scan.run_due(instance, now, deliver_outbox=False), runs=20)
        fill_due(instance, due)
        # triage clocks breach at 20 min (the scan's own work); first_response's level at 30 min
        breaches = timed(instance, START + dt.timedelta(minutes=25), due)
        escalations = timed(instance, START + dt.timedelta(minutes=45), due)
        per_second = f"{due / breaches:,.0f}/s", f"{due / escalations:,.0f}/s"
        return [
            Result(
                f"one scan, {idle:,} running clocks none due, {backend}", idle_ms, "ms (median)", "< 50 ms"
            ),
            Result(
                f"one scan, {due:,} due breaches (no actions), {backend}", breaches, "s", note=per_second[0]
            ),
            Result(
                f"one scan, {due:,} due escalations (notify + mark), {backend}",
                escalations,
                "s",
                "< 10 s",
                per_second[1],
            ),
        ]
    finally:
        instance.close()


def run(options: dict) -> list[Result]:
    idle = int(options.get("sla_clocks", 1_000_000))
    due = int(options.get("sla_due", 10_000))
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        definitions = write_app(Path(tmp) / "definitions", APP)
        for backend in ("sqlite", "postgresql"):
            with fresh_database(backend, Path(tmp), options) as url:
                if url is None:
                    results.append(Result(f"SLA scan, {backend}", 0, "skipped", note="no server"))
                    continue
                results += measure(url, definitions, idle, due, backend)
    return results
