"""Rules of SPEC.md section 5: what a change sets off (docs/rules.md).

``run`` is called by the records service after every create, update and transition, inside the
same transaction, with the :class:`Change`; ``run_event`` raises events that happen outside
records (``approved(A)``). The entity's rules that listen to one of the change's events run in the
order written, each when its ``when`` holds on the record as it is by then (``previous()`` and
``changed()`` compare with the record before the change). Every action acts as
``actor.as_rule(rule.name)``, so the audit trail names the rule, and in the same transaction, so a
failing action rolls back the change that fired it. Actions that change records fire those
records' rules in turn; a chain deeper than :data:`MAX_DEPTH` is refused with :class:`RuleLoop`.

Actions live beside the things they touch: ``assign`` in :mod:`engine.assignment`, tags and marks
in :mod:`engine.tags`, ``notify``/``webhook`` in :mod:`engine.outbox`; ``set``, ``create``,
``update`` and ``transition`` (plain record changes) are here. What one event's rules change in
their record is held in memory until it is written (:mod:`engine.staging`).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from engine import assignment, audit, outbox, staging, tags
from engine.actors import SYSTEM, Actor
from engine.cron import cron_matches, cron_sets
from engine.errors import Conflict, DefinitionError, RecordError, ValidationFailed
from engine.expressions import Compiled, SqlContext, compile_expression
from engine.expressions.checker import Checker
from engine.expressions.parser import ExprError, parse
from engine.model import Action, App, Entity, Field, Rule
from engine.schema_events import parse_event
from engine.values import is_empty

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.expressions import EvalContext
    from engine.records import Records

MAX_DEPTH = 8  # rules firing rules: deeper than this is a loop in the definition
MAX_UPDATE = 1000  # records one ``update`` action may change


class RuleLoop(RecordError):
    """Rules kept firing each other; the whole change is refused (and rolled back)."""

    status = 409
    code = "rule_loop"


@dataclass(frozen=True)
class Change:
    """One change of a record: ``before`` is None for a create; ``transition`` names the
    workflow transition that moved it, if one did."""

    entity: Entity
    before: dict[str, Any] | None
    after: dict[str, Any]
    actor: Actor
    now: dt.datetime
    transition: str | None = None


# -- plans: which rules listen to what, worked out once per app --------------------------------

_UNKNOWN: Any = object()


@dataclass
class EntityPlan:
    rules: tuple[tuple[Rule, str, Compiled | None], ...]  # (rule, its normalised event, its when), in the order written
    events: frozenset[str]
    watched: tuple[str, ...]  # the fields some field_set(F) watches
    # A rule's actions as edits of its record's own fields (engine.staging.own_edits), by id of
    # the rule (kept alive by ``rules``); None for a rule with another action. Worked out at its
    # first run.
    edits: dict[int, tuple[tuple[str, staging.Edit], ...] | None] = field(default_factory=dict)
    _listening: dict[frozenset[str], tuple[tuple[Rule, Compiled | None], ...]] = field(default_factory=dict)

    def listening(self, events: set[str]) -> tuple[tuple[Rule, Compiled | None], ...]:
        """(rule, its when) of the rules listening to one of ``events``, in the order written;
        worked out once per set of events (a creation's, an update's ...), so a change's rules
        are not looked through for the ones that listen."""
        key = frozenset(events)
        found = self._listening.get(key)
        if found is None:
            found = self._listening[key] = tuple((rule, when) for rule, event, when in self.rules if event in key)
        return found


_plans: weakref.WeakKeyDictionary[Records, dict[str, EntityPlan | None]] = weakref.WeakKeyDictionary()
_chain: ContextVar[tuple[str, ...]] = ContextVar("kiln_rule_chain", default=())
# Action values compiled per app: (rule's entity, entity, source, this) -> Compiled or None.
_values: weakref.WeakKeyDictionary[Records, dict[tuple[str, str, str, str | None], Compiled | None]] = weakref.WeakKeyDictionary()


def plan(records: Records, entity: Entity) -> EntityPlan | None:
    """The entity's rules by event, or None when it has none that changes fire (the fast path)."""
    per_app = _plans.get(records)
    if per_app is None:
        per_app = _plans[records] = {}
    if entity.name not in per_app:
        listening = tuple(
            (r, event_name(r.on), None if r.when is None else records.expr(r.when))
            for r in entity.rules if not r.on.strip().startswith("schedule")
        )  # fmt: skip
        events = frozenset(e for _, e, _ in listening)
        watched = tuple(e[len("field_set(") : -1] for e in events if e.startswith("field_set("))
        per_app[entity.name] = EntityPlan(listening, events, watched) if listening else None
    return per_app[entity.name]


def event_name(text: str) -> str:
    """``field_set( report )`` -> ``field_set(report)``: one spelling to compare."""
    event = parse_event(text)
    return text.strip() if isinstance(event, str) else str(event)


def events_of(change: Change, watched: tuple[str, ...]) -> set[str]:
    """The events of a change. ``field_set(F)``: F holds a non-empty value that differs from the
    one before (so filling F, and replacing its value, both count; clearing it does not)."""
    before, after = change.before or {}, change.after
    events = {"created"} if change.before is None else {"updated"}
    old_state, new_state = before.get("state"), after.get("state")
    if new_state is not None and new_state != old_state:
        events.add(f"entered({new_state})")
        if old_state is not None:
            events.add(f"left({old_state})")
    if change.transition:
        events.add(f"transition({change.transition})")
    for name in watched:
        value = after.get(name)
        if not is_empty(value) and value != before.get(name):
            events.add(f"field_set({name})")
    return events


# -- running -----------------------------------------------------------------------------------


def run(records: Records, conn: Connection, change: Change) -> dict[str, Any] | None:
    """Run the entity's rules for ``change``; the record as they left it when one acted, else
    None."""
    entity_plan = plan(records, change.entity)
    if entity_plan is None:
        return None
    events = events_of(change, entity_plan.watched) & entity_plan.events
    if not events:
        return None
    key = change_key(records, change.entity, change.after)
    return fire(records, conn, change.entity, change.after, change.before, events, change.actor, change.now, key)


def change_key(records: Records, entity: Entity, record: Mapping[str, Any]) -> str:
    """The outbox's event key of a change of ``record`` (its id and the version it reached)."""
    return f"{records.app.name}/{entity.name}/{record['id']}/v{record.get('version')}"


def create(records: Records, conn: Connection, change: Change, created: dict[str, Any]) -> dict[str, Any]:
    """Store a new record after the rules of its creation (``created``, ``entered(<initial>)``,
    ``field_set(F)``) ran on it in memory; returns it as stored.

    What they set, assign or tag in the record's own fields goes into the row as it is first
    written, each change with its own audit entry after ``created`` (the creation's), so a
    ticket that five rules route and tag is one INSERT, not an INSERT and an UPDATE. An action
    that needs the stored record (a notification, a mark, a transition, a created record ...)
    stores it first, as it is by then, and the rules go on as after any change. A ``count(...)``
    over the record's own entity counts the record itself while it is not stored yet, as it
    would once it is. The rules' changes are still an update to the rules listening for one
    (``updated``, ``field_set(F)``): they run once it is stored."""
    entity_plan = plan(records, change.entity)
    events = events_of(change, entity_plan.watched) & entity_plan.events if entity_plan is not None else set()
    if not events:
        return records.insert(conn, change.entity, change.after, [created], change.actor, change.now)
    pending = staging.Pending(entries=[created], unsaved=True)
    return fire(records, conn, change.entity, change.after, None, events, change.actor, change.now, None, pending)


def run_event(
    records: Records, conn: Connection, entity: Entity, record: dict[str, Any], event: str, actor: Actor, now: dt.datetime
) -> dict[str, Any] | None:
    """Run the rules listening to ``event`` (e.g. ``approved(director_approval)``) on ``record``;
    the record as they left it when one acted, else None."""
    entity_plan = plan(records, entity)
    name = event_name(event)
    if entity_plan is None or name not in entity_plan.events:
        return None
    key = f"{records.app.name}/{entity.name}/{record['id']}/v{record.get('version')}/{name}"
    return fire(records, conn, entity, record, record, {name}, actor, now, key)


def fire(
    records: Records, conn: Connection, entity: Entity, record: dict[str, Any], before: dict[str, Any] | None,
    events: set[str], actor: Actor, now: dt.datetime, key: str | None, pending: staging.Pending | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Run, in order, the rules listening to one of ``events`` whose condition holds; the record
    as they left it (reloaded after every action that wrote it, staged changes written) when one
    did, else None. ``pending`` of a record not stored yet (:func:`create`): it is stored here,
    and returned whatever the rules did; ``key`` is None then (the outbox's keys need its id)."""
    entity_plan = plan(records, entity)
    assert entity_plan is not None
    chain = _chain.get()
    current, acted = record, False
    pending = pending or staging.Pending()
    storing = pending.unsaved
    ctx, ctx_unsaved = None, False  # the conditions' context, made again once the record is stored
    scope: Scope | None = None  # one for the event's rules, handed on from rule to rule
    for rule, when in entity_plan.listening(events):
        if when is not None:
            if ctx is None or ctx_unsaved != pending.unsaved:
                ctx = records.checker.context(conn, entity, current, before, actor, now, unsaved=pending.unsaved)
                ctx_unsaved = pending.unsaved
            if not when.evaluate(ctx):
                continue
        if len(chain) >= MAX_DEPTH:
            names = " -> ".join((*chain, rule.name))
            raise RuleLoop(f"rules keep firing each other ({names}); stopped after {MAX_DEPTH} steps and changed nothing")
        edits = entity_plan.edits.get(id(rule), _UNKNOWN)
        if edits is _UNKNOWN:
            edits = entity_plan.edits[id(rule)] = staging.own_edits(records, conn, entity, rule, actor)
        if edits is not None:  # nothing to dispatch, nothing that fires rules in turn
            current, acted = staging.stage_edits(records, conn, entity, pending, current, rule, edits, actor, now), True
        else:
            rule_key = None if key is None else f"{key}/rule:{rule.name}"
            if scope is None:
                scope = Scope(records, conn, entity, current, before, actor, now, rule, rule_key, pending=pending)
            else:
                scope.record, scope.rule, scope.key = current, rule, rule_key
            token = _chain.set((*chain, rule.name))
            try:
                current, acted = run_actions(scope), True
            finally:
                _chain.reset(token)
        if ctx is not None:
            ctx.record = current  # the next rules' conditions see the record as this one left it
    current = write_pending(records, conn, entity, pending, current, actor, now)
    return current if acted or storing else None


def write_pending(
    records: Records, conn: Connection, entity: Entity, pending: staging.Pending, record: dict[str, Any], trigger: Actor,
    now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """Write the staged changes as one update (whose events fire the rules again, one level
    deeper in the chain), after the audit entries the rules held; returns the record as written.
    A record not stored yet is stored as it is now, with them (:func:`store`)."""
    if pending.unsaved:
        return store(records, conn, entity, pending, record, trigger, now)
    if pending.entries:
        entries, pending.entries = pending.entries, []
        audit.write(conn, records.schema.system["kiln_audit"], entries)
    if pending.before is None:
        return record
    before, names = pending.before, list(pending.rules)
    pending.before, pending.rules, pending.fields = None, [], set()
    with _staged_by(names):
        return records.write_staged(conn, entity, before, record, trigger.as_rule(", ".join(names)), now)


@contextmanager
def _staged_by(names: list[str]) -> Iterator[None]:
    """While the changes rules ``names`` staged are written: the chain of rules is one level
    deeper (what that write sets off counts towards the depth limit), and a refusal names the
    rules (a validation their changes together break)."""
    token = _chain.set((*_chain.get(), " + ".join(names)))
    try:
        yield
    except RuleLoop:
        raise
    except RecordError as exc:
        exc.message = f"rule '{', '.join(names)}': {exc.message}"
        exc.args = (exc.message,)
        raise
    finally:
        _chain.reset(token)


def store(
    records: Records, conn: Connection, entity: Entity, pending: staging.Pending, record: dict[str, Any], trigger: Actor,
    now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """Store the record being created as the rules of its creation left it, with their audit
    entries after the creation's; then, if they changed it, run the rules listening for that
    change (``updated``, ``field_set(F)``) as for an update. Returns the record as stored."""
    entries, pending.entries = pending.entries, []
    before, names, staged = pending.before, list(pending.rules), pending.fields
    pending.before, pending.rules, pending.fields, pending.unsaved = None, [], set(), False
    if before is None:
        return records.insert(conn, entity, record, entries, trigger, now)
    acting = trigger.as_rule(", ".join(names))
    with _staged_by(names):  # checked, stored and reacted to as write_pending writes staged changes
        changed = {name for name in staged if record.get(name) != before.get(name)}
        records.checker.validate(conn, entity, record, None, acting, now, changed=changed)
        stored = records.insert(conn, entity, record, entries, trigger, now)
        entity_plan = plan(records, entity)
        assert entity_plan is not None
        before = {**before, "id": stored["id"]}
        events = events_of(Change(entity, before, stored, acting, now), entity_plan.watched) & entity_plan.events
        if not events:
            return stored
        # keyed apart from the creation's own rules, which share the record's version (1)
        key = f"{change_key(records, entity, stored)}/rules"
        return fire(records, conn, entity, stored, before, events, acting, now, key) or stored


def run_actions(scope: Scope) -> dict[str, Any]:
    """The rule's actions in order; returns the record as they left it."""
    for index, action in enumerate(scope.rule.actions):
        handler = ACTIONS.get(action.kind)
        if handler is None:
            raise ValidationFailed(f"rule '{scope.rule.name}': unknown action '{action.kind}'")
        pending = scope.pending
        if pending is not None and (action.kind not in STAGED_ACTIONS or (pending.unsaved and not _in_memory(action, scope.entity))):
            # A transition, a create or an update reads the stored record: write what is staged;
            # an action that names the record (an outbox row, a mark) needs it stored.
            scope.record = write_pending(scope.records, scope.conn, scope.entity, pending, scope.record, scope.trigger, scope.now)
        scope.index = index
        try:
            changed = handler(scope, action.args)
        except RuleLoop:
            raise
        except RecordError as exc:
            staging.name_failure(exc, scope.rule, action.kind)
            raise
        if changed:  # reload: the change may have fired further rules that changed it again
            scope.record = scope.records.load(scope.conn, scope.entity, scope.record["id"]) or scope.record
    return scope.record


# -- the scope an action runs in ---------------------------------------------------------------


@dataclass
class Scope:
    """One rule acting on one record: what its actions read and write with."""

    records: Records
    conn: Connection
    entity: Entity
    record: dict[str, Any]
    before: dict[str, Any] | None
    trigger: Actor  # who made the change (``user`` in conditions)
    now: dt.datetime
    rule: Rule
    key: str | None  # the event key of the outbox (None: made from the record once it is stored)
    index: int = 0  # the action being run
    pending: staging.Pending | None = None  # changes of the record staged by this event's rules

    def change(self, values: Mapping[str, Any]) -> bool:
        """Change the rule's own record; True when the caller must reload it. While an event's
        rules run, the change is made in memory, with its own audit entry naming this rule, and
        written with the others' after them (:func:`write_pending`); later rules' conditions
        see it at once."""
        if self.pending is not None:
            values = self.records.parse_input(self.conn, self.entity, values, self.actor, creating=False)
        return self.change_parsed(values)

    def change_parsed(self, incoming: Mapping[str, Any]) -> bool:
        """:meth:`change` with values already as they are stored (a tag action's new list, made
        of the record's own tags and tags it checked): not parsed again while changes are staged
        (written at once, they go through the update's own parsing and checks)."""
        if self.pending is None:
            self.records.update_in(self.conn, self.entity, self.record["id"], incoming, None, self.actor, self.now)
            return True
        self.record = staging.stage_change(self.records, self.conn, self.entity, self.pending, self.record, incoming, self.rule.name, self.actor, self.now)
        return False

    def audit(self, action: str, changes: Mapping[str, Any], comment: str | None = None) -> None:
        """An audit entry of the rule's record naming the rule. While an event's rules run it is
        held with their staged changes and written with them, in order, by one statement."""
        entry = staging.rule_entry(self.records, self.entity, self.record, action, self.actor, self.now, changes, comment)
        if self.pending is not None:
            self.pending.entries.append(entry)
        else:
            audit.write(self.conn, self.records.schema.system["kiln_audit"], [entry])

    @property
    def actor(self) -> Actor:
        return self.trigger.as_rule(self.rule.name)  # one per rule, kept (engine/actors.py)

    @property
    def event_key(self) -> str:
        key = self.key or f"{change_key(self.records, self.entity, self.record)}/rule:{self.rule.name}"
        return f"{key}/{self.index}"

    def context(self, entity: Entity | None = None, record: Mapping[str, Any] | None = None) -> EvalContext:
        entity = entity or self.entity
        own = entity is self.entity and record is None
        record = self.record if record is None else record
        previous = self.before if entity is self.entity else None
        unsaved = own and self.pending is not None and self.pending.unsaved
        return self.records.checker.context(self.conn, entity, record, previous, self.trigger, self.now, unsaved=unsaved)

    def compiled(self, source: str, entity: Entity | None = None, this: Entity | None = None) -> Compiled | None:
        """``source`` compiled over ``entity`` (``this``: the rule's record), or None when it is not
        an expression there (then it is literal text); compiled once per app."""
        entity = entity or self.entity
        cache = _values.setdefault(self.records, {})  # also for SLA actions of entities without rules
        key = (self.entity.name, entity.name, source, this.name if this else None)
        if key not in cache:
            cache[key] = _compile(self.records, source, entity, this, self.rule)
        return cache[key]

    def value(self, f: Field | None, raw: Any, entity: Entity | None = None, this: Entity | None = None,
              ctx: Callable[[], EvalContext] | None = None) -> Any:  # fmt: skip
        """An action's value for field ``f``: a literal, or an expression's value."""
        if not isinstance(raw, str) or (f is not None and staging.is_literal(f, raw)):
            return raw
        compiled = self.compiled(raw, entity, this)
        if compiled is None:
            return raw
        return compiled.evaluate(ctx() if ctx else self.context())

    def values(
        self, target: Entity, raw: Mapping[str, Any], over: Entity | None = None, this: Entity | None = None,
        ctx: Callable[[], EvalContext] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Values for fields of ``target``, expressions read over ``over`` (default: the rule's entity)."""
        return {name: self.value(target.field(name), v, over, this, ctx) for name, v in (raw or {}).items()}


def _compile(records: Records, source: str, entity: Entity, this: Entity | None, rule: Rule) -> Compiled | None:
    try:
        if this is None:
            return compile_expression(source, rule.loc, records.app, entity, expect=None)
        root = Checker(parse(source), records.app, entity, rule.loc, this_entity=this).check()
        return Compiled(root, source=source, loc=rule.loc, app=records.app, entity=entity, this_entity=this)
    except (DefinitionError, ExprError):
        return None


# -- record actions ----------------------------------------------------------------------------


def action_set(scope: Scope, args: Mapping[str, Any]) -> bool:
    if scope.pending is not None:
        literal = staging.literal_values(scope.records, scope.conn, scope.entity, args, scope.actor)
        if literal is not None:
            return scope.change_parsed(literal)
    return scope.change(scope.values(scope.entity, args))


def action_transition(scope: Scope, name: str) -> bool:
    from engine.workflow import transition_in  # the workflow builds on records, as rules do

    transition_in(scope.records, scope.conn, scope.entity, scope.record["id"], str(name), {}, scope.actor, scope.now)
    return True


def action_create(scope: Scope, args: Mapping[str, Any]) -> bool:
    target = scope.records.entity(str(args["entity"]))
    values = scope.values(target, args.get("values") or {})
    values = {k: v for k, v in values.items() if not is_empty(v)}  # an empty source leaves the default
    created = scope.records.create_in(scope.conn, target, values, scope.actor, scope.now)
    # The rule's own record says what it made (S14's follow-up task), so its history leads there.
    scope.audit(f"create:{target.name}", {"id": [None, created["id"]]})
    return False


def action_update(scope: Scope, args: Mapping[str, Any]) -> bool:
    """Change the records of an entity that match ``where`` (``this`` is the rule's record)."""
    records, target = scope.records, scope.records.entity(str(args["entity"]))
    table = records.tables(target).main
    query = select(table.c.id).order_by(table.c.id).limit(MAX_UPDATE + 1)
    if args.get("where"):
        where = scope.compiled(str(args["where"]), target, this=scope.entity)
        if where is None:
            raise ValidationFailed(f"the where of update is not a valid expression over {target.name}: {args['where']}")
        sql = SqlContext(records.schema, records.app, target, scope.now, scope.trigger, table=table, this_values=scope.record)
        query = query.where(where.clause(sql))
    ids = list(scope.conn.execute(query).scalars())
    if len(ids) > MAX_UPDATE:
        raise Conflict(f"update would change more than {MAX_UPDATE} {target.name} records; narrow its where")
    for record_id in ids:
        row = records.load(scope.conn, target, record_id)
        if row is None:
            continue

        def ctx(row: dict[str, Any] = row) -> EvalContext:
            context = scope.context(target, row)
            context.this = scope.record
            return context

        values = scope.values(target, args["values"], over=target, this=scope.entity, ctx=ctx)
        records.update_in(scope.conn, target, record_id, values, None, scope.actor, scope.now)
    return target.name == scope.entity.name and scope.record["id"] in ids


# Actions that change only the rule's own record (staged, see Scope.change) or other tables.
STAGED_ACTIONS = frozenset({"set", "assign", "add_tag", "remove_tag", "mark", "unmark", "notify", "webhook"})


def _in_memory(action: Action, entity: Entity) -> bool:
    """Whether ``action`` only changes its record's own fields, and so can act on a record not
    stored yet: ``set``, ``assign``, and tags where the entity has a tags field (else they are
    rows of kiln_tags, which need the record's id)."""
    return action.kind in ("set", "assign") or (action.kind in tags.TAG_ACTIONS and entity.tags_field is not None)


ACTIONS: dict[str, Callable[[Scope, Any], bool]] = {
    "set": action_set,
    "transition": action_transition,
    "create": action_create,
    "update": action_update,
    "assign": assignment.action_assign,
    "add_tag": tags.action_add_tag,
    "remove_tag": tags.action_remove_tag,
    "mark": tags.action_mark,
    "unmark": tags.action_unmark,
    "notify": outbox.action_notify,
    "webhook": outbox.action_webhook,
}


# -- scheduled rules ---------------------------------------------------------------------------
# Running them belongs to the time scan (``run.py jobs run-due``): it asks which schedules fell
# due in a window and calls ``run_scheduled`` for each, once per due time.


def due_scheduled_rules(app: App, since: dt.datetime, until: dt.datetime) -> list[tuple[Entity, Rule, dt.datetime]]:
    """Every (entity, scheduled rule, due time) with since < due time <= until, in time order;
    schedules read in the app's timezone. The scan catches up on every time missed, once each."""
    zone = ZoneInfo(app.timezone)
    schedules = []
    for entity in app.entities:
        for rule in entity.rules:
            event = parse_event(rule.on)
            if not isinstance(event, str) and event.kind == "schedule" and event.arg:
                schedules.append((entity, rule, event.arg, cron_sets(event.arg)))
    due: list[tuple[Entity, Rule, dt.datetime]] = []
    if not schedules:
        return due
    moment = since.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while moment <= until:
        local = moment.astimezone(zone)
        due.extend((e, r, moment) for e, r, text, sets in schedules if cron_matches(sets, text, local))
        moment += dt.timedelta(minutes=1)
    return due


def run_scheduled(records: Records, conn: Connection, entity: Entity, rule: Rule, at: dt.datetime) -> int:
    """Run a scheduled rule due at ``at`` on each record its ``when`` selects (in SQL); returns how
    many. The outbox key holds ``at``, so running the same due time twice queues nothing twice."""
    table = records.tables(entity).main
    query = select(table.c.id).order_by(table.c.id)
    if rule.when is not None:
        query = query.where(records.expr(rule.when).clause(SqlContext(records.schema, records.app, entity, at, SYSTEM, table=table)))
    ids = list(conn.execute(query).scalars())
    for record_id in ids:
        record = records.load(conn, entity, record_id)
        if record is not None:
            key = f"{records.app.name}/{entity.name}/{record_id}/at:{at.isoformat()}/rule:{rule.name}"
            token = _chain.set((rule.name,))
            try:
                run_actions(Scope(records, conn, entity, record, None, SYSTEM, at, rule, key))
            finally:
                _chain.reset(token)
    return len(ids)
