"""What the rules of one event change in their record, held in memory until it is written
(docs/rules.md, "One write for one event's rules").

While an event's rules run, a change of their record's own fields (``set``, ``assign``, tags in
the entity's tags field) is staged here with its audit entry, later rules' conditions see it at
once, and :func:`engine.rules.write_pending` writes them all as one update (or, for a record being
created, as its INSERT). A rule made only of ``set`` with literal values and of tag actions on the
tags field is worked out once into edits (:func:`own_edits`) and staged without a ``Scope``, the
actions' dispatch or a step in the chain of rules: nothing such a rule does can fire another before
its changes are written. A new ticket's routing and tagging rules are mostly such rules.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import audit, tags
from engine.actors import Actor
from engine.errors import RecordError
from engine.model import Entity, Field, Rule

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.records import Records

Edit = Callable[[Mapping[str, Any]], dict[str, Any] | None]  # a record -> the values an action gives it; None: no change

# The parsed values of ``set`` actions whose values are all literals, per app: id(args) -> (args, values).
_literals: weakref.WeakKeyDictionary[Records, dict[int, tuple[Mapping[str, Any], dict[str, Any] | None]]] = weakref.WeakKeyDictionary()


@dataclass
class Pending:
    """The changes the rules of one event made to their record in memory, not yet written: the
    record as it was before the first of them, the rules that made them and the fields they set."""

    before: dict[str, Any] | None = None
    rules: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # the rules' audit entries, in order
    unsaved: bool = False  # the record is being created and is not stored yet (engine.rules.create)
    fields: set[str] = field(default_factory=set)  # the fields the staged changes set

    def stage(self, record: dict[str, Any], rule: str, names: list[str]) -> None:
        if self.before is None:
            self.before = record
        if rule not in self.rules:
            self.rules.append(rule)
        self.fields.update(names)


def own_edits(records: Records, conn: Connection, entity: Entity, rule: Rule, trigger: Actor) -> tuple[tuple[str, Edit], ...] | None:
    """(action kind, edit) for each of ``rule``'s actions when each only edits the record's own
    fields with values known in advance; None when one does more."""
    edits: list[tuple[str, Edit]] = []
    own_tags = entity.tags_field
    acting = trigger.as_rule(rule.name)  # values parsed as the rule's actions parse them
    for action in rule.actions:
        if action.kind == "set" and isinstance(action.args, Mapping):
            values = literal_values(records, conn, entity, action.args, acting)
            if values is None:
                return None
            edits.append((action.kind, lambda _record, values=values: values))
        elif action.kind in tags.TAG_ACTIONS and own_tags is not None:
            edits.append((action.kind, tags.own_tags_edit(own_tags, tags.tag_list(action.args), adding=action.kind == "add_tag")))
        else:
            return None
    return tuple(edits)


def stage_edits(
    records: Records, conn: Connection, entity: Entity, pending: Pending, record: dict[str, Any], rule: Rule,
    edits: tuple[tuple[str, Edit], ...], trigger: Actor, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """Stage ``rule``'s edits of ``record`` in order, as its actions would; the record after them."""
    acting = trigger.as_rule(rule.name)
    for kind, edit in edits:
        incoming = edit(record)
        if incoming is not None:
            try:
                record = stage_change(records, conn, entity, pending, record, incoming, rule.name, acting, now)
            except RecordError as exc:
                name_failure(exc, rule, kind)
                raise
    return record


def stage_change(
    records: Records, conn: Connection, entity: Entity, pending: Pending, record: dict[str, Any],
    incoming: Mapping[str, Any], rule: str, acting: Actor, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """Stage a rule's change of ``record`` (values as stored) with its audit entry naming the
    rule; the record with it (``record`` itself when it changes nothing). Written with the event's
    other staged changes (:func:`engine.rules.write_pending`); later rules' conditions see it at
    once."""
    if entity.guarded_fields:
        records.checker.check_readonly_if(conn, entity, record, incoming, acting, now)
    after = {**record, **incoming}
    computed = entity.computed_names
    if computed:
        records.checker.compute(conn, entity, after, acting, now)
        names = [f.name for f in entity.fields if (f.name in incoming or f.name in computed) and after.get(f.name) != record.get(f.name)]
    elif len(incoming) == 1:  # the common action: one field (a tag list, a set, an assignee)
        names = [name for name in incoming if after[name] != record.get(name)]
    else:  # in the entity's order, as the trail lists fields
        names = [f.name for f in entity.fields if f.name in incoming and after[f.name] != record.get(f.name)]
    if not names:
        return record
    changes = records.audit_changes(conn, entity, record, after, names)
    pending.entries.append(rule_entry(records, entity, record, "update", acting, now, changes))
    pending.stage(record, rule, names)
    return after


def rule_entry(
    records: Records, entity: Entity, record: Mapping[str, Any], action: str, acting: Actor, now: dt.datetime,
    changes: Mapping[str, Any], comment: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The audit entry of a rule's action on ``record`` (``acting``: the rule's actor)."""
    return audit.entry(
        app=records.app.name, entity=entity.name, record_id=record["id"], action=action, actor=acting, at=now,
        changes=changes, comment=comment,
    )  # fmt: skip


def name_failure(exc: RecordError, rule: Rule, kind: str) -> None:
    """Say in ``exc`` which rule's action failed, so the definition can be fixed."""
    exc.message = f"rule '{rule.name}' ({kind}): {exc.message}"
    exc.args = (exc.message,)


def literal_values(records: Records, conn: Connection, entity: Entity, args: Mapping[str, Any], actor: Actor) -> dict[str, Any] | None:
    """The values of a ``set`` whose every value is a literal (``urgency: high``), parsed once
    per app and kept: the same for every record. None when one is an expression, names a field
    whose value is looked up (users, links, files) or holds a list, or does not parse (then the
    general path reports it)."""
    cache = _literals.setdefault(records, {})
    kept = cache.get(id(args))
    if kept is not None and kept[0] is args:
        return kept[1]
    fields = [entity.field(name) for name in args]
    literal = all(
        f is not None and not f.is_multi and f not in entity.reference_fields and (not isinstance(raw, str) or is_literal(f, raw))
        for f, raw in zip(fields, args.values(), strict=True)
    )  # fmt: skip
    parsed = None
    if literal:
        try:
            parsed = records.parse_input(conn, entity, args, actor, creating=False)
        except RecordError:
            parsed = None
    cache[id(args)] = (args, parsed)
    return parsed


def is_literal(f: Field, raw: str) -> bool:
    """Values that would also parse as expressions but mean themselves: option keys, dates."""
    if f.type in ("select", "multiselect"):
        return raw in f.option_keys
    if f.type in ("date", "datetime", "time"):
        try:
            dt.datetime.fromisoformat(raw) if f.type != "time" else dt.time.fromisoformat(raw)
        except ValueError:
            return False
        return True
    return False
