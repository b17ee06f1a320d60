"""Workflow transitions of SPEC.md section 3: who may move a record, from where, with what.

A transition is checked in full before anything is written: the transition exists, the record is
readable, the version is current, the record is in a ``from`` state, the actor has one of the
``roles`` (none listed: whoever may update the record) and is the ``only:`` user, the comment is
given where required, the ``requires:`` fields are filled once ``values`` are applied, the
``when:`` guard holds and no approval blocks it (:mod:`engine.approvals`). Each refusal raises a
:class:`~engine.errors.RecordError` saying why, so a refused transition changes nothing. Then
:meth:`Records.update_in` moves the record (its values, state, ``entered_<state>_at``, version
and audit entry ``transition:<name>`` in one write) and fires the rules.

The system (rules, jobs, an approval's ``on_reject``) skips ``roles`` and ``only:`` but not
``from``, ``requires``, ``when`` or approvals: "performed as the system, skipping role checks".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from engine import approvals
from engine.actors import Actor
from engine.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RecordError,
    StaleVersion,
    ValidationFailed,
    did_you_mean,
    not_visible,
)
from engine.messages import Msg, Named, Names
from engine.model import Entity, Label, Transition, Workflow
from engine.rules import Change
from engine.values import is_empty

if TYPE_CHECKING:
    from engine.records import Records


@dataclass(frozen=True)
class Available:
    """A transition the actor may take now, for the pages' buttons and the API: the fields its
    dialog asks for, whether it wants a comment, and why it is blocked if it is (a pending
    approval, a guard that does not hold yet) so a page can show it disabled with the reason."""

    name: str
    label: Label
    to: str
    requires: tuple[str, ...]
    comment: str  # required | optional | none
    blocked: str | None = None

    def as_json(self, locale: str = "zh") -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label.get(locale), "to": self.to, "requires": list(self.requires),
            "comment": self.comment, "blocked": self.blocked,
        }  # fmt: skip


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def transition(
    records: Records, entity_name: str, record_id: int, name: str, values: Mapping[str, Any], version: int | None,
    actor: Actor, comment: str | None = None, now: dt.datetime | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Take transition ``name`` in a transaction of its own; the record as JSON for ``actor``."""
    entity = records.entity(entity_name)
    now = now or _utcnow()
    try:
        with records.transaction() as conn:
            record = transition_in(records, conn, entity, record_id, name, values, actor, now, comment, version)
            return records.to_api(conn, entity, [record], actor)[0]
    except approvals.NotRequested as exc:
        # The guard of an approval holds but no step was opened (the record changed while it sat
        # in the state): open one now, in its own transaction, so the approvers can act on it.
        who = approvals.request(records, entity, record_id, exc.approval, now)
        message = Msg("%(transition)s needs approval %(approval)s first; it is now waiting for %(who)s",
                      transition=named(_find(entity, _workflow(entity), name)), approval=Named(exc.approval.name, exc.approval.label), who=who)
        raise Conflict(message, {"approval": exc.approval.name}) from None


def transition_in(
    records: Records, conn: Connection, entity: Entity, record_id: int, name: str, values: Mapping[str, Any],
    actor: Actor, now: dt.datetime, comment: str | None = None, version: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Take transition ``name`` inside the caller's transaction; returns the stored record as
    Python values (as :meth:`Records.update_in` does). ``version`` may be None for the system."""
    workflow = _workflow(entity)
    t = _find(entity, workflow, name)
    if records.query.one(conn, entity, actor, record_id) is None:
        raise not_visible(entity, record_id)
    before = records.load(conn, entity, int(record_id), lock=True)
    if before is None:
        raise NotFound(f"{entity.name} {record_id} does not exist")
    if version is None and not actor.is_system:
        raise ValidationFailed("the record's version is required (If-Match)", {"version": "required"})
    if version is not None and before["version"] != version:
        raise StaleVersion(
            f"{entity.name} {record_id} was changed by someone else (version {before['version']}, you sent {version}); reload and try again"
        )
    locale = actor.locale or records.app.locale
    refusal = _from_refusal(workflow, t, before, locale) or _actor_refusal(records, conn, entity, t, before, actor)
    if refusal is not None:
        raise refusal
    if t.comment == "required" and (not isinstance(comment, str) or not comment.strip()):
        raise ValidationFailed(Msg("a comment is required to %(transition)s", transition=named(t)), {"comment": Msg("required")})
    parsed = records.parse_input(conn, entity, values, actor, creating=False)
    extra = sorted(set(parsed) - set(t.requires))
    if extra and not actor.is_system and not records.query.may_update(conn, entity, actor, before["id"]):
        # The transition's own fields come with it; anything else needs the right to update.
        message = (
            Msg("%(transition)s sets only %(fields)s; you may not change %(extra)s", transition=named(t), fields=fields_named(entity, t.requires),
                extra=fields_named(entity, extra))
            if t.requires else Msg("%(transition)s sets no fields; you may not change %(extra)s", transition=named(t), extra=fields_named(entity, extra))
        )  # fmt: skip
        raise Forbidden(message, {f: Msg("you may not change this field") for f in extra})
    record = {**before, **parsed}
    missing = [f for f in t.requires if is_empty(record.get(f))]
    if missing:
        raise ValidationFailed(Msg("%(transition)s needs: %(fields)s", transition=named(t), fields=fields_named(entity, missing)),
                               {f: Msg("required to %(transition)s", transition=named(t)) for f in missing})  # fmt: skip
    if t.when is not None and not _holds(records, conn, entity, t.when, record, before, actor, now):
        raise Conflict(Msg("cannot %(transition)s: the condition `%(condition)s` does not hold", transition=named(t), condition=t.when.source),
                       {"when": t.when.source})  # fmt: skip
    approvals.check_before(records, conn, entity, t, record, actor, now)
    after = records.update_in(
        conn, entity, before["id"], values, version, actor, now, comment, move_to=t.to, transition=t.name, authorized=True
    )
    approvals.on_change(records, conn, Change(entity, before, after, actor, now, transition=t.name))
    return after


def available(records: Records, entity_name: str, record_id: int, actor: Actor, now: dt.datetime | None = None) -> list[Available]:
    """The transitions ``actor`` may take on the record now (from its state, by role and
    ``only:``), in definition order; an unreadable record is a 404."""
    entity = records.entity(entity_name)
    if entity.workflow is None:
        return []
    now = now or _utcnow()
    with records.instance.engine.connect() as conn:
        record = records.query.one(conn, entity, actor, record_id)
        if record is None:
            raise not_visible(entity, record_id)
        out = []
        for t in entity.workflow.transitions:
            if not t.applies_from(record.get("state") or "") or _actor_refusal(records, conn, entity, t, record, actor):
                continue
            blocked = approvals.blocked_by(records, conn, entity, t, record, actor, now)
            if blocked is None and t.when is not None and not _holds(records, conn, entity, t.when, record, None, actor, now):
                blocked = Msg("the condition `%(condition)s` does not hold", condition=t.when.source)
            out.append(Available(t.name, t.label, t.to, t.requires, t.comment, blocked))
        return out


def diagram(entity: Entity, locale: str = "zh") -> str:
    """The workflow as Mermaid ``stateDiagram-v2`` text (the entity page renders it)."""
    workflow = _workflow(entity)
    lines = ["stateDiagram-v2", f"    [*] --> {workflow.initial}"]
    for s in workflow.states:
        lines.append(f"    {s.name}: {_mermaid_text(s.label.get(locale))}")
    for t in workflow.transitions:
        sources = workflow.state_names if "*" in t.sources else t.sources
        for source in sources:
            lines.append(f"    {source} --> {t.to}: {_mermaid_text(t.label.get(locale))}")
    lines.extend(f"    {s.name} --> [*]" for s in workflow.states if s.final)
    return "\n".join(lines) + "\n"


# -- checks -----------------------------------------------------------------------------------------


def _workflow(entity: Entity) -> Workflow:
    if entity.workflow is None:
        raise NotFound(f"entity {entity.name} has no workflow")
    return entity.workflow


def _find(entity: Entity, workflow: Workflow, name: str) -> Transition:
    t = workflow.transition(name)
    if t is None:
        raise NotFound(f"{entity.name} has no transition '{name}'{did_you_mean(name, [t.name for t in workflow.transitions])}")
    return t


def _from_refusal(workflow: Workflow, t: Transition, record: Mapping[str, Any], locale: str) -> RecordError | None:
    state = record.get("state") or ""
    if t.applies_from(state):
        return None

    def label(name: str) -> Named:  # the API reads the state's label in the actor's language
        found = workflow.state(name)
        return Named(found.label.get(locale), found.label) if found else Named(name)

    possible = Names([label(s) for s in t.sources])
    return Conflict(Msg("cannot %(transition)s from %(state)s; possible from: %(states)s", transition=named(t), state=label(state), states=possible),
                    {"state": state})  # fmt: skip


def _actor_refusal(
    records: Records, conn: Connection, entity: Entity, t: Transition, record: Mapping[str, Any], actor: Actor
) -> RecordError | None:
    """Why ``actor`` may not take ``t`` on ``record`` (roles, ``only:``), or None. The system
    skips both; instance admins pass ``roles`` as they pass update scopes, but not ``only:``."""
    if actor.is_system:
        return None
    if t.roles:
        if not (actor.is_admin or set(t.roles) & actor.roles):
            roles = {r.name: r.label for r in records.app.roles}
            allowed = Names([Named(r, roles.get(r)) for r in t.roles])
            if not actor.roles:
                return Forbidden(Msg("only %(roles)s may %(transition)s; you have no role here", roles=allowed, transition=named(t)))
            yours = Names([Named(r, roles.get(r)) for r in sorted(actor.roles)])
            return Forbidden(Msg("only %(roles)s may %(transition)s; you have %(yours)s here", roles=allowed, transition=named(t), yours=yours))
    elif not records.query.may_update(conn, entity, actor, record["id"]):
        return Forbidden(Msg("you may not change %(entity)s %(id)s, so you may not %(transition)s it", entity=Named(entity.name, entity.label),
                             id=record["id"], transition=named(t)))  # fmt: skip
    if t.only is not None:
        value = record.get(t.only)
        if actor.id is None or actor.id not in (value if isinstance(value, list) else [value]):
            field = entity.field(t.only)
            who = Named("the creator", CREATOR) if t.only == "created_by" else Named(f"the {t.only}", field.label if field else None)
            return Forbidden(Msg("only %(who)s of this %(entity)s may %(transition)s", who=who, entity=Named(entity.name, entity.label),
                                 transition=named(t)), {t.only: Msg("not you")})  # fmt: skip
    return None


def _holds(
    records: Records, conn: Connection, entity: Entity, expr: Any, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
    actor: Actor, now: dt.datetime,
) -> bool:  # fmt: skip
    checker = records.checker
    return bool(checker.evaluate(expr, checker.context(conn, entity, record, previous, actor, now)))


def _mermaid_text(text: str) -> str:
    # Mermaid ends a label at a newline and reads ':' and ';' as syntax.
    return " ".join(text.replace(":", " ").replace(";", " ").split())


CREATOR = Label((("zh", "创建人"), ("en", "creator")))


def named(t: Transition) -> Named:
    """A transition in a message: its name for the API, its label on the pages."""
    return Named(t.name, t.label)


def fields_named(entity: Entity, names: Any) -> Names:
    """Fields in a message: their names for the API, their labels on the pages."""
    return Names([Named(n, f.label if (f := entity.field(n)) is not None else None) for n in names])
