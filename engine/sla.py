"""SLA clocks of SPEC.md section 5, one row per record and clock name (docs/sla.md).

A clock lives in ``kiln_sla_clocks``. The records service calls :func:`on_change` after every
create, update and transition, in the change's transaction and before the rules (so a rule that
moves the record on stops the clock the create started); the approvals call :func:`on_event` for
``approved(A)``. An entity without ``sla:`` costs nothing; one with clocks costs a look at the
change's events and, only when one of them starts, stops or pauses a clock, one indexed read of
the record's clocks.

- **Start**: an event named by an entry's ``start`` starts the clock of that name, with the first
  entry of the name whose start fired and whose ``applies_if`` holds on the record as the change
  left it. A clock that was met starts afresh on its start event again (a record re-entering a
  state); a running one keeps running.
- **Pause**: while the record is in one of the entry's ``pause_in`` states the clock is paused
  (``paused_at``); on leaving them the paused business time is added to ``paused_seconds`` and
  the due time and the escalation instants move out by it.
- **Stop**: the entry's ``stop`` event sets ``met_at`` (late or not) and clears the red marks its
  escalations set.
- **Due, breach, escalations**: ``due_at`` is ``target`` of business time after the start, pauses
  excluded; a level's instant is its ``after`` the same way. ``next_check_at`` holds the nearest
  instant still to come (a level or the breach) and is NULL when there is none, the clock is
  paused or met: the time scan (:mod:`engine.scan`) reads only ``next_check_at <= now`` from its
  index and calls :func:`check`, which fires every passed instant once, in time order.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, text, update

from engine import audit, deferred, rules, staging
from engine.actors import SYSTEM, Actor
from engine.calendars import BusinessCalendar, calendar_for
from engine.db import Prepared
from engine.model import Entity, Rule, Sla
from engine.rules import Change, Scope, event_name
from engine.schema_events import parse_duration
from engine.values import to_json

if TYPE_CHECKING:
    from engine.records import Records

TABLE = "kiln_sla_clocks"
RETRY = dt.timedelta(minutes=5)  # a clock whose actions failed is looked at again this much later

log = logging.getLogger(__name__)


# -- plans: the entity's clocks, worked out once per app ---------------------------------------


@dataclass(frozen=True)
class Level:
    number: int  # 1, 2, ... in the order of ``after``
    after: int  # seconds of business time from the start
    rule: Rule  # the escalation's actions, named "SLA <name> level <n>" in the audit trail


@dataclass(frozen=True)
class Entry:
    index: int  # its place in the entity's ``sla:`` list (stored on the clock)
    sla: Sla
    start: str  # normalised events
    stop: str
    target: int  # seconds
    levels: tuple[Level, ...]
    pause: frozenset[str]
    marks: bool  # an escalation sets a mark (cleared when the clock is met)


@dataclass
class EntityPlan:
    names: tuple[str, ...]
    entries: dict[str, tuple[Entry, ...]]  # by name, in the order written
    by_index: dict[int, Entry]
    events: frozenset[str]  # every start and stop event
    pause_states: frozenset[str]
    watched: tuple[str, ...]  # fields of field_set(F) events
    calendars: dict[str, BusinessCalendar] = field(default_factory=dict)


_plans: weakref.WeakKeyDictionary[Records, dict[str, EntityPlan | None]] = weakref.WeakKeyDictionary()


def plan(records: Records, entity: Entity) -> EntityPlan | None:
    """The entity's clocks, or None when it has no ``sla:`` (the fast path)."""
    per_app = _plans.get(records)
    if per_app is None:
        per_app = _plans[records] = {}
    if entity.name not in per_app:
        per_app[entity.name] = _build(entity) if entity.sla else None
    return per_app[entity.name]


def _seconds(text: str) -> int:
    duration = parse_duration(text)
    return int(duration.total_seconds()) if duration is not None else 0


def _build(entity: Entity) -> EntityPlan:
    entries: dict[str, list[Entry]] = {}
    by_index: dict[int, Entry] = {}
    for index, sla in enumerate(entity.sla):
        ordered = sorted(sla.escalations, key=lambda e: _seconds(e.after))  # stable: as written on ties
        levels = tuple(
            Level(
                n, _seconds(e.after), Rule(f"SLA {sla.name} level {n}", f"sla({sla.name})", e.loc, e.actions)
            )
            for n, e in enumerate(ordered, start=1)
        )
        marks = any(a.kind == "mark" for e in sla.escalations for a in e.actions)
        entry = Entry(
            index,
            sla,
            event_name(sla.start),
            event_name(sla.stop),
            _seconds(sla.target),
            levels,
            frozenset(sla.pause_in),
            marks,
        )
        entries.setdefault(sla.name, []).append(entry)
        by_index[index] = entry
    events = frozenset(e for entry in by_index.values() for e in (entry.start, entry.stop))
    watched = tuple(sorted({e[len("field_set(") : -1] for e in events if e.startswith("field_set(")}))
    return EntityPlan(
        names=tuple(entries), entries={k: tuple(v) for k, v in entries.items()}, by_index=by_index, events=events,
        pause_states=frozenset(s for entry in by_index.values() for s in entry.pause), watched=watched,
    )  # fmt: skip


def calendar(records: Records, entity_plan: EntityPlan, name: str) -> BusinessCalendar:
    """The calendar ``name`` of the app; a clock started on a calendar the definition has dropped
    since runs on, round the clock, rather than failing the record's changes."""
    if name not in entity_plan.calendars:
        try:
            entity_plan.calendars[name] = calendar_for(records.app, name)
        except KeyError:
            log.warning(
                "app %s has no calendar '%s' any more: its clocks count round the clock",
                records.app.name,
                name,
            )
            entity_plan.calendars[name] = calendar_for(records.app, "24x7")
    return entity_plan.calendars[name]


# -- changes -----------------------------------------------------------------------------------


def on_change(records: Records, conn: Connection, change: Change) -> None:
    """Start, stop, pause or resume the record's clocks for ``change`` (same transaction)."""
    entity_plan = plan(records, change.entity)
    if entity_plan is None:
        return
    events = rules.events_of(change, entity_plan.watched)
    before_state = (change.before or {}).get("state")
    moved = entity_plan.pause_states and change.after.get("state") != before_state
    if not (events & entity_plan.events) and not moved:
        return
    _apply(records, conn, change.entity, entity_plan, change.after, events, change.before is None, change.now)


def on_event(
    records: Records, conn: Connection, entity: Entity, record: dict[str, Any], event: str, now: dt.datetime
) -> None:
    """An event that happens beside a change (``approved(A)``)."""
    entity_plan = plan(records, entity)
    name = event_name(event)
    if entity_plan is None or name not in entity_plan.events:
        return
    _apply(records, conn, entity, entity_plan, record, {name}, False, now)


def _apply(
    records: Records, conn: Connection, entity: Entity, entity_plan: EntityPlan, record: dict[str, Any],
    events: set[str], created: bool, now: dt.datetime,
) -> None:  # fmt: skip
    table = records.schema.system[TABLE]
    clocks = {} if created else _clocks_of(conn, table, records.app.name, entity.name, record["id"])
    state = record.get("state")
    for name in entity_plan.names:
        clock = clocks.get(name)
        entry = entity_plan.by_index.get(clock["entry"]) if clock else None
        if clock is not None and clock["met_at"] is None and entry is not None and entry.sla.name == name:
            if entry.stop in events:
                _meet(records, conn, entity, entity_plan, entry, clock, now)
            elif entry.pause:
                _pause_or_resume(records, conn, entity_plan, entry, clock, state, now)
            continue
        started = _start(records, conn, entity, entity_plan, name, record, events, clock, now)
        if started is not None and started[0].stop in events:  # started and satisfied by one change
            _meet(records, conn, entity, entity_plan, started[0], started[1], now)


def _start(
    records: Records, conn: Connection, entity: Entity, entity_plan: EntityPlan, name: str, record: dict[str, Any],
    events: set[str], clock: dict[str, Any] | None, now: dt.datetime,
) -> tuple[Entry, dict[str, Any]] | None:  # fmt: skip
    candidates = [e for e in entity_plan.entries[name] if e.start in events]
    if not candidates:
        return None
    ctx = None
    entry = None
    for candidate in candidates:
        if candidate.sla.applies_if is None:
            entry = candidate
            break
        ctx = ctx or records.checker.context(conn, entity, record, None, SYSTEM, now)
        if records.expr(candidate.sla.applies_if).evaluate(ctx):
            entry = candidate
            break
    if entry is None:
        return None
    cal = calendar(records, entity_plan, entry.sla.calendar)
    values: dict[str, Any] = {
        "entry": entry.index, "calendar": entry.sla.calendar, "target_seconds": entry.target, "started_at": now,
        "paused_at": now if record.get("state") in entry.pause else None, "paused_seconds": 0,
        "due_at": cal.add(now, entry.target), "breached_at": None, "met_at": None, "escalation_level": 0,
    }  # fmt: skip
    values["next_check_at"] = next_check(values, entry, cal)
    table = records.schema.system[TABLE]
    if clock is None:
        keys = {"app": records.app.name, "entity": entity.name, "record_id": record["id"], "name": name}
        clock_id = _insert_statement(table).execute(conn, {**keys, **values}).scalar_one()
        return entry, {"id": clock_id, **keys, **values}
    conn.execute(update(table).where(table.c.id == clock["id"]).values(**values))
    return entry, {**clock, **values}


@functools.lru_cache(maxsize=4)
def _insert_statement(table: Table) -> Prepared:
    """A new clock's row, compiled once (it runs in the create of a record with clocks)."""
    return Prepared(insert(table).returning(table.c.id), [c.name for c in table.columns if c.name != "id"])


def _meet(
    records: Records, conn: Connection, entity: Entity, entity_plan: EntityPlan, entry: Entry, clock: dict[str, Any],
    now: dt.datetime,
) -> None:  # fmt: skip
    values: dict[str, Any] = {"met_at": now, "next_check_at": None}
    if clock["breached_at"] is None and clock["due_at"] < (clock["paused_at"] or now):
        values["breached_at"] = clock["due_at"]  # met late before a scan saw it: breached all the same
    if clock["paused_at"] is not None:  # met while paused: the pause ends here
        cal = calendar(records, entity_plan, clock["calendar"])
        values.update(
            paused_at=None, paused_seconds=clock["paused_seconds"] + cal.elapsed(clock["paused_at"], now)
        )
    table = records.schema.system[TABLE]
    conn.execute(update(table).where(table.c.id == clock["id"]).values(**values))
    if entry.marks:
        _clear_marks(records, conn, entity, clock, now)


def _clear_marks(
    records: Records, conn: Connection, entity: Entity, clock: Mapping[str, Any], now: dt.datetime
) -> None:
    """The marks this clock's escalations set go when it is met (the record is no longer late)."""
    marks = records.schema.system["kiln_marks"]
    where = (
        marks.c.app == records.app.name, marks.c.entity == entity.name, marks.c.record_id == clock["record_id"],
        marks.c.rule.like(f"SLA {clock['name']} level %"),
    )  # fmt: skip
    colours = list(conn.execute(select(marks.c.color).where(*where)).scalars())
    if not colours:
        return
    conn.execute(delete(marks).where(*where))
    actor = SYSTEM.as_rule(f"SLA {clock['name']}")
    for colour in colours:
        audit.record_change(
            conn, records.schema.system["kiln_audit"], app=records.app.name, entity=entity.name,
            record_id=clock["record_id"], action="unmark", actor=actor, at=now, changes={"flags": [colour, None]},
        )  # fmt: skip


def _pause_or_resume(
    records: Records, conn: Connection, entity_plan: EntityPlan, entry: Entry, clock: dict[str, Any], state: str | None,
    now: dt.datetime,
) -> None:  # fmt: skip
    paused = clock["paused_at"] is not None
    pausing = state in entry.pause
    if paused == pausing:
        return
    table = records.schema.system[TABLE]
    if pausing:
        conn.execute(update(table).where(table.c.id == clock["id"]).values(paused_at=now, next_check_at=None))
        return
    cal = calendar(records, entity_plan, clock["calendar"])
    values = {
        **clock,
        "paused_at": None,
        "paused_seconds": clock["paused_seconds"] + cal.elapsed(clock["paused_at"], now),
    }
    values["due_at"] = cal.add(clock["started_at"], clock["target_seconds"] + values["paused_seconds"])
    values["next_check_at"] = next_check(values, entry, cal)
    changed = {k: values[k] for k in ("paused_at", "paused_seconds", "due_at", "next_check_at")}
    conn.execute(update(table).where(table.c.id == clock["id"]).values(**changed))


def _clocks_of(
    conn: Connection, table: Table, app: str, entity: str, record_id: int
) -> dict[str, dict[str, Any]]:
    query = select(table).where(table.c.app == app, table.c.entity == entity, table.c.record_id == record_id)
    return {row["name"]: dict(row) for row in conn.execute(query).mappings()}


# -- time: breaches and escalations ------------------------------------------------------------


def level_at(clock: Mapping[str, Any], level: Level, cal: BusinessCalendar) -> dt.datetime:
    """When ``level`` is due: its ``after`` of business time from the start, pauses excluded."""
    return cal.add(clock["started_at"], level.after + clock["paused_seconds"])


def next_check(clock: Mapping[str, Any], entry: Entry, cal: BusinessCalendar) -> dt.datetime | None:
    """The nearest instant the scan must look at: the next level or the breach, whichever comes
    first; None when the clock is met, paused or has nothing left to fire."""
    if clock["met_at"] is not None or clock["paused_at"] is not None:
        return None
    instants = [] if clock["breached_at"] is not None else [clock["due_at"]]
    level = clock["escalation_level"]
    if level < len(entry.levels):
        instants.append(level_at(clock, entry.levels[level], cal))
    return min(instants) if instants else None


@dataclass
class Fired:
    """One thing the scan did to a clock: a breach or an escalation level."""

    app: str
    entity: str
    record_id: int
    clock: str
    what: str  # "breached" or "level N"
    due: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "due": to_json(self.due)}

    def line(self) -> str:
        return f"sla: {self.app}/{self.entity} {self.record_id} {self.clock} {self.what} (due {to_json(self.due)})"


def check(
    records: Records, conn: Connection, clocks: list[dict[str, Any]], now: dt.datetime, careful: bool = True
) -> tuple[list[Fired], list[str]]:  # fmt: skip
    """Fire what the due ``clocks`` (rows of one app, read by the scan) have due by ``now``, each
    instant once and in time order, and move their next check past ``now``.

    The records are read for the whole batch, locked on PostgreSQL before the clocks are read again
    under lock (the order a change takes them: record, then clock). Each clock is then claimed by
    one conditional update (its level and start as read), which also records the breach and the
    next check, and the claimed levels' actions run after it: whatever they do to the clock (stop,
    pause, restart it) comes after the claim. So two scans never fire one level twice.

    ``careful``: each clock in a savepoint of its own, and a clock whose actions fail is rolled
    back to it, logged, and looked at again :data:`RETRY` later, without holding up the others.
    Without it an error propagates (the scan runs a batch so first, in one savepoint, and again
    carefully only when that fails: a savepoint per clock costs more than the clock's own claim).
    Returns what fired and what failed."""
    table = records.schema.system[TABLE]
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for clock in clocks:
        by_entity.setdefault(clock["entity"], []).append(clock)
    fired: list[Fired] = []
    failed: list[str] = []
    for entity_name, group in by_entity.items():
        entity = records.app.entity(entity_name)
        entity_plan = plan(records, entity) if entity is not None else None
        if entity is None or entity_plan is None:  # the entity or its sla left the definition
            conn.execute(
                update(table).where(table.c.id.in_([c["id"] for c in group])).values(next_check_at=None)
            )
            continue
        loaded = _records(records, conn, entity, sorted({c["record_id"] for c in group}))
        if conn.dialect.name == "postgresql":  # read again under lock, after the records
            query = (
                select(table)
                .where(table.c.id.in_([c["id"] for c in group]))
                .order_by(table.c.id)
                .with_for_update()
            )
            fresh = {row["id"]: dict(row) for row in conn.execute(query).mappings()}
            group = [fresh[c["id"]] for c in group if c["id"] in fresh]
        if not careful:
            fired += _fire_batch(records, conn, entity, entity_plan, group, loaded, now)
            group = [c for c in group if c.get(_DONE) is None]
        for clock in group:
            if clock["next_check_at"] is None or clock["next_check_at"] > now:
                continue  # another scan got there first
            record = loaded.get(clock["record_id"])
            entry = entity_plan.by_index.get(clock["entry"])
            if record is None or entry is None or entry.sla.name != clock["name"]:
                conn.execute(update(table).where(table.c.id == clock["id"]).values(next_check_at=None))
                continue
            cal = calendar(records, entity_plan, clock["calendar"])
            if not careful:
                done, record = _fire(records, conn, entity, entry, cal, clock, record, now)
                loaded[clock["record_id"]] = record
                fired += done
                continue
            try:
                with conn.begin_nested():
                    done, record = _fire(records, conn, entity, entry, cal, clock, record, now)
            except Exception as exc:  # noqa: BLE001 - one clock's failing actions must not stop the others
                log.exception(
                    "SLA clock %s (%s/%s %s %s) failed",
                    clock["id"],
                    records.app.name,
                    entity.name,
                    clock["record_id"],
                    clock["name"],
                )
                fields = "".join(f" ({name}: {why})" for name, why in getattr(exc, "fields", {}).items())
                failed.append(
                    f"sla clock {clock['id']} ({entity.name} {clock['record_id']} {clock['name']}): {exc}{fields}"
                )
                conn.execute(update(table).where(table.c.id == clock["id"]).values(next_check_at=now + RETRY))
                continue
            loaded[clock["record_id"]] = record
            fired += done
    return fired, failed


_DONE = "_kiln_batched"  # set on a clock the batch path fired
SIMPLE_ACTIONS = frozenset({"notify", "mark"})  # write nothing the batch reads back (engine/deferred.py)


def _passed(
    clock: Mapping[str, Any], entry: Entry, cal: BusinessCalendar, now: dt.datetime
) -> tuple[list[tuple[dt.datetime, int, Level | None]], dict[str, Any]]:
    """The instants of ``clock`` that passed by ``now`` (the breach, then levels), and the clock
    as claiming them leaves it."""
    after = dict(clock)
    due: list[tuple[dt.datetime, int, Level | None]] = []
    if clock["breached_at"] is None and clock["due_at"] <= now:
        due.append((clock["due_at"], 0, None))
        after["breached_at"] = clock["due_at"]
    for level in entry.levels[clock["escalation_level"] :]:
        at = level_at(clock, level, cal)
        if at > now:
            break
        due.append((at, 1, level))
        after["escalation_level"] = level.number
    after["next_check_at"] = next_check(after, entry, cal)
    return due, after


def _fire_batch(
    records: Records, conn: Connection, entity: Entity, entity_plan: EntityPlan, group: list[dict[str, Any]],
    loaded: dict[int, dict[str, Any]], now: dt.datetime,
) -> list[Fired]:  # fmt: skip
    """The clocks of ``group`` whose passed levels only notify and mark (or that only breach), one
    per record: their claims, outbox rows, marks and audit entries written a statement per table
    at the end (engine/deferred.py). They run first; every other clock goes the one-by-one way
    after (:func:`_fire`), marked here with nothing set. The claims cannot miss: the clocks were
    read in this transaction (under lock on PostgreSQL; SQLite's write lock holds the table),
    and these actions change neither clocks nor records."""
    per_record: dict[int, int] = {}
    for clock in group:
        per_record[clock["record_id"]] = per_record.get(clock["record_id"], 0) + 1
    work = []
    for clock in group:
        record = loaded.get(clock["record_id"])
        entry = entity_plan.by_index.get(clock["entry"])
        if (
            per_record[clock["record_id"]] > 1 or record is None or entry is None or entry.sla.name != clock["name"]
            or clock["next_check_at"] is None or clock["next_check_at"] > now
        ):  # fmt: skip
            continue
        cal = calendar(records, entity_plan, clock["calendar"])
        due, after = _passed(clock, entry, cal, now)
        if not due or any(level is not None and {a.kind for a in level.rule.actions} - SIMPLE_ACTIONS for _, _, level in due):
            continue
        work.append((clock, record, due, after))
    if not work:
        return []
    fired = []
    table = _table(records)
    with deferred.deferring(conn) as batch:
        if any(level is not None and any(a.kind == "mark" for a in level.rule.actions) for _, _, due, _ in work for _, _, level in due):
            marks = records.schema.system["kiln_marks"]
            batch.preload_marks(conn, marks, records.app.name, entity.name, [c["record_id"] for c, _, _, _ in work])
        claim = _claim_statement(table)
        for clock, record, due, after in work:
            clock[_DONE] = True
            batch.add(claim.statement, _claim_params(clock, after), _claim_many(table))
            done, loaded[clock["record_id"]] = _run_levels(records, conn, entity, clock, record, due, now)
            fired.extend(done)
    return fired


def _fire(
    records: Records, conn: Connection, entity: Entity, entry: Entry, cal: BusinessCalendar, clock: dict[str, Any],
    record: dict[str, Any], now: dt.datetime,
) -> tuple[list[Fired], dict[str, Any]]:  # fmt: skip
    """One clock: claim every instant that passed, then run the claimed levels' actions."""
    due, after = _passed(clock, entry, cal, now)
    if not due:  # nothing passed (a definition change moved the instants): just the next check
        conn.execute(
            update(_table(records))
            .where(_table(records).c.id == clock["id"])
            .values(next_check_at=after["next_check_at"])
        )
        return [], record
    if not _claim(records, conn, clock, after):
        return [], record
    return _run_levels(records, conn, entity, clock, record, due, now)


def _run_levels(
    records: Records, conn: Connection, entity: Entity, clock: dict[str, Any], record: dict[str, Any], due: list[Any],
    now: dt.datetime,
) -> tuple[list[Fired], dict[str, Any]]:  # fmt: skip
    """The claimed instants of one clock in time order: a breach's audit entry, a level's
    actions; what fired and the record as the actions left it."""
    fired = []
    for at, _, level in sorted(due, key=lambda d: (d[0], d[1])):
        what = "breached" if level is None else f"level {level.number}"
        fired.append(Fired(records.app.name, entity.name, clock["record_id"], clock["name"], what, at))
        if level is None:
            _audit_breach(records, conn, entity, clock, now)
        else:
            record = _escalate(records, conn, entity, clock, record, level, now)
    return fired, record


def _table(records: Records) -> Table:
    return records.schema.system[TABLE]


def _records(records: Records, conn: Connection, entity: Entity, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The batch's records, by id (locked on PostgreSQL, in id order)."""
    main = records.tables(entity).main
    query = select(main).where(main.c.id.in_(ids)).order_by(main.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = [dict(r) for r in conn.execute(query).mappings()]
    records.attach_children(conn, entity, rows)
    return {r["id"]: r for r in rows}


def _claim(records: Records, conn: Connection, clock: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Move the clock to ``after`` if it is still as it was read (no other scan, no change)."""
    return _claim_statement(_table(records)).execute(conn, _claim_params(clock, after)).rowcount == 1


def _claim_params(clock: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "clock_id": clock["id"], "old_level": clock["escalation_level"], "old_start": clock["started_at"],
        "new_breached": after["breached_at"], "new_level": after["escalation_level"], "new_next": after["next_check_at"],
    }  # fmt: skip


@functools.lru_cache(maxsize=4)
def _claim_many(table: Table) -> Callable[[Connection, list[dict[str, Any]]], None]:
    """The claims of a batch (engine/deferred.py): on PostgreSQL one UPDATE joined to the rows,
    passed as one JSON parameter (``id = ANY`` keeps the plan on the batch's rows even when the
    table's statistics say it is empty); on SQLite (in process, no round trips) the claim
    executed for each row."""
    claims = text(
        f"UPDATE {table.name} AS c SET breached_at = v.new_breached, escalation_level = v.new_level, "
        "next_check_at = v.new_next FROM json_to_recordset(CAST(:rows AS JSON)) AS v(clock_id BIGINT, "
        "old_level INTEGER, old_start TIMESTAMPTZ, new_breached TIMESTAMPTZ, new_level INTEGER, new_next TIMESTAMPTZ) "
        "WHERE c.id = ANY(CAST(:ids AS BIGINT[])) AND c.id = v.clock_id AND c.escalation_level = v.old_level "
        "AND c.started_at = v.old_start AND c.met_at IS NULL AND c.paused_at IS NULL"
    )

    def write_all(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if conn.dialect.name != "postgresql":
            conn.execute(_claim_statement(table).statement, rows)
            return
        conn.execute(claims, {"rows": deferred.as_json(rows), "ids": [r["clock_id"] for r in rows]})

    return write_all


@functools.lru_cache(maxsize=4)
def _claim_statement(table: Table) -> Prepared:
    """The claim, compiled once (it runs once per escalation: the scan's hot path)."""
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("clock_id"), table.c.escalation_level == bindparam("old_level"),
            table.c.started_at == bindparam("old_start"), table.c.met_at.is_(None), table.c.paused_at.is_(None),
        )
        .values(breached_at=bindparam("new_breached"), escalation_level=bindparam("new_level"), next_check_at=bindparam("new_next"))
    )  # fmt: skip
    return Prepared(statement)


def _audit_breach(
    records: Records, conn: Connection, entity: Entity, clock: Mapping[str, Any], now: dt.datetime
) -> None:
    audit.record_change(
        conn, records.schema.system["kiln_audit"], app=records.app.name, entity=entity.name,
        record_id=clock["record_id"], action="sla_breach", actor=SYSTEM.as_rule(f"SLA {clock['name']}"), at=now,
        changes={}, comment=f"{clock['name']}: due {to_json(clock['due_at'])}",
    )  # fmt: skip


def _escalate(
    records: Records, conn: Connection, entity: Entity, clock: Mapping[str, Any], record: dict[str, Any], level: Level,
    now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """The level's actions as the system, named "SLA <name> level <n>" in the trail; the outbox key
    holds the clock's start, so a clock started again escalates again but one run never twice.
    Returns the record as the actions left it."""
    if not level.rule.actions:
        return record
    key = f"{records.app.name}/{entity.name}/{record['id']}/sla:{clock['name']}@{to_json(clock['started_at'])}/level:{level.number}"
    pending = staging.Pending()  # as for a rule: the level's changes of the record are written as one update
    record = rules.run_actions(
        Scope(records, conn, entity, record, None, SYSTEM, now, level.rule, key, pending=pending)
    )
    return rules.write_pending(records, conn, entity, pending, record, SYSTEM, now)


# -- reading -----------------------------------------------------------------------------------


def attach(
    conn: Connection, records: Records, entity: Entity, items: list[dict[str, Any]], actor: Actor
) -> None:
    """Add ``sla`` (the record's clocks) to records' JSON for users: one query for a whole page,
    none for an entity without clocks or with a field of that name, nor for the system (the
    record as rules and escalations render it into messages)."""
    if actor.is_system or plan(records, entity) is None or entity.field("sla") is not None or not items:
        return
    table = records.schema.system[TABLE]
    query = (
        select(table)
        .where(
            table.c.app == records.app.name,
            table.c.entity == entity.name,
            table.c.record_id.in_([i["id"] for i in items]),
        )
        .order_by(table.c.record_id, table.c.id)
    )
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(row["record_id"], []).append(as_json(row))
    for item in items:
        item["sla"] = found.get(item["id"], [])


def as_json(clock: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": clock["name"], "started_at": to_json(clock["started_at"]), "due_at": to_json(clock["due_at"]),
        "breached_at": to_json(clock["breached_at"]), "met_at": to_json(clock["met_at"]),
        "paused": clock["paused_at"] is not None,
    }  # fmt: skip


def breaches(
    conn: Connection, records: Records, entity: Entity, since: dt.datetime, until: dt.datetime
) -> dict[tuple[dt.date, str], int]:
    """Breaches per (day in the app's timezone, clock name) with since <= breached_at < until:
    the breakpoint counts of S21 (the index on breached instants)."""
    table = records.schema.system[TABLE]
    query = select(table.c.name, table.c.breached_at).where(
        table.c.app == records.app.name,
        table.c.entity == entity.name,
        table.c.breached_at >= since,
        table.c.breached_at < until,
    )
    counts: dict[tuple[dt.date, str], int] = {}
    for name, at in conn.execute(query):
        key = (at.astimezone(records.timezone).date(), name)
        counts[key] = counts.get(key, 0) + 1
    return counts
