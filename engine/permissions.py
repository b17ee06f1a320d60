"""Row scopes and field visibility of SPEC.md section 4, as SQL clauses and field sets.

Every read path asks :func:`read_clause` for the rows an actor may see, so a list, a count, a
search, an export and the API share one rule. The system and instance admins see everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, exists, false, or_, select, true

from engine.actors import Actor
from engine.model import Entity, Expr, Permission

# (scope expression) -> SQL clause; supplied by the records service, which owns the compiled forms.
ExprClause = Callable[[Expr], ColumnElement[bool]]
# () -> the SELECT of the user ids of the actor's teams; called only for a ``team`` scope.
TeamUsers = Callable[[], Any]


def permissions_of(entity: Entity, actor: Actor) -> list[Permission]:
    return [p for p in entity.permissions if p.role in actor.roles]


def unrestricted(actor: Actor) -> bool:
    return actor.is_system or actor.is_admin


def scope_clause(
    scope: str | Expr | None, entity: Entity, table: Table, actor: Actor, team_users: TeamUsers, expr_clause: ExprClause,
    children: dict[str, Table],
) -> ColumnElement[bool]:  # fmt: skip
    """The rows one scope (all, own, assigned, team, or an expression) lets the actor reach."""
    if scope is None:
        return false()
    if isinstance(scope, Expr):
        return expr_clause(scope)
    if scope == "all":
        return true()
    if scope == "own":
        return table.c.created_by == actor.id if actor.id is not None else false()
    assigned = [f for f in entity.assigned_fields if entity.field(f) is not None]
    if scope == "assigned":
        return or_(false(), *(_user_field_is(entity, table, children, f, [actor.id]) for f in assigned))
    if scope == "team":
        users = team_users()
        return or_(false(), *(_user_field_in(entity, table, children, f, users) for f in assigned))
    return false()


def _user_field_is(entity: Entity, table: Table, children: dict[str, Table], name: str, ids: list[Any]) -> ColumnElement[bool]:
    field = entity.field(name)
    if field is not None and field.is_multi:
        child = children[name]
        return exists(select(child.c.record_id).where(child.c.record_id == table.c.id, child.c.value.in_(ids)))
    return table.c[name].in_(ids)


def _user_field_in(entity: Entity, table: Table, children: dict[str, Table], name: str, users: Any) -> ColumnElement[bool]:
    field = entity.field(name)
    if field is not None and field.is_multi:
        child = children[name]
        return exists(select(child.c.record_id).where(child.c.record_id == table.c.id, child.c.value.in_(users)))
    return table.c[name].in_(users)


def read_clause(
    entity: Entity, table: Table, actor: Actor, team_users: TeamUsers, expr_clause: ExprClause, children: dict[str, Table]
) -> ColumnElement[bool] | None:
    """The rows of ``entity`` the actor may read: the union of its roles' read scopes, minus the
    records in states whose ``visible_to`` leaves all of its roles out, plus the records granted
    to the actor by a cc or an approval step. None when the actor reads every row: no clause at
    all, so the database plans the list's own filters alone."""
    if unrestricted(actor):
        return None
    perms = permissions_of(entity, actor)
    hidden_states = [
        s.name for s in (entity.workflow.states if entity.workflow else ()) if s.visible_to and not (set(s.visible_to) & actor.roles)
    ]
    if not hidden_states and any(p.read == "all" for p in perms):
        return None
    clause = or_(false(), *(scope_clause(p.read, entity, table, actor, team_users, expr_clause, children) for p in perms))
    if hidden_states:
        clause = and_(clause, or_(table.c.state.is_(None), table.c.state.not_in(hidden_states)))
    return or_(clause, granted_clause(entity, table, actor))


def granted_clause(entity: Entity, table: Table, actor: Actor) -> ColumnElement[bool]:
    """Records shared with the actor one by one (cc recipients and approvers, engine/approvals.py):
    an explicit grant, so it holds whatever the user's roles and the state's ``visible_to``."""
    grants = table.metadata.tables.get("kiln_read_grants")
    if grants is None or actor.id is None:
        return false()
    app = table.name.removesuffix(f"__{entity.name}")  # entity tables are named <app>__<entity>
    return exists(
        select(grants.c.record_id).where(
            grants.c.user_id == actor.id, grants.c.app == app, grants.c.entity == entity.name, grants.c.record_id == table.c.id
        )
    )


def hidden_fields(entity: Entity, actor: Actor) -> set[str]:
    """Fields the actor never sees: hidden by every one of its roles that mentions the entity."""
    if unrestricted(actor):
        return set()
    perms = permissions_of(entity, actor)
    if not perms:
        return set()
    hidden = set(perms[0].hide)
    for p in perms[1:]:
        hidden &= set(p.hide)  # a field one role may see stays visible
    return hidden


def readonly_fields(entity: Entity, actor: Actor) -> set[str]:
    if unrestricted(actor):
        return set()
    perms = permissions_of(entity, actor)
    if not perms:
        return set()
    fields = set(perms[0].readonly) | set(perms[0].hide)
    for p in perms[1:]:
        fields &= set(p.readonly) | set(p.hide)
    return fields


def can_create(entity: Entity, actor: Actor) -> bool:
    return unrestricted(actor) or any(p.create for p in permissions_of(entity, actor))


def update_clause(
    entity: Entity, table: Table, actor: Actor, team_users: TeamUsers, expr_clause: ExprClause, children: dict[str, Table]
) -> ColumnElement[bool]:
    """The rows the actor may update (scope and, where given, the states it may update in)."""
    if unrestricted(actor):
        return true()
    parts = []
    for p in permissions_of(entity, actor):
        if p.update is None:
            continue
        clause = scope_clause(p.update.scope, entity, table, actor, team_users, expr_clause, children)
        if p.update.states:
            clause = and_(clause, table.c.state.in_(p.update.states))
        parts.append(clause)
    return or_(false(), *parts)


def roles_in(actor: Actor, roles: Iterable[str]) -> bool:
    return bool(set(roles) & actor.roles)
