"""The time scan: everything time sets off, run at one instant (docs/sla.md).

``run_due(instance, now)`` is what the every-minute job runs and what ``run.py jobs run-due --now``
runs, with the same code and ``now`` as a parameter:

1. **SLA clocks** whose ``next_check_at <= now``, read from the partial index on that column in
   batches of :data:`BATCH` (an index range with a limit, looped until a batch comes back short).
   Each batch is one write transaction; :func:`engine.sla.check` fires every breach and
   escalation level that passed, once each and in time order, and moves ``next_check_at`` past
   ``now``. After downtime one scan catches up: each passed level fires once, however many
   minutes were missed. When something in a batch fails, the batch is run again clock by clock,
   each in a savepoint: the failing clock is logged, reported and looked at again a few minutes
   later (``sla.RETRY``), and the others fire.
2. **Scheduled rules** (``schedule("cron")``) whose instants fell in (last scan, now]. The last
   scan instant is kept in ``kiln_settings``; each (rule, instant) is claimed by inserting its row
   in ``kiln_schedule_runs`` in the transaction that runs it, so two scans (two workers, or
   ``run-due`` beside the server) never run one instant twice, and a crash mid-window leaves the
   unclaimed instants for the next scan.
3. **Delivery** of the outbox (:func:`deliver`), which the escalations and rules may have filled.

Running it twice at the same instant does nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine import delivery, rules, sla
from engine.db import write
from engine.values import to_json

if TYPE_CHECKING:
    from engine.instance import Instance

log = logging.getLogger(__name__)

BATCH = 100  # clocks per transaction
FIRST_WINDOW = dt.timedelta(minutes=1)  # the first scan ever runs the schedules of the current minute
WINDOW_CHUNK = dt.timedelta(days=1)  # a long catch-up is worked out a day at a time
KEEP_CLAIMS = dt.timedelta(days=2)  # claims older than this before the window are pruned
LAST_SCAN = "scan.schedules_until"  # kiln_settings key: schedules ran up to this instant
DELIVER_LIMIT = 50
DELIVER_ROUNDS = 20  # at most this many delivery batches per scan; the next scan takes the rest


@dataclass
class ScheduledRun:
    app: str
    entity: str
    rule: str
    at: dt.datetime
    records: int

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "at": to_json(self.at)}

    def line(self) -> str:
        return f"schedule: {self.app}/{self.entity} {self.rule} at {to_json(self.at)} on {self.records} record(s)"


@dataclass
class Report:
    """What one scan did."""

    now: dt.datetime
    fired: list[sla.Fired] = field(default_factory=list)
    scheduled: list[ScheduledRun] = field(default_factory=list)
    delivered: dict[str, int] | None = None  # the deliverer's counts; None when delivery was left out
    errors: list[str] = field(default_factory=list)

    @property
    def did_something(self) -> bool:
        return bool(self.fired or self.scheduled or (self.delivered and self.delivered.get("claimed")))

    def as_json(self) -> dict[str, Any]:
        return {
            "now": to_json(self.now), "sla": [f.as_json() for f in self.fired],
            "scheduled": [s.as_json() for s in self.scheduled], "delivered": self.delivered, "errors": self.errors,
        }  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"time scan at {to_json(self.now)}"]
        out += [f.line() for f in self.fired]
        out += [s.line() for s in self.scheduled]
        if self.delivered is not None:
            out.append("delivery: " + ", ".join(f"{k} {v}" for k, v in self.delivered.items()))
        out += [f"error: {e}" for e in self.errors]
        if len(out) == 1 + (self.delivered is not None) and not self.did_something:
            out.append("nothing was due")
        return out


def run_due(
    instance: Instance, now: dt.datetime, *, batch: int = BATCH, deliver_outbox: bool = True
) -> Report:
    """Run everything due at ``now`` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("the scan needs an aware datetime (with a UTC offset)")
    report = Report(now)
    check_clocks(instance, now, report, batch)
    run_schedules(instance, now, report)
    if deliver_outbox:
        report.delivered = deliver(instance, now)
    return report


# -- 1. clocks ---------------------------------------------------------------------------------


def check_clocks(instance: Instance, now: dt.datetime, report: Report, batch: int = BATCH) -> None:
    table = instance.schema.system[sla.TABLE]
    query = (
        select(table)
        .where(table.c.next_check_at.is_not(None), table.c.next_check_at <= now)
        .order_by(table.c.next_check_at, table.c.id)
        .limit(batch)
    )
    seen: set[int] = set()
    while True:
        with instance.engine.connect() as conn:  # most minutes nothing is due: no write lock for that
            if conn.execute(query.with_only_columns(table.c.id).limit(1)).first() is None:
                return
        with write(instance.engine) as conn:
            due = [dict(row) for row in conn.execute(query).mappings() if row["id"] not in seen]
            seen.update(c["id"] for c in due)
            by_app: dict[str, list[dict[str, Any]]] = {}
            for clock in due:
                by_app.setdefault(clock["app"], []).append(clock)
            for app, clocks in by_app.items():
                if app not in instance.compiled.apps:  # the app was removed: its clocks stop
                    conn.execute(
                        update(table)
                        .where(table.c.id.in_([c["id"] for c in clocks]))
                        .values(next_check_at=None)
                    )
                    continue
                records = instance.records(app)
                try:
                    with conn.begin_nested():  # the whole batch at once: the usual case
                        fired, failed = sla.check(records, conn, clocks, now, careful=False)
                except Exception:  # noqa: BLE001 - again, clock by clock, to set the failing one aside
                    fired, failed = sla.check(records, conn, clocks, now, careful=True)
                report.fired += fired
                report.errors += failed
        if len(due) < batch:
            return


# -- 2. scheduled rules ------------------------------------------------------------------------


def run_schedules(instance: Instance, now: dt.datetime, report: Report) -> None:
    since = last_scan(instance) or now - FIRST_WINDOW
    if now <= since:
        return
    for name, compiled in sorted(instance.compiled.apps.items()):
        start = since
        while start < now:
            end = min(start + WINDOW_CHUNK, now)
            for entity, rule, at in rules.due_scheduled_rules(compiled.app, start, end):
                _run_scheduled(instance, name, entity, rule, at, now, report)
            start = end
    _advance(instance, since, now)


def _run_scheduled(
    instance: Instance, app: str, entity: Any, rule: Any, at: dt.datetime, now: dt.datetime, report: Report
) -> None:
    runs = instance.schema.system["kiln_schedule_runs"]
    dialect = postgresql if instance.engine.dialect.name == "postgresql" else sqlite
    claim = (
        dialect.insert(runs)
        .values(due_at=at, app=app, entity=entity.name, rule=rule.name[:200], ran_at=now)
        .on_conflict_do_nothing()
        .returning(runs.c.due_at)
    )
    try:
        with instance.records(app).transaction() as conn:
            if conn.execute(claim).first() is None:
                return  # another scan ran this instant
            count = rules.run_scheduled(instance.records(app), conn, entity, rule, at)
    except Exception as exc:  # noqa: BLE001 - a failing rule is reported; the others still run
        log.exception("scheduled rule %s failed at %s", rule.name, at)
        report.errors.append(f"schedule {app}/{entity.name} {rule.name} at {to_json(at)}: {exc}")
        return
    report.scheduled.append(ScheduledRun(app, entity.name, rule.name, at, count))


def last_scan(instance: Instance) -> dt.datetime | None:
    settings = instance.schema.system["kiln_settings"]
    with instance.engine.connect() as conn:
        value = conn.execute(select(settings.c.value).where(settings.c.key == LAST_SCAN)).scalar()
    return dt.datetime.fromisoformat(value) if value else None


def _advance(instance: Instance, since: dt.datetime, now: dt.datetime) -> None:
    """Move the last scan instant forward to ``now`` (never back) and prune old claims."""
    settings = instance.schema.system["kiln_settings"]
    runs = instance.schema.system["kiln_schedule_runs"]
    dialect = postgresql if instance.engine.dialect.name == "postgresql" else sqlite
    with write(instance.engine) as conn:
        query = select(settings.c.value).where(settings.c.key == LAST_SCAN)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        current = conn.execute(query).scalar()
        if current is None:
            conn.execute(
                dialect.insert(settings).values(key=LAST_SCAN, value=_iso(now)).on_conflict_do_nothing()
            )
        elif dt.datetime.fromisoformat(current) < now:
            conn.execute(update(settings).where(settings.c.key == LAST_SCAN).values(value=_iso(now)))
        conn.execute(delete(runs).where(runs.c.due_at < since - KEEP_CLAIMS))


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat()


# -- 3. delivery -------------------------------------------------------------------------------


def deliver(instance: Instance, now: dt.datetime) -> dict[str, int]:
    """Deliver the due outbox rows (engine/delivery.py), batch after batch while batches come back
    full; the summed counts."""
    total: dict[str, int] = {}
    for _ in range(DELIVER_ROUNDS):
        stats = delivery.deliver_due(instance, now, limit=DELIVER_LIMIT).as_json()
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
        if stats.get("claimed", 0) < DELIVER_LIMIT:
            break
    return total
