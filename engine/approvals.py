"""Approval steps (审批/会签) and carbon copies (抄送) of SPEC.md section 3.

An approval names the transition it guards (``before``). When a record enters a state that
transition starts from (by create or transition) and the approval's ``when`` holds, a *step* opens:
its approvers (a role, a team or users) are resolved to users then, are granted read access to the
record and get an in-app notification. The guarded transition is refused while the step is
pending or after it was rejected. ``decide`` records one approver's decision: in mode ``any`` the
first approval approves, in mode ``all`` (countersign) every approver must approve; any
rejection rejects the step and runs ``on_reject`` as the system. Each step belongs to one *visit*
of its state (its ``state`` and ``opened_at`` against the record's ``entered_<state>_at``), so a
record that comes back to the state needs a new approval.

A ``cc`` entry whose ``when`` holds on a create or a transition grants its recipients read access
(``kiln_read_grants``, which :func:`engine.permissions.read_clause` ORs in) and queues one in-app
notification per new recipient in the outbox, in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine import assignment, audit, outbox, rules, sla, workflow
from engine.actors import SYSTEM, Actor
from engine.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RecordError,
    ValidationFailed,
    did_you_mean,
    not_visible,
)
from engine.messages import Msg, Named, Names
from engine.model import Approval, Approvers, Entity, Expr, Transition
from engine.rules import Change
from engine.tables import entered_column
from engine.values import to_json

if TYPE_CHECKING:
    from engine.records import Records

DECISIONS = ("approve", "reject")
INBOX_LIMIT = 200
_FUNC = re.compile(r"^(manager_of|lead_of)\(\s*([A-Za-z0-9_.]+)\s*\)$")
_PREFIX = re.compile(r"^(role|team):\s*(\S+)$")


class NotRequested(Conflict):
    """An approval must be given first but no step is open (the record changed after it entered
    its state); :func:`engine.workflow.transition` opens one and says so."""

    def __init__(self, approval: Approval, message: str) -> None:
        super().__init__(message, {"approval": approval.name})
        self.approval = approval


# -- hooks of the workflow ---------------------------------------------------------------------------


def on_change(records: Records, conn: Connection, change: Change) -> None:
    """Open the approval steps and send the carbon copies a change calls for. Idempotent (a
    step per visit, a grant per user), so calling it twice for one change does no harm."""
    entity, record = change.entity, change.after
    w = entity.workflow
    if w is None:
        return
    if w.approvals and change.before is not None and change.before.get("state") != record.get("state"):
        _withdraw(records, conn, entity, change.before, change.actor, change.now)
    for a in w.approvals:
        t = w.transition(a.before or "")
        if t is None or not t.applies_from(record.get("state") or ""):
            continue
        if _holds(records, conn, entity, a.when, record, change) and _visit_step(records, conn, entity, record, a.name) is None:
            _open(records, conn, entity, record, a, change.actor, change.now)
    if change.before is None or change.transition is not None:
        for i, cc in enumerate(w.cc):
            if _holds(records, conn, entity, cc.when, record, change):
                _carbon_copy(records, conn, entity, record, cc.to, i, change.now)


def _withdraw(records: Records, conn: Connection, entity: Entity, left: Mapping[str, Any], actor: Actor, now: dt.datetime) -> None:
    """Close the steps still pending in the state the record ``left`` (sent back, cancelled): they
    guard nothing any more (the next visit asks again), so they leave the approvers' inboxes,
    each with a history entry."""
    table = records.schema.system["kiln_approvals"]
    mine = (table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == left["id"], table.c.status == "pending")
    for step in conn.execute(select(table.c.id, table.c.name).where(*mine, table.c.state == left.get("state"))).all():
        done = conn.execute(update(table).where(table.c.id == step.id, table.c.status == "pending").values(status="withdrawn", closed_at=now))
        if done.rowcount:
            _audit(records, conn, entity, left["id"], step.name, actor, now, {"approval": ["pending", "withdrawn"]}, None)


def check_before(records: Records, conn: Connection, entity: Entity, t: Transition, record: Mapping[str, Any], actor: Actor,
                 now: dt.datetime) -> None:  # fmt: skip
    """Refuse ``t`` while an approval guarding it is not given."""
    for a, step in _guards(records, conn, entity, t, record, actor, now):
        if step is None:
            raise NotRequested(a, Msg("%(transition)s needs approval %(approval)s first", transition=workflow.named(t), approval=_named(a)))
        if step.status == "pending":
            who = Names([Named(u) for u in _names(records, conn, _undecided(records, conn, step.id))])
            message = Msg("%(transition)s is waiting for approval %(approval)s (pending with %(who)s)", transition=workflow.named(t),
                          approval=_named(a), who=who)  # fmt: skip
            raise Conflict(message, {"approval": a.name})
        if step.status == "rejected":
            message = Msg("approval %(approval)s was rejected, so %(transition)s cannot run", approval=_named(a), transition=workflow.named(t))
            raise Conflict(message, {"approval": a.name})


def blocked_by(records: Records, conn: Connection, entity: Entity, t: Transition, record: Mapping[str, Any], actor: Actor,
               now: dt.datetime) -> str | None:  # fmt: skip
    """Why an approval blocks ``t`` now, for a disabled button; None when nothing does."""
    try:
        check_before(records, conn, entity, t, record, actor, now)
    except Conflict as exc:
        return exc.message
    return None


def request(records: Records, entity: Entity, record_id: int, approval: Approval, now: dt.datetime) -> str:
    """Open a step of ``approval`` on the record in a transaction of its own (see NotRequested);
    the approvers' names."""
    with records.transaction() as conn:
        record = records.load(conn, entity, record_id, lock=True)
        if record is None:
            raise NotFound(f"{entity.name} {record_id} does not exist")
        step = _visit_step(records, conn, entity, record, approval.name)
        step_id = step.id if step is not None else _open(records, conn, entity, record, approval, SYSTEM, now)
        return ", ".join(_names(records, conn, _undecided(records, conn, step_id)))


# -- decisions ------------------------------------------------------------------------------------------


def decide(
    records: Records, entity_name: str, record_id: int, approval_name: str, decision: str, comment: str | None, actor: Actor,
    now: dt.datetime | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One approver's decision on the pending step; ``{"approval": step, "record": record}``."""
    entity = records.entity(entity_name)
    a = _approval(entity, approval_name)
    if decision not in DECISIONS:
        raise ValidationFailed("decision must be approve or reject", {"decision": "expected approve or reject"})
    if comment is not None and not isinstance(comment, str):
        raise ValidationFailed("comment must be text", {"comment": "expected text"})
    now = now or dt.datetime.now(dt.UTC)
    with records.transaction() as conn:
        if records.query.one(conn, entity, actor, record_id) is None:
            raise not_visible(entity, record_id)
        record = records.load(conn, entity, int(record_id), lock=True)
        assert record is not None
        step = _pending_step(records, conn, entity, record["id"], a.name)
        if step is None:
            message = Msg("there is no pending approval %(approval)s on %(entity)s %(id)s", approval=_named(a),
                          entity=Named(entity.name, entity.label), id=record_id)  # fmt: skip
            raise Conflict(message, {"approval": a.name})
        status = _record_decision(records, conn, step, a, decision, comment, actor, now)
        changes = {"decision": [None, decision]} | ({"approval": ["pending", status]} if status != "pending" else {})
        _audit(records, conn, entity, record["id"], a.name, actor, now, changes, comment)
        if status == "approved":
            _approved_event(records, conn, entity, record, a, actor, now)
        elif status == "rejected" and a.on_reject:
            _run_on_reject(records, conn, entity, record, a, actor, comment, now)
        after = records.load(conn, entity, record["id"]) or record
        return {"approval": _steps_json(records, conn, entity, record["id"], step_id=step.id)[0],
                "record": records.to_api(conn, entity, [after], actor)[0]}  # fmt: skip


def _record_decision(records: Records, conn: Connection, step: Row, a: Approval, decision: str, comment: str | None,
                     actor: Actor, now: dt.datetime) -> str:  # fmt: skip
    approvers = records.schema.system["kiln_approvers"]
    votes = {r.user_id: r.decision for r in conn.execute(select(approvers).where(approvers.c.approval_id == step.id))}
    if actor.id not in votes:
        who = Names([Named(u) for u in _names(records, conn, list(votes))])
        raise Forbidden(Msg("only the approvers of %(approval)s may decide: %(who)s", approval=_named(a), who=who))
    if votes[actor.id] is not None:
        raise Conflict(Msg("you have already decided on %(approval)s (%(decision)s)", approval=_named(a), decision=votes[actor.id]),
                       {"decision": Msg("already decided")})  # fmt: skip
    conn.execute(
        update(approvers).where(approvers.c.approval_id == step.id, approvers.c.user_id == actor.id)
        .values(decision=decision, comment=comment, decided_at=now)
    )  # fmt: skip
    votes[actor.id] = decision
    if decision == "reject":
        status = "rejected"
    elif step.mode == "any" or all(v == "approve" for v in votes.values()):
        status = "approved"
    else:
        return "pending"
    table = records.schema.system["kiln_approvals"]
    # The status guard makes two concurrent last decisions close the step once (no row lock on SQLite).
    done = conn.execute(update(table).where(table.c.id == step.id, table.c.status == "pending").values(status=status, closed_at=now))
    if done.rowcount != 1:
        raise Conflict(Msg("approval %(approval)s was decided by someone else just now; reload", approval=_named(a)), {"approval": a.name})
    return status


def _approved_event(records: Records, conn: Connection, entity: Entity, record: dict[str, Any], a: Approval, actor: Actor,
                    now: dt.datetime) -> None:  # fmt: skip
    # ``approved(A)`` rules run through the rules runtime's event entry point, once it has one.
    sla.on_event(records, conn, entity, record, f"approved({a.name})", now)  # a clock may start or stop on it
    run_event = getattr(rules, "run_event", None)
    if callable(run_event):
        run_event(records, conn, entity, record, f"approved({a.name})", actor, now)


def _run_on_reject(records: Records, conn: Connection, entity: Entity, record: dict[str, Any], a: Approval, actor: Actor,
                   comment: str | None, now: dt.datetime) -> None:  # fmt: skip
    """Run ``on_reject`` as the system in a savepoint: a transition that cannot run from here
    leaves the rejection standing and says why in the history, instead of refusing the rejection."""
    note = f"{a.name} rejected by {actor.username}" + (f": {comment}" if comment else "")
    try:
        with conn.begin_nested():
            workflow.transition_in(records, conn, entity, record["id"], a.on_reject or "", {}, SYSTEM, now, comment=note)
    except RecordError as exc:
        _audit(records, conn, entity, record["id"], a.name, SYSTEM, now, {}, f"on_reject {a.on_reject} did not run: {exc.message}")


# -- reading ------------------------------------------------------------------------------------------------


def steps(records: Records, entity_name: str, record_id: int, actor: Actor) -> list[dict[str, Any]]:
    """The approval steps of one record the actor may read, oldest first."""
    entity = records.entity(entity_name)
    with records.instance.engine.connect() as conn:
        if records.query.one(conn, entity, actor, record_id) is None:
            raise not_visible(entity, record_id)
        return _steps_json(records, conn, entity, int(record_id))


def inbox(records_by_app: Mapping[str, Records], actor: Actor) -> list[dict[str, Any]]:
    """The pending steps on which ``actor`` still has to decide, oldest first, across apps."""
    if actor.id is None or not records_by_app:
        return []
    any_records = next(iter(records_by_app.values()))
    system = any_records.schema.system
    steps_t, approvers = system["kiln_approvals"], system["kiln_approvers"]
    query = (
        select(steps_t)
        .join(approvers, approvers.c.approval_id == steps_t.c.id)
        .where(approvers.c.user_id == actor.id, approvers.c.decision.is_(None), steps_t.c.status == "pending",
               steps_t.c.app.in_(sorted(records_by_app)))
        .order_by(steps_t.c.opened_at, steps_t.c.id).limit(INBOX_LIMIT)
    )  # fmt: skip
    with any_records.instance.engine.connect() as conn:
        out = []
        for step in conn.execute(query):
            records = records_by_app[step.app]
            entity = records.app.entity(step.entity)
            a = _find(entity, step.name) if entity else None
            if entity is None or a is None:
                continue  # the definition no longer has it
            main = records.tables(entity).main
            row = conn.execute(select(main.c.id, main.c.number, main.c.state).where(main.c.id == step.record_id)).first()
            if row is None:
                continue
            out.append({
                "app": step.app, "entity": step.entity, "record_id": step.record_id, "number": row.number, "state": row.state,
                "approval": step.name, "label": a.shown(records.app.locale), "mode": step.mode,
                "opened_at": to_json(step.opened_at),
            })  # fmt: skip
        return out


# -- steps -------------------------------------------------------------------------------------------------


def _approval(entity: Entity, name: str) -> Approval:
    found = _find(entity, name)
    if found is None:
        names = [a.name for a in entity.workflow.approvals] if entity.workflow else []
        raise NotFound(f"{entity.name} has no approval '{name}'{did_you_mean(name, names)}")
    return found


def _find(entity: Entity, name: str) -> Approval | None:
    return entity.workflow.approval(name) if entity.workflow else None


def _guards(records: Records, conn: Connection, entity: Entity, t: Transition, record: Mapping[str, Any], actor: Actor,
            now: dt.datetime) -> list[tuple[Approval, Row | None]]:  # fmt: skip
    """The approvals guarding ``t``, each with this visit's step: those whose ``when`` holds on
    ``record``, and those with a step opened in this visit whatever ``when`` says now. A step
    answers the request as it was made: lowering the cost under the threshold while it waits
    does not let ``t`` past it; the approvers decide, or the record leaves the state."""
    change = Change(entity, None, dict(record), actor, now)
    guards = []
    for a in entity.workflow.approvals if entity.workflow else ():
        if a.before != t.name:
            continue
        step = _visit_step(records, conn, entity, record, a.name)
        if (step is not None and step.status != "approved") or _holds(records, conn, entity, a.when, record, change):
            guards.append((a, step))
    return guards


def _visit_step(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], name: str) -> Row | None:
    """The latest step of approval ``name`` opened since the record entered its current state."""
    table = records.schema.system["kiln_approvals"]
    step = conn.execute(
        select(table).where(table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == record["id"],
                            table.c.name == name).order_by(table.c.id.desc()).limit(1)
    ).first()  # fmt: skip
    entered = record.get(entered_column(record.get("state") or ""))
    if step is None or step.state != record.get("state") or (entered is not None and step.opened_at < entered):
        return None
    return step


def _pending_step(records: Records, conn: Connection, entity: Entity, record_id: int, name: str) -> Row | None:
    table = records.schema.system["kiln_approvals"]
    query = select(table).where(
        table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == record_id, table.c.name == name,
        table.c.status == "pending",
    ).order_by(table.c.id.desc()).limit(1)  # fmt: skip
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # two approvers deciding at once take turns
    return conn.execute(query).first()


def _open(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], a: Approval, actor: Actor,
          now: dt.datetime) -> int:  # fmt: skip
    users = _approver_ids(records, conn, a.approvers)
    if not users:
        raise Conflict(f"approval {a.name} has no approvers ({_describe(a.approvers)} has no active users); add one first",
                       {"approval": a.name})  # fmt: skip
    system = records.schema.system
    step_id = conn.execute(
        insert(system["kiln_approvals"]).values(
            app=records.app.name, entity=entity.name, record_id=record["id"], name=a.name, state=record.get("state"),
            mode=a.mode, status="pending", opened_at=now,
        ).returning(system["kiln_approvals"].c.id)
    ).scalar_one()  # fmt: skip
    conn.execute(insert(system["kiln_approvers"]), [{"approval_id": step_id, "user_id": u} for u in users])
    _audit(records, conn, entity, record["id"], a.name, actor, now, {"approval": [None, "pending"]}, None)
    for user_id in sorted(set(users)):
        _grant(records, conn, entity, record["id"], user_id, f"approval:{a.name}", now)
        _notify(records, conn, entity, record, f"approval:{a.name}/{step_id}", user_id, "approval_requested", now, approval=a.name)
    return step_id


def _steps_json(records: Records, conn: Connection, entity: Entity, record_id: int, step_id: int | None = None) -> list[dict[str, Any]]:
    system = records.schema.system
    table, approvers = system["kiln_approvals"], system["kiln_approvers"]
    query = select(table).where(table.c.app == records.app.name, table.c.entity == entity.name, table.c.record_id == record_id)
    rows = list(conn.execute(query.where(table.c.id == step_id) if step_id else query.order_by(table.c.id)))
    votes = list(conn.execute(select(approvers).where(approvers.c.approval_id.in_([r.id for r in rows]))))
    names = records.users.usernames(conn, [v.user_id for v in votes])
    out = []
    for r in rows:
        a = _find(entity, r.name)
        out.append({
            "id": r.id, "name": r.name, "label": a.shown(records.app.locale) if a else r.name, "status": r.status,
            "mode": r.mode, "state": r.state, "opened_at": to_json(r.opened_at), "closed_at": to_json(r.closed_at),
            "approvers": [{"user": names.get(v.user_id), "decision": v.decision, "comment": v.comment,
                           "decided_at": to_json(v.decided_at)} for v in votes if v.approval_id == r.id],
        })  # fmt: skip
    return out


def _undecided(records: Records, conn: Connection, step_id: int) -> list[int]:
    approvers = records.schema.system["kiln_approvers"]
    return list(conn.execute(select(approvers.c.user_id).where(approvers.c.approval_id == step_id, approvers.c.decision.is_(None))).scalars())


def _audit(records: Records, conn: Connection, entity: Entity, record_id: int, name: str, actor: Actor, now: dt.datetime,
           changes: dict[str, Any], comment: str | None) -> None:  # fmt: skip
    audit.record_change(
        conn, records.schema.system["kiln_audit"], app=records.app.name, entity=entity.name, record_id=record_id,
        action=f"approval:{name}", actor=actor, at=now, changes=changes, comment=comment,
    )  # fmt: skip


# -- who: approvers and cc recipients ------------------------------------------------------------------------


def _approver_ids(records: Records, conn: Connection, who: Approvers) -> list[int]:
    if who.role:
        return _role_users(records, conn, who.role)
    if who.team:
        return _team_users(records, conn, who.team)
    return sorted(records.users.ids(conn, who.users).values())


def _describe(who: Approvers) -> str:
    return f"role {who.role}" if who.role else f"team {who.team}" if who.team else "users " + ", ".join(who.users)


def _role_users(records: Records, conn: Connection, role: str) -> list[int]:
    return [uid for uid, _ in assignment.role_users(conn, records, role)]


def _team_users(records: Records, conn: Connection, team: str) -> list[int]:
    return [uid for uid, _ in assignment.team_members(conn, records, team)]


def _recipients(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], to: Any) -> set[int]:
    """User ids of a recipients spec: ``{role|team|users}``, ``role:X``, ``team:X``, a user field
    or ``created_by`` (one link hop allowed: ``device.owner``), ``manager_of(F)``, ``lead_of(T)``."""
    if isinstance(to, list):
        return {u for item in to for u in _recipients(records, conn, entity, record, item)}
    if isinstance(to, dict):
        return set(_approver_ids(records, conn, Approvers(role=to.get("role"), team=to.get("team"), users=tuple(to.get("users") or ()))))
    text = str(to).strip()
    users_t, teams = records.schema.system["kiln_users"], records.schema.system["kiln_teams"]
    if prefix := _PREFIX.match(text):
        kind, name = prefix.groups()
        return set(_role_users(records, conn, name) if kind == "role" else _team_users(records, conn, name))
    if func := _FUNC.match(text):
        kind, arg = func.groups()
        if kind == "manager_of":
            ids = _field_users(records, conn, entity, record, arg)
            return set(conn.execute(select(users_t.c.manager_id).where(users_t.c.id.in_(ids), users_t.c.manager_id.is_not(None))).scalars())
        team = record.get(arg) if entity.field(arg) is not None else arg
        lead = conn.execute(select(teams.c.lead_id).where(teams.c.app == records.app.name, teams.c.name == team)).scalar()
        return {lead} if lead is not None else set()
    return _field_users(records, conn, entity, record, text)


def _field_users(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], path: str) -> set[int]:
    head, _, rest = path.partition(".")
    value = record.get(head)
    if rest:
        f = entity.field(head)
        target = records.app.entity(f.entity or "") if f is not None and f.type == "link" and not f.is_multi else None
        linked = records.load(conn, target, value) if target is not None and value is not None else None
        return _field_users(records, conn, target, linked, rest) if target is not None and linked else set()
    return {v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)}


def _carbon_copy(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], to: Any, index: int,
                 now: dt.datetime) -> None:  # fmt: skip
    users = _recipients(records, conn, entity, record, to)
    for user_id in sorted(users):
        if _grant(records, conn, entity, record["id"], user_id, f"cc:{index}", now):
            _notify(records, conn, entity, record, f"cc/{user_id}", user_id, "cc", now)


def _grant(records: Records, conn: Connection, entity: Entity, record_id: int, user_id: int, reason: str, now: dt.datetime) -> bool:
    """Grant read access; False when the user already had a grant on the record."""
    table = records.schema.system["kiln_read_grants"]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(
        app=records.app.name, entity=entity.name, record_id=record_id, user_id=user_id, reason=reason, granted_at=now
    ).on_conflict_do_nothing(index_elements=["app", "entity", "record_id", "user_id"])
    # RETURNING, not rowcount: what rowcount says after ON CONFLICT DO NOTHING differs by driver.
    return conn.execute(statement.returning(table.c.user_id)).first() is not None


def _notify(records: Records, conn: Connection, entity: Entity, record: Mapping[str, Any], event: str, user_id: int, kind: str,
            now: dt.datetime, **extra: Any) -> None:  # fmt: skip
    """Queue an in-app message in the outbox, in this transaction; recipients are user ids, as
    the rules' ``notify`` queues them."""
    app = records.app.name
    outbox.enqueue(
        conn, records.schema.system["kiln_outbox"], app=app, entity=entity.name, record_id=record["id"], event_key=f"{app}/{entity.name}/{record['id']}/{event}",
        channel="in_app", recipient=str(user_id), now=now,
        payload={"event": kind, "app": app, "entity": entity.name, "record_id": record["id"], "number": record.get("number"),
                 "state": record.get("state"), **extra},
    )  # fmt: skip


def _holds(records: Records, conn: Connection, entity: Entity, expr: Expr | None, record: Mapping[str, Any], change: Change) -> bool:
    if expr is None:
        return True
    checker = records.checker
    ctx = checker.context(conn, entity, record, change.before, change.actor, change.now)
    return bool(checker.evaluate(expr, ctx))


def _named(a: Approval) -> Named:
    """An approval in a message: its name for the API, its label on the pages."""
    return Named(a.name, a.label)


def _names(records: Records, conn: Connection, ids: list[int]) -> list[str]:
    return sorted(records.users.usernames(conn, ids).values()) or ["nobody"]
