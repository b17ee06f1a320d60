"""Loading a pack's demo data (``demo.yaml``) into an installed app.

Users go through :mod:`engine.accounts` and records through :mod:`engine.records`, so demo data
passes every check real data does (required fields, options, a user field's role, links). What a
live system would reach through its workflow (a ticket dispatched an hour after creation) is set
directly: records are created at their past creation time, then their state and the
``entered_<state>_at`` times are written to the row. Times are relative to the moment of loading
(``_ago: 3h``), so the demo always looks like a working day in progress.

The format is described at the top of ``marketplace/service_ticket/demo.yaml`` and in
docs/marketplace.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

from engine import accounts, permissions, rollups
from engine.actors import SYSTEM
from engine.db import write
from engine.expressions.durations import parse_duration
from engine.instance import Instance
from engine.model import Entity
from engine.source import plain, read_yaml
from engine.tables import entered_column

# Typical time from entering one state to the next, when a record does not give its own _timeline.
DEFAULT_STEP = dt.timedelta(minutes=40)


class DemoError(Exception):
    """Demo data that does not fit the app; the message names the entry."""


@dataclass
class DemoResult:
    users: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (username, roles)
    password: str | None = None  # the demo users' shared password
    counts: dict[str, int] = field(default_factory=dict)  # entity -> records created


def load_demo(instance: Instance, app: str, demo_file: Path, now: dt.datetime | None = None,
              password: str | None = None) -> DemoResult:  # fmt: skip
    """Load ``demo_file`` into ``app`` of a migrated instance. Refuses when the app already holds
    records, so demo data is never mixed into real data by a second run."""
    now = now or dt.datetime.now(dt.UTC)
    data = plain(read_yaml(demo_file)) or {}
    compiled = instance.compiled.app(app)
    definition = compiled.app
    records = instance.records(app)
    if any(records.count(e.name, SYSTEM, cap=1)[0] for e in definition.entities):
        raise DemoError(f"app {app} already has records; demo data loads only into an empty app")
    result = DemoResult(password=password or data.get("password") or accounts.generate_password())
    shared_hash = accounts.hash_password(result.password)
    for entry in data.get("users") or []:
        accounts.add_user(
            instance.engine, entry["username"], app, entry.get("roles", []), team=entry.get("team"),
            manager=entry.get("manager"), password_hash=shared_hash, display_name=entry.get("display_name"),
            lead=bool(entry.get("lead")), definition=definition, now=now,
        )  # fmt: skip
        result.users.append((entry["username"], tuple(entry.get("roles", []))))
    keys: dict[str, int] = {}
    for entity_name, entries in (data.get("records") or {}).items():
        entity = definition.entity(entity_name)
        if entity is None:
            raise DemoError(f"{demo_file}: app {app} has no entity '{entity_name}'")
        # Oldest first, so auto numbers count up with creation time as they would have.
        ordered = sorted(entries, key=lambda e: -_duration(e.get("_ago", "0s"), demo_file))
        for entry in ordered:
            _load_record(instance, app, entity, entry, keys, now, demo_file)
        result.counts[entity_name] = len(entries)
    with write(instance.engine) as conn:  # the states and times written to the rows directly
        rollups.rebuild(conn, instance.schema, definition, now)
    return result


def _duration(text: Any, demo_file: Path) -> dt.timedelta:
    value = parse_duration(str(text))
    if value is None:
        raise DemoError(f"{demo_file}: '{text}' is not a duration (write e.g. 30m, 2h, 3d4h)")
    return value


def _load_record(instance: Instance, app: str, entity: Entity, entry: dict[str, Any], keys: dict[str, int],
                 now: dt.datetime, demo_file: Path) -> None:  # fmt: skip
    records = instance.records(app)
    created = now - _duration(entry.get("_ago", "0s"), demo_file)
    actor = accounts.actor_for(instance.engine, entry["_by"], app) if entry.get("_by") else SYSTEM
    values = {k: _value(entity, k, v, keys, now, demo_file) for k, v in entry.items() if not k.startswith("_") and k != "state"}
    # Fields the creating role may not set (an owner does not choose the technician) are set
    # afterwards by the system, as a dispatcher would have.
    later = {k: values.pop(k) for k in permissions.readonly_fields(entity, actor) if k in values}
    record = records.create(entity.name, values, actor, now=created)
    if later:
        records.update(entity.name, record["id"], later, None, SYSTEM, now=created)
    if entry.get("_key"):
        keys[str(entry["_key"])] = record["id"]
    state = entry.get("state")
    if state is not None:
        _set_state(instance, app, entity, record["id"], str(state), created, now, entry.get("_timeline"), demo_file)


def _value(entity: Entity, name: str, value: Any, keys: dict[str, int], now: dt.datetime, demo_file: Path) -> Any:
    f = entity.field(name)
    if f is None:
        return value  # records.create reports the unknown field with a suggestion
    if f.type == "link" and isinstance(value, str) and value.startswith("@"):
        if value[1:] not in keys:
            raise DemoError(f"{demo_file}: {entity.name}.{name} links to '{value}', which no earlier record has as _key")
        return keys[value[1:]]
    if f.type == "link" and isinstance(value, list):
        return [_value(entity, name, v, keys, now, demo_file) for v in value]
    if f.type in ("datetime", "date") and isinstance(value, str) and value[:1] in "+-":
        moment = now + _duration(value[1:], demo_file) * (1 if value[0] == "+" else -1)
        return moment.isoformat() if f.type == "datetime" else moment.date().isoformat()
    return value


def _set_state(instance: Instance, app: str, entity: Entity, record_id: int, state: str, created: dt.datetime,
               now: dt.datetime, timeline: dict[str, str] | None, demo_file: Path) -> None:  # fmt: skip
    """Put the record in ``state`` as if it had travelled there: each state on the way gets its
    entered time (from ``timeline``, offsets after creation, else the states in definition order
    up to ``state``, evenly spaced and never later than now)."""
    workflow = entity.workflow
    if workflow is None or workflow.state(state) is None:
        raise DemoError(f"{demo_file}: {entity.name} has no state '{state}'")
    if timeline:
        entered = {s: created + _duration(offset, demo_file) for s, offset in timeline.items()}
        unknown = [s for s in entered if workflow.state(s) is None]
        if unknown:
            raise DemoError(f"{demo_file}: {entity.name} has no state '{unknown[0]}' (in _timeline)")
    else:
        names = list(workflow.state_names)
        path = [s for s in names[: names.index(state) + 1] if s != workflow.initial]
        step = min(DEFAULT_STEP, (now - created) / (len(path) + 1)) if path else DEFAULT_STEP
        entered = {s: created + step * (i + 1) for i, s in enumerate(path)}
    entered = {s: min(t, now) for s, t in entered.items()}
    table = instance.schema.entity(app, entity.name).main
    values: dict[str, Any] = {entered_column(s): t for s, t in entered.items()}
    values["state"] = state
    values["updated_at"] = max([created, *entered.values()])
    with write(instance.engine) as conn:
        conn.execute(update(table).where(table.c.id == record_id).values(**values))

