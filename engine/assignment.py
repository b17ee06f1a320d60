"""Who gets a record: the ``assign`` action, and the people a notification goes to.

``assign`` sets a user field to a named user, to another user field's value (``from:
device.owner``) or to a member of a team or role pool, picked by ``round_robin`` (a persistent
turn counter per (app, entity, field, pool), taken with an atomic upsert so concurrent creates
never get the same turn, on SQLite and PostgreSQL alike) or ``least_loaded`` (fewest open records
in that field, i.e. not in a final state; ties go to the first username). A pool only holds active
users, and only those with the field's ``role:`` when it names one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.errors import ValidationFailed
from engine.values import is_empty

if TYPE_CHECKING:
    from engine.model import Entity, Field
    from engine.records import Records
    from engine.rules import Scope

_FUNC = re.compile(r"^(manager_of|lead_of)\(\s*([A-Za-z0-9_.]+)\s*\)$")
_PREFIX = re.compile(r"^(role|team):\s*(\S+)$")


# -- pools -------------------------------------------------------------------------------------


def team_members(conn: Connection, records: Records, team: str) -> list[tuple[int, str]]:
    """Active members of an app team as (id, username), by username."""
    system = records.schema.system
    teams, members, users = system["kiln_teams"], system["kiln_team_members"], system["kiln_users"]
    query = (
        select(users.c.id, users.c.username)
        .join(members, members.c.user_id == users.c.id)
        .join(teams, teams.c.id == members.c.team_id)
        .where(teams.c.app == records.app.name, teams.c.name == team, users.c.is_active.is_(True))
        .order_by(users.c.username)
    )
    return [(r.id, r.username) for r in conn.execute(query)]


def role_users(conn: Connection, records: Records, role: str) -> list[tuple[int, str]]:
    """Active users with an app role as (id, username), by username."""
    system = records.schema.system
    roles, users = system["kiln_user_roles"], system["kiln_users"]
    query = (
        select(users.c.id, users.c.username)
        .join(roles, roles.c.user_id == users.c.id)
        .where(roles.c.app == records.app.name, roles.c.role == role, users.c.is_active.is_(True))
        .order_by(users.c.username)
    )
    return [(r.id, r.username) for r in conn.execute(query)]


def next_turn(conn: Connection, records: Records, entity: str, field: str, pool: str) -> int:
    """0, 1, 2, ... per (app, entity, field, pool): an upsert that returns the new counter, so the
    row lock (PostgreSQL) or the write lock (SQLite) hands each transaction its own turn."""
    table = records.schema.system["kiln_assign_cursor"]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(app=records.app.name, entity=entity, field=field, pool=pool, turn=0)
        .on_conflict_do_update(index_elements=["app", "entity", "field", "pool"], set_={"turn": table.c.turn + 1})
        .returning(table.c.turn)
    )
    return int(conn.execute(statement).scalar_one())


def open_load(conn: Connection, records: Records, entity: Entity, field: Field, user_ids: list[int], skip: int | None) -> dict[int, int]:
    """Open records (not in a final state) per user in ``field``: one indexed, grouped count."""
    tables = records.tables(entity)
    main = tables.main
    finals = [s.name for s in entity.workflow.states if s.final] if entity.workflow else []
    column = tables.children[field.name].c.value if field.is_multi else main.c[field.name]
    query = select(column, func.count()).where(column.in_(user_ids)).group_by(column)
    if field.is_multi:
        query = query.select_from(tables.children[field.name].join(main, main.c.id == tables.children[field.name].c.record_id))
    if finals:
        query = query.where(or_(main.c.state.is_(None), main.c.state.not_in(finals)))
    if skip is not None:
        query = query.where(main.c.id != skip)
    return {int(user): int(n) for user, n in conn.execute(query)}


# -- the action --------------------------------------------------------------------------------


def pick(scope: Scope, field: Field, args: Mapping[str, Any]) -> int | None:
    """The user ``args`` choose for ``field``; None when the pool is empty."""
    records, conn = scope.records, scope.conn
    if "user" in args:
        name = str(args["user"])
        user_id = records.users.ids(conn, [name]).get(name)
        if user_id is None:
            raise ValidationFailed(f"assign: no user '{name}'", {field.name: f"no user '{name}'"})
        return user_id
    if "from" in args:
        value = scope.value(None, str(args["from"]))
        return value[0] if isinstance(value, list) and value else value or None
    if "team" in args:
        pool_name, pool = f"team:{args['team']}", team_members(conn, records, str(args["team"]))
    elif "role" in args:
        pool_name, pool = f"role:{args['role']}", role_users(conn, records, str(args["role"]))
    else:
        pool_name, pool = f"role:{field.role}", role_users(conn, records, field.role) if field.role else []
    if field.role and pool_name != f"role:{field.role}":
        allowed = {uid for uid, _ in role_users(conn, records, field.role)}
        pool = [p for p in pool if p[0] in allowed]
    if not pool:
        return None
    if args.get("strategy") == "round_robin":
        return pool[next_turn(conn, records, scope.entity.name, field.name, pool_name) % len(pool)][0]
    load = open_load(conn, records, scope.entity, field, [uid for uid, _ in pool], scope.record.get("id"))
    return min(pool, key=lambda p: (load.get(p[0], 0), p[1]))[0]


def action_assign(scope: Scope, args: Mapping[str, Any]) -> bool:
    """Set the user field; an empty pool leaves it as it is (a create must not fail for that)."""
    field = scope.entity.field(str(args.get("field", "assignee")))
    if field is None:
        raise ValidationFailed(f"assign: {scope.entity.name} has no field '{args.get('field', 'assignee')}'")
    user_id = pick(scope, field, args)
    current = scope.record.get(field.name)
    if user_id is None or user_id == current or (isinstance(current, list) and user_id in current):
        return False
    value = [*current, user_id] if field.is_multi else user_id
    return scope.change({field.name: value})


# -- recipients --------------------------------------------------------------------------------


def recipients(scope: Scope, to: Any) -> list[int]:
    """User ids of a ``to:`` (SPEC.md section 5): user fields and paths, created_by, role:NAME,
    team:NAME, manager_of(FIELD), lead_of(TEAM or team field), {role|team|user|users: ...}, or a
    list of these; in order, without repeats or empties."""
    found: list[int] = []
    for item in to if isinstance(to, list) else [to]:
        found.extend(_recipient(scope, item))
    return list(dict.fromkeys(u for u in found if u is not None))


def _recipient(scope: Scope, item: Any) -> Iterable[int]:
    records, conn = scope.records, scope.conn
    if isinstance(item, dict):
        if "role" in item:
            return [uid for uid, _ in role_users(conn, records, str(item["role"]))]
        if "team" in item:
            return [uid for uid, _ in team_members(conn, records, str(item["team"]))]
        names = [str(n) for n in _listed(item.get("users", item.get("user")))]
        ids = records.users.ids(conn, names)
        return [ids[n] for n in names if n in ids]
    text = str(item).strip()
    prefix, call = _PREFIX.match(text), _FUNC.match(text)
    if prefix:
        kind, name = prefix.groups()
        pool = role_users(conn, records, name) if kind == "role" else team_members(conn, records, name)
        return [uid for uid, _ in pool]
    if call and call.group(1) == "manager_of":
        users = records.schema.system["kiln_users"]
        ids = [v for v in _listed(scope.value(None, call.group(2))) if v is not None]
        query = select(users.c.manager_id).where(users.c.id.in_(ids), users.c.manager_id.is_not(None))
        return list(conn.execute(query).scalars()) if ids else []
    if call:
        arg = call.group(2)
        team = arg if arg in records.app.team_names else scope.value(None, arg)
        return [lead for name in _listed(team) if not is_empty(name) for lead in _lead(conn, records, str(name))]
    return [v for v in _listed(scope.value(None, text)) if isinstance(v, int)]


def _lead(conn: Connection, records: Records, team: str) -> list[int]:
    teams = records.schema.system["kiln_teams"]
    lead = conn.execute(select(teams.c.lead_id).where(teams.c.app == records.app.name, teams.c.name == team)).scalar()
    return [lead] if lead is not None else []


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
