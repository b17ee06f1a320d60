"""Checks a schema cannot make: references between entities, fields, states, roles, teams...

Runs on the built model (the document already has the right shapes) and reports every name that
points nowhere, with the valid names it could have meant. Expressions are not looked at here: the
expression compiler checks them.

Where the caller passes the located document too, a problem points at the exact value (the ``to:``
of a transition, the second item of a ``requires:`` list); without it, at the model object's place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from engine import surveys
from engine.errors import Loc, Problem, ProblemList, did_you_mean
from engine.model import Action, App, Dashboard, Entity, Template, Workflow
from engine.schema_events import (
    DURATION_HELP,
    SLA_EVENTS,
    Event,
    cron_problem,
    parse_duration,
    parse_event,
)
from engine.source import Map, PathLoc, Seq

Path = tuple[str | int, ...]

_PLACEHOLDER = re.compile(r"\{([^{}:]*)(?::[^{}]*)?\}")
_RECIPIENT_FUNC = re.compile(r"^(manager_of|lead_of)\(\s*([A-Za-z0-9_.]+)\s*\)$")
_RECIPIENT_PREFIX = re.compile(r"^(role|team):\s*(\S+)$")
_SYSTEM_TYPES = {
    "id": "integer", "number": "text", "state": "select", "created_at": "datetime", "created_by": "user",
    "updated_at": "datetime", "version": "integer",
}  # fmt: skip
_NUMERIC = ("integer", "decimal", "rating", "computed")
_TIMESTAMP = ("date", "datetime")


def check(app: App, document: Map | None = None) -> list[Problem]:
    """Every reference problem of ``app``; ``document`` (the located source) sharpens places."""
    return sorted(set(_Checker(app, document).run()))


class _Checker:
    def __init__(self, app: App, document: Map | None) -> None:
        self.app = app
        self.document = document
        self.problems = ProblemList()

    # -- places and reporting ---------------------------------------------------------------------
    def node(self, path: Path) -> Any:
        """The document's value at ``path``, or None."""
        node: Any = self.document
        for part in path:
            if isinstance(node, Map) and isinstance(part, str) and part in node:
                node = node[part]
            elif isinstance(node, Seq) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                return None
        return node

    def at(self, path: Path, fallback: Loc) -> Loc:
        """The place of the value at ``path`` in the document, or ``fallback``."""
        if self.document is None or (self.node(path) is None and self.node(path[:-1]) is None):
            return fallback
        return PathLoc(self.document)(path) if self.node(path) is not None else fallback

    def at_key(self, path: Path, fallback: Loc) -> Loc:
        """The place of the key at the end of ``path`` (for names that are keys)."""
        parent = self.node(path[:-1])
        return parent.loc_of_key(str(path[-1])) if isinstance(parent, Map) and path[-1] in parent else fallback

    def item(self, path: Path, index: int, fallback: Loc) -> Loc:
        """The place of item ``index`` of a value written as one name or a list of names."""
        return self.at((*path, index) if isinstance(self.node(path), Seq) else path, fallback)

    def error(self, loc: Loc, message: str) -> None:
        self.problems.add(loc, message)

    def warn(self, loc: Loc, message: str) -> None:
        self.problems.add(loc, message, "warning")

    def names(self, path: Path, names: Iterable[str], valid: Iterable[str], what: str, fallback: Loc, of: str = "") -> None:
        """Each of ``names`` must be one of ``valid`` (``what`` they are, ``of`` what entity)."""
        valid = tuple(valid)
        owner = f" of {of}" if of else ""
        for i, name in enumerate(names):
            if name not in valid:
                self.error(self.item(path, i, fallback), f"unknown {what} '{name}'{owner}{_hint(name, valid)}")

    # -- the app ----------------------------------------------------------------------------------
    def run(self) -> list[Problem]:
        for entity in self.app.entities:
            self.entity(entity)
        for dashboard in self.app.dashboards:
            self.dashboard(dashboard)
        return self.problems.problems

    def entity(self, e: Entity) -> None:
        base: Path = ("entities", e.name)
        entity_names = tuple(x.name for x in self.app.entities)
        if e.renamed_from and e.renamed_from in entity_names:
            self.error(self.at((*base, "renamed_from"), e.loc), f"entity '{e.renamed_from}' still exists; renamed_from names an old name")
        self.placeholders(e, base, "title", e.title, ())
        self.placeholders(e, base, "number", e.number, ("created", "seq"))
        self.fields(e, base)
        for i, section in enumerate(e.form):
            self.field_names(e, (*base, "form", i, "fields"), section.fields, section.loc)
        for i, validation in enumerate(e.validations):
            self.field_names(e, (*base, "validations", i, "fields"), validation.fields, validation.loc)
        if e.assigned_fields != ("assignee",):  # the default may be absent: then 'assigned' matches nothing
            for i, name in enumerate(e.assigned_fields):
                self.user_field(e, name, self.item((*base, "assigned_fields"), i, e.loc), "assigned_fields")
        if e.workflow:
            self.workflow(e, e.workflow, (*base, "workflow"))
        self.permissions(e, base)
        self.rules_and_sla(e, base)

    def fields(self, e: Entity, base: Path) -> None:
        entity_names = tuple(x.name for x in self.app.entities)
        entered = {f"entered_{s}_at" for s in e.states}
        for f in e.fields:
            fpath = (*base, "fields", f.name)
            if f.entity is not None and f.entity not in entity_names:
                self.error(self.at((*fpath, "entity"), f.loc), f"link field {f.name} points to unknown entity '{f.entity}'{_hint(f.entity, entity_names)}")
            if f.role is not None and f.role not in self.app.role_names:
                self.error(self.at((*fpath, "role"), f.loc), f"unknown role '{f.role}'{_hint(f.role, self.app.role_names)}")
            if f.renamed_from and f.renamed_from in e.field_names:
                self.error(self.at((*fpath, "renamed_from"), f.loc), f"field '{f.renamed_from}' still exists; renamed_from names an old name")
            if f.name in entered:
                self.error(self.at_key(fpath, f.loc), f"field name '{f.name}' is taken by the engine's timestamp of state '{f.name[8:-3]}'")

    def permissions(self, e: Entity, base: Path) -> None:
        assigned = [name for name in e.assigned_fields if e.field(name) is not None]
        for p in e.permissions:
            ppath = (*base, "permissions", p.role)
            if p.role not in self.app.role_names:
                self.error(self.at_key(ppath, p.loc), f"unknown role '{p.role}'{_hint(p.role, self.app.role_names)}")
            self.field_names(e, (*ppath, "hide"), p.hide, p.loc)
            self.field_names(e, (*ppath, "readonly"), p.readonly, p.loc)
            if p.update and p.update.states:
                self.names((*ppath, "update", "states"), p.update.states, e.states, "state", p.loc, e.name)
            for key, scope in (("read", p.read), ("update", p.update.scope if p.update else None)):
                if scope in ("assigned", "team") and not assigned:
                    self.error(
                        self.at((*ppath, key), p.loc),
                        f"'{scope}' scope needs a user field named in assigned_fields (default: assignee); {e.name} has none",
                    )

    def rules_and_sla(self, e: Entity, base: Path) -> None:
        for i, rule in enumerate(e.rules):
            rpath = (*base, "rules", i)
            self.event(e, rule.on, self.at((*rpath, "on"), rule.loc), SLA_EVENTS + ("updated", "schedule"))
            self.actions(e, (*rpath, "do"), rule.actions)
        for i, sla in enumerate(e.sla):
            spath = (*base, "sla", i)
            self.event(e, sla.start, self.at((*spath, "start"), sla.loc), SLA_EVENTS)
            self.event(e, sla.stop, self.at((*spath, "stop"), sla.loc), SLA_EVENTS)
            self.names((*spath, "pause_in"), sla.pause_in, e.states, "state", sla.loc, e.name)
            if sla.calendar not in self.app.calendar_names:
                self.error(self.at((*spath, "calendar"), sla.loc), f"unknown calendar '{sla.calendar}'{_hint(sla.calendar, self.app.calendar_names)}")
            self.duration(sla.target, self.at((*spath, "target"), sla.loc))
            for j, esc in enumerate(sla.escalations):
                self.duration(esc.after, self.at((*spath, "escalations", j, "after"), esc.loc))
                self.actions(e, (*spath, "escalations", j, "do"), esc.actions)

    # -- fields -----------------------------------------------------------------------------------
    def field_type(self, e: Entity, path: str) -> str | None:
        """The type of a field path (``device.line`` follows a link), or None if it leads nowhere."""
        entity: Entity | None = e
        parts = path.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            f = entity.field(part) if entity else None
            if f is None:
                kind = _SYSTEM_TYPES.get(part) or ("datetime" if entity and part in {f"entered_{s}_at" for s in entity.states} else None)
                return kind if last else None
            if last:
                return f.type
            if f.type != "link":
                return None
            entity = self.app.entity(f.entity or "")
        return None

    def path_problem(self, e: Entity, path: str) -> str | None:
        entity = e
        parts = path.split(".")
        for i, part in enumerate(parts):
            if self.field_type(entity, part) is None:
                names = (*entity.field_names, *_SYSTEM_TYPES, *(f"entered_{s}_at" for s in entity.states))
                return f"unknown field '{part}' of entity {entity.name}{_hint(part, names)}"
            if i < len(parts) - 1:
                f = entity.field(part)
                if f is None or f.type != "link":
                    return f"'{part}' of entity {entity.name} is not a link, so '{'.'.join(parts[: i + 2])}' cannot follow it"
                target = self.app.entity(f.entity or "")
                if target is None:
                    return f"link '{part}' points to an unknown entity"
                entity = target
        return None

    def field_names(self, e: Entity, path: Path, names: Iterable[str], fallback: Loc, follow: bool = False) -> None:
        for i, name in enumerate(names):
            if follow:
                problem = self.path_problem(e, name)
            elif e.field(name) is None:
                problem = f"unknown field '{name}' of entity {e.name}{_hint(name, e.field_names)}"
            else:
                problem = None
            if problem:
                self.error(self.item(path, i, fallback), problem)

    def user_field(self, e: Entity, name: str, loc: Loc, what: str) -> None:
        """``name`` must be a user field of ``e`` (or created_by); a path may follow links."""
        problem = self.path_problem(e, name)
        if problem:
            self.error(loc, problem)
        elif self.field_type(e, name) != "user":
            users = [f.name for f in e.fields if f.type == "user"] + ["created_by"]
            self.error(loc, f"{what} '{name}' is not a user field; user fields of {e.name}: {', '.join(users)}")

    def placeholders(self, e: Entity, base: Path, key: str, text: str | None, extra: tuple[str, ...]) -> None:
        if not text:
            return
        loc = self.at((*base, key), e.loc)
        names = (*e.field_names, *_SYSTEM_TYPES, *extra)
        found = [m.group(1).strip() for m in _PLACEHOLDER.finditer(text)]
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1).strip()
            if name not in names and self.field_type(e, name) is None:
                self.error(_inside(loc, text, match.start()), f"unknown field '{name}' in {key} of {e.name}{_hint(name, names)}")
        if key == "number" and "seq" not in found:
            self.error(loc, "a number format needs a {seq} counter, e.g. \"MX{created:%Y%m%d}-{seq:4}\"")

    # -- workflow ---------------------------------------------------------------------------------
    def workflow(self, e: Entity, w: Workflow, base: Path) -> None:
        states = w.state_names
        if w.initial not in states:
            self.error(self.at((*base, "initial"), w.loc), f"initial state '{w.initial}' is not a state of {e.name}{_hint(w.initial, states)}")
        for s in w.states:
            spath = (*base, "states", s.name)
            self.names((*spath, "visible_to"), s.visible_to, self.app.role_names, "role", s.loc)
            if s.renamed_from and s.renamed_from in states:
                self.error(self.at((*spath, "renamed_from"), s.loc), f"state '{s.renamed_from}' still exists; renamed_from names an old state")
        transitions = tuple(t.name for t in w.transitions)
        errors_before = len(self.problems.errors)
        for t in w.transitions:
            tpath = (*base, "transitions", t.name)
            sources = [s for s in t.sources if s != "*"]
            self.names((*tpath, "from"), sources, states, "state", t.loc, e.name)
            if "*" in t.sources and len(t.sources) > 1:
                self.error(self.at((*tpath, "from"), t.loc), "from: \"*\" means every state; do not list others with it")
            if t.to not in states:
                self.error(self.at((*tpath, "to"), t.loc), f"unknown state '{t.to}' of {e.name}{_hint(t.to, states)}")
            self.names((*tpath, "roles"), t.roles, self.app.role_names, "role", t.loc)
            if t.only is not None:
                self.user_field(e, t.only, self.at((*tpath, "only"), t.loc), "only:")
            self.field_names(e, (*tpath, "requires"), t.requires, t.loc)
        for a in w.approvals:
            apath = (*base, "approvals", a.name)
            if a.before is not None and a.before not in transitions:
                self.error(self.at((*apath, "before"), a.loc), f"unknown transition '{a.before}'{_hint(a.before, transitions)}")
            if a.on_reject is not None and a.on_reject not in transitions:
                self.error(self.at((*apath, "on_reject", "transition"), a.loc), f"unknown transition '{a.on_reject}'{_hint(a.on_reject, transitions)}")
            if a.approvers.role is not None:
                self.names((*apath, "approvers", "role"), [a.approvers.role], self.app.role_names, "role", a.loc)
            if a.approvers.team is not None:
                self.names((*apath, "approvers", "team"), [a.approvers.team], self.app.team_names, "team", a.loc)
        for i, cc in enumerate(w.cc):
            self.recipients(e, (*base, "cc", i, "to"), cc.to, cc.loc)
        for old, new in w.state_map:
            if new not in states:
                self.error(self.at((*base, "state_map", old), w.loc), f"state_map maps '{old}' to unknown state '{new}'{_hint(new, states)}")
            if old in states:
                self.error(self.at_key((*base, "state_map", old), w.loc), f"state '{old}' still exists; state_map maps removed states")
        if w.initial not in states or len(self.problems.errors) > errors_before:
            return  # with a broken state or transition, reachability says nothing useful
        reachable = {w.initial}
        for _ in states:  # a fixed point: at most one round per state
            reachable |= {t.to for t in w.transitions if "*" in t.sources or reachable & set(t.sources)}
        for s in w.states:
            if s.name not in reachable and w.transitions:
                self.warn(s.loc, f"state '{s.name}' cannot be reached from '{w.initial}' by any transition")

    # -- events, durations, recipients ------------------------------------------------------------
    def event(self, e: Entity, text: str, loc: Loc, allowed: Iterable[str]) -> None:
        event = parse_event(text)
        if isinstance(event, str):
            self.error(loc, event)
            return
        allowed = tuple(allowed)
        if event.kind not in allowed:
            self.error(loc, f"'{event.kind}' cannot be used here; use one of: {', '.join(allowed)}")
            return
        self.event_arg(e, event, loc, text)

    def event_arg(self, e: Entity, event: Event, loc: Loc, text: str) -> None:
        w = e.workflow
        arg = event.arg or ""
        if event.kind != "schedule":  # point at the name inside the parentheses
            loc = _inside(loc, text, text.find(arg, text.find("(")))
        if event.kind == "schedule":
            problem = cron_problem(arg)
            if problem:
                self.error(loc, problem)
            return
        if event.kind == "field_set":
            if e.field(arg) is None:
                self.error(loc, f"unknown field '{arg}' of entity {e.name}{_hint(arg, e.field_names)}")
            return
        if event.kind not in ("entered", "left", "transition", "approved"):
            return  # created, updated: nothing to look up
        if w is None:
            self.error(loc, f"{event.kind}({arg}): entity {e.name} has no workflow")
            return
        choices = {
            "entered": w.state_names, "left": w.state_names,
            "transition": tuple(t.name for t in w.transitions), "approved": tuple(a.name for a in w.approvals),
        }.get(event.kind)  # fmt: skip
        if choices is not None and arg not in choices:
            what = {"entered": "state", "left": "state"}.get(event.kind, event.kind.replace("approved", "approval"))
            self.error(loc, f"unknown {what} '{arg}' in {event}{_hint(arg, choices)}")

    def duration(self, text: str, loc: Loc) -> None:
        value = parse_duration(text)
        if value is None:
            self.error(loc, f"'{text}' is not a duration; {DURATION_HELP}")
        elif value.total_seconds() <= 0:
            self.error(loc, f"a duration of '{text}' is no time at all; {DURATION_HELP}")

    def recipients(self, e: Entity, path: Path, value: Any, fallback: Loc) -> None:
        items = list(value) if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            loc = self.at((*path, i) if isinstance(value, list) else path, fallback)
            if isinstance(item, dict):
                for kind, names in ((k, item[k]) for k in ("role", "team") if k in item):
                    valid = self.app.role_names if kind == "role" else self.app.team_names
                    if names not in valid:
                        self.error(loc, f"unknown {kind} '{names}'{_hint(str(names), valid)}")
                continue
            text = str(item)
            prefix, func = _RECIPIENT_PREFIX.match(text), _RECIPIENT_FUNC.match(text)
            if prefix:
                kind, name = prefix.groups()
                valid = self.app.role_names if kind == "role" else self.app.team_names
                if name not in valid:
                    self.error(loc, f"unknown {kind} '{name}'{_hint(name, valid)}")
            elif func and func.group(1) == "manager_of":
                self.user_field(e, func.group(2), loc, "manager_of")
            elif func:
                team = func.group(2)
                if team not in self.app.team_names and self.field_type(e, team) != "team":
                    self.error(loc, f"lead_of needs a team or a team field; unknown team '{team}'{_hint(team, self.app.team_names)}")
            else:
                self.user_field(e, text, loc, "recipient")

    # -- actions ----------------------------------------------------------------------------------
    def actions(self, e: Entity, path: Path, actions: tuple[Action, ...]) -> None:
        for i, action in enumerate(actions):
            apath = (*path, i, action.kind)
            handler = getattr(self, f"action_{action.kind}", None)
            if handler is not None:
                handler(e, apath, action.args if action.args is not None else {}, action.loc)

    def action_transition(self, e: Entity, path: Path, name: Any, loc: Loc) -> None:
        transitions = tuple(t.name for t in e.workflow.transitions) if e.workflow else ()
        if not e.workflow:
            self.error(self.at(path, loc), f"entity {e.name} has no workflow, so there is no transition '{name}'")
        elif name not in transitions:
            self.error(self.at(path, loc), f"unknown transition '{name}'{_hint(str(name), transitions)}")

    def action_assign(self, e: Entity, path: Path, args: dict, loc: Loc) -> None:
        self.user_field(e, str(args.get("field", "assignee")), self.at((*path, "field"), loc), "assign field")
        if "team" in args:
            self.names((*path, "team"), [args["team"]], self.app.team_names, "team", loc)
        if "role" in args:
            self.names((*path, "role"), [args["role"]], self.app.role_names, "role", loc)
        if "from" in args:
            self.user_field(e, str(args["from"]), self.at((*path, "from"), loc), "assign from")

    def action_notify(self, e: Entity, path: Path, args: dict, loc: Loc) -> None:
        self.recipients(e, (*path, "to"), args.get("to"), loc)
        template = args.get("template")
        if template is not None and template not in self.app.template_names:
            self.error(self.at((*path, "template"), loc), f"unknown template '{template}'{_hint(str(template), self.app.template_names)}")
        found = next((t for t in self.app.notifications.templates if t.name == template), None)
        self.survey(e, path, found, args.get("message"), loc)
        configured = {name for name, _ in self.app.notifications.channels} | {"in_app"}
        for i, channel in enumerate(args.get("channels") or ()):
            if channel not in configured:
                self.warn(self.item((*path, "channels"), i, loc), f"channel '{channel}' is not configured under notifications.channels")

    def survey(self, e: Entity, path: Path, template: Template | None, message: Any, loc: Loc) -> None:
        """A message with ``{survey_url}`` needs a rating field on the entity (engine/surveys.py)."""
        texts = [t for _, t in (*template.body.texts, *(template.subject.texts if template.subject else ()))] if template else []
        if not surveys.uses_survey(*texts, message):
            return
        where = self.at((*path, "template" if template else "message"), loc)
        config = template.survey if template is not None else None
        if config is None or config.field is None:
            if surveys.rating_field(e, None) is None:
                self.warn(where, f"{{survey_url}} needs a rating field on entity {e.name} (type: rating) or the template's survey.field; until then the message carries no survey link")
            return
        field = e.field(config.field)
        if field is None or field.type != "rating":
            self.error(template.loc if template else where, f"survey.field '{config.field}' must be a rating field of entity {e.name}{_hint(config.field, tuple(f.name for f in e.fields if f.type == 'rating'))}")
        if config.comment is not None:
            comment = e.field(config.comment)
            if comment is None or comment.type not in ("text", "textarea"):
                self.error(template.loc if template else where, f"survey.comment '{config.comment}' must be a text or textarea field of entity {e.name}")
        if parse_duration(config.expires) is None:
            self.error(template.loc if template else where, f"survey.expires '{config.expires}' is not a duration (e.g. 14d, 72h)")

    def action_set(self, e: Entity, path: Path, args: dict, loc: Loc) -> None:
        for name in args:
            f = e.field(name)
            if f is None:
                self.error(self.at_key((*path, name), loc), f"unknown field '{name}' of entity {e.name}{_hint(name, e.field_names)}")
            elif f.is_computed:
                self.error(self.at_key((*path, name), loc), f"field '{name}' is computed and cannot be set")

    def action_create(self, e: Entity, path: Path, args: dict, loc: Loc) -> None:
        self.other_entity(path, args, loc, "values")

    def action_update(self, e: Entity, path: Path, args: dict, loc: Loc) -> None:
        self.other_entity(path, args, loc, "values")

    def other_entity(self, path: Path, args: dict, loc: Loc, key: str) -> None:
        names = tuple(x.name for x in self.app.entities)
        target = self.app.entity(str(args.get("entity")))
        if target is None:
            self.error(self.at((*path, "entity"), loc), f"unknown entity '{args.get('entity')}'{_hint(str(args.get('entity')), names)}")
            return
        for name in args.get(key) or {}:
            if target.field(name) is None:
                self.error(self.at_key((*path, key, name), loc), f"unknown field '{name}' of entity {target.name}{_hint(name, target.field_names)}")

    # -- dashboards -------------------------------------------------------------------------------
    def dashboard(self, d: Dashboard) -> None:
        base: Path = ("dashboards", d.name)
        self.names((*base, "roles"), d.roles, self.app.role_names, "role", d.loc)
        names = tuple(x.name for x in self.app.entities)
        seen: set[str] = set()
        card_entities: list[Entity] = []
        for i, card in enumerate(d.cards):
            cpath = (*base, "cards", i)
            if card.name in seen:
                self.error(self.at((*cpath, "name"), card.loc), f"card name '{card.name}' is used twice in dashboard {d.name}")
            seen.add(card.name)
            e = self.app.entity(card.entity)
            if e is None:
                self.error(self.at((*cpath, "entity"), card.loc), f"unknown entity '{card.entity}'{_hint(card.entity, names)}")
                continue
            card_entities.append(e)
            self.card(e, card, cpath)
        for i, name in enumerate(d.filters):
            if card_entities and all(self.path_problem(e, name) for e in card_entities):
                self.error(self.item((*base, "filters"), i, d.loc), self.path_problem(card_entities[0], name) or "")

    def card(self, e: Entity, card: Any, path: Path) -> None:
        for key in ("group_by", "field", "from", "to"):
            value = card.option(key)
            if value is None:
                continue
            loc = self.at((*path, key), card.loc)
            problem = self.path_problem(e, str(value))
            if problem:
                self.error(loc, problem)
            elif key == "field" and self.field_type(e, str(value)) not in _NUMERIC:
                self.error(loc, f"a {card.type} card needs a number field; '{value}' is a {self.field_type(e, str(value))} field")
            elif key in ("from", "to") and self.field_type(e, str(value)) not in _TIMESTAMP:
                self.error(loc, f"'{value}' is not a date or time; use created_at, entered_<state>_at or a date/datetime field")
        self.field_names(e, (*path, "fields"), card.option("fields") or (), card.loc, follow=True)
        sort = card.option("sort")
        if sort is not None:
            problem = self.path_problem(e, str(sort).lstrip("-"))
            if problem:
                self.error(self.at((*path, "sort"), card.loc), problem)
        if card.option("last") is not None:
            self.duration(str(card.option("last")), self.at((*path, "last"), card.loc))


def _hint(word: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not choices:
        return " (none are defined)"
    return did_you_mean(word, choices) or f"; expected one of: {', '.join(sorted(choices))}"


def _inside(loc: Loc, text: str, offset: int) -> Loc:
    """The place ``offset`` characters into a one-line scalar that starts at ``loc``."""
    return loc.shifted(offset) if offset > 0 and "\n" not in text else loc
