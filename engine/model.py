"""The typed, immutable app model: what a validated definition means.

Built once by :mod:`engine.builder` from a validated document; nothing downstream reads raw
dictionaries. Expressions are kept as :class:`Expr` (source text and place); the expression
compiler turns them into predicates and SQL clauses.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.errors import Loc

TITLE_PART = re.compile(r"\{(\w+)\}")  # a placeholder of an entity's title

# The field types of SPEC.md section 2.
FIELD_TYPES = (
    "text", "textarea", "richtext", "integer", "decimal", "boolean", "date", "datetime", "time",
    "select", "multiselect", "tags", "user", "team", "link", "file", "image", "email", "phone",
    "url", "rating", "location", "computed",
)  # fmt: skip
TEXT_TYPES = frozenset({"text", "textarea", "richtext", "email", "phone", "url", "location"})
# Types whose values live in a child table, one row per value.
ALWAYS_MULTI = frozenset({"multiselect", "tags"})
MAY_BE_MULTI = frozenset({"link", "file", "image", "user"})
# Types the engine indexes by default because lists filter on them.
FILTERABLE = frozenset({"select", "user", "team", "link", "date", "datetime", "boolean", "rating"})

SYSTEM_FIELDS = ("id", "number", "state", "created_at", "created_by", "updated_at", "version")


@dataclass(frozen=True)
class Label:
    """A label in one or more locales; ``get`` falls back to any text there is."""

    texts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, value: Any, fallback: str) -> Label:
        if isinstance(value, dict):
            return cls(tuple((str(k), str(v)) for k, v in value.items()))
        if value is None:
            return cls((("", fallback),))
        return cls((("", str(value)),))

    def get(self, locale: str = "zh") -> str:
        mapping = dict(self.texts)
        for key in (locale, "", "zh", "en"):
            if key in mapping:
                return mapping[key]
        return next(iter(mapping.values()))

    def __str__(self) -> str:
        return self.get()


@dataclass(frozen=True)
class Expr:
    """An expression's source and where it sits in the definition."""

    source: str
    loc: Loc

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    label: Label
    loc: Loc
    required: bool = False
    required_if: Expr | None = None
    visible_if: Expr | None = None
    readonly_if: Expr | None = None
    default: Any = None  # a literal value, or an Expr
    unique: bool = False
    index: bool = False
    min: Decimal | None = None
    max: Decimal | None = None
    max_length: int | None = None
    pattern: str | None = None
    disabled: bool = False
    renamed_from: str | None = None
    help: Label | None = None
    options: tuple[tuple[str, Label], ...] = ()
    entity: str | None = None  # link target
    multiple: bool = False
    max_size: int | None = None  # bytes
    accept: tuple[str, ...] = ()
    role: str | None = None  # user fields: the role a chosen user must have
    scale: int = 2  # decimals
    expr: Expr | None = None  # computed

    @property
    def is_multi(self) -> bool:
        return self.type in ALWAYS_MULTI or (self.type in MAY_BE_MULTI and self.multiple)

    @functools.cached_property
    def option_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.options)

    @property
    def is_computed(self) -> bool:
        return self.type == "computed"

    @property
    def filterable(self) -> bool:
        return self.index or self.unique or self.type in FILTERABLE


@dataclass(frozen=True)
class State:
    name: str
    label: Label
    loc: Loc
    color: str | None = None
    final: bool = False
    renamed_from: str | None = None
    visible_to: tuple[str, ...] = ()  # roles; empty: no restriction


@dataclass(frozen=True)
class Transition:
    name: str
    sources: tuple[str, ...]  # ("*",) for any
    to: str
    loc: Loc
    label: Label
    roles: tuple[str, ...] = ()
    only: str | None = None
    requires: tuple[str, ...] = ()
    when: Expr | None = None
    comment: str = "optional"  # optional | required

    def applies_from(self, state: str) -> bool:
        return "*" in self.sources or state in self.sources


@dataclass(frozen=True)
class Approvers:
    role: str | None = None
    team: str | None = None
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Approval:
    name: str
    loc: Loc
    approvers: Approvers
    before: str | None = None
    when: Expr | None = None
    mode: str = "any"
    on_reject: str | None = None  # a transition name
    label: Label | None = None

    def shown(self, locale: str) -> str:
        """The approval's label in ``locale``, else its name."""
        return self.label.get(locale) if self.label is not None else self.name


@dataclass(frozen=True)
class CarbonCopy:
    to: Any
    loc: Loc
    when: Expr | None = None


@dataclass(frozen=True)
class Workflow:
    initial: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    loc: Loc
    approvals: tuple[Approval, ...] = ()
    cc: tuple[CarbonCopy, ...] = ()
    state_map: tuple[tuple[str, str], ...] = ()

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    def state(self, name: str) -> State | None:
        return next((s for s in self.states if s.name == name), None)

    def transition(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)

    def approval(self, name: str) -> Approval | None:
        return next((a for a in self.approvals if a.name == name), None)


@dataclass(frozen=True)
class UpdateRule:
    scope: str | Expr | None  # all | own | assigned | team | Expr | None (no update)
    states: tuple[str, ...] = ()  # empty: any state


@dataclass(frozen=True)
class Permission:
    role: str
    loc: Loc
    create: bool = False
    read: str | Expr | None = None  # all | own | assigned | team | Expr
    update: UpdateRule | None = None
    delete: bool = False
    export: bool = False
    hide: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    """One rule or escalation action: its kind (assign, set, notify, ...) and its arguments."""

    kind: str
    args: Any
    loc: Loc


@dataclass(frozen=True)
class Rule:
    name: str
    on: str  # the event, e.g. "created", "field_set(report)"
    loc: Loc
    actions: tuple[Action, ...]
    when: Expr | None = None


@dataclass(frozen=True)
class Escalation:
    after: str
    actions: tuple[Action, ...]
    loc: Loc


@dataclass(frozen=True)
class Sla:
    name: str
    loc: Loc
    start: str
    stop: str
    target: str
    calendar: str = "24x7"
    applies_if: Expr | None = None
    pause_in: tuple[str, ...] = ()
    escalations: tuple[Escalation, ...] = ()


@dataclass(frozen=True)
class FormSection:
    title: Label | None
    fields: tuple[str, ...]
    loc: Loc
    visible_if: Expr | None = None


@dataclass(frozen=True)
class Validation:
    when: Expr
    fields: tuple[str, ...]
    message: str
    loc: Loc


@dataclass(frozen=True)
class Entity:
    name: str
    label: Label
    loc: Loc
    fields: tuple[Field, ...]
    title: str | None = None
    number: str | None = None
    form: tuple[FormSection, ...] = ()
    validations: tuple[Validation, ...] = ()
    workflow: Workflow | None = None
    permissions: tuple[Permission, ...] = ()
    rules: tuple[Rule, ...] = ()
    sla: tuple[Sla, ...] = ()
    assigned_fields: tuple[str, ...] = ("assignee",)
    renamed_from: str | None = None

    def field(self, name: str) -> Field | None:
        return self._fields_by_name.get(name)

    @functools.cached_property
    def computed_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.is_computed)

    @functools.cached_property
    def reference_fields(self) -> tuple[Field, ...]:
        """The fields whose values name other rows: users, linked records, files."""
        return tuple(f for f in self.fields if f.type in ("user", "link", "file", "image"))

    @functools.cached_property
    def guarded_fields(self) -> tuple[Field, ...]:
        """The fields with a ``readonly_if``."""
        return tuple(f for f in self.fields if f.readonly_if is not None)

    @functools.cached_property
    def user_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.type == "user")

    @functools.cached_property
    def user_field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.user_fields)

    @functools.cached_property
    def tags_field(self) -> str | None:
        """The entity's own tags field (``type: tags``), which tag actions use when there is one."""
        return next((f.name for f in self.fields if f.type == "tags" and not f.disabled), None)

    @functools.cached_property
    def _fields_by_name(self) -> dict[str, Field]:
        """The fields by name, made once (``field`` is looked up for every value of every change;
        cached_property writes the instance's dict, which a frozen dataclass allows)."""
        found: dict[str, Field] = {}
        for f in self.fields:
            found.setdefault(f.name, f)  # the first of a name, as a scan would find it
        return found

    @property
    def title_fields(self) -> tuple[str, ...]:
        """The fields the record's title is made of (``title``'s placeholders, then the number),
        so a page of titles reads just those."""
        names = [m.group(1) for m in TITLE_PART.finditer(self.title or "") if self.field(m.group(1)) is not None]
        return (*names, *(("number",) if self.number else ()))

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def active_fields(self) -> tuple[Field, ...]:
        """Fields shown in forms and the API: not disabled."""
        return tuple(f for f in self.fields if not f.disabled)

    @property
    def states(self) -> tuple[str, ...]:
        return self.workflow.state_names if self.workflow else ()


@dataclass(frozen=True)
class Calendar:
    name: str
    loc: Loc
    hours: tuple[tuple[str, str], ...] = ()  # (day spec, ranges) as written
    holidays: str | None = None
    extra_holidays: tuple[str, ...] = ()
    extra_workdays: tuple[str, ...] = ()


@dataclass(frozen=True)
class Card:
    name: str
    type: str
    loc: Loc
    label: Label
    entity: str
    options: tuple[tuple[str, Any], ...] = ()
    option_locs: tuple[tuple[str, Loc], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def expr(self, key: str) -> Expr | None:
        """An expression option (``where``, ``numerator``) with its exact place in the file."""
        source = self.option(key)
        if source is None:
            return None
        return Expr(str(source), dict(self.option_locs).get(key, self.loc))


@dataclass(frozen=True)
class Dashboard:
    name: str
    label: Label
    loc: Loc
    cards: tuple[Card, ...]
    roles: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Survey:
    """A template's ``survey:``: where the answers of its ``{survey_url}`` link land."""

    field: str | None = None  # the rating field; None: the entity's first rating field
    comment: str | None = None  # a text field for the comment; None: the history entry's comment
    expires: str = "14d"  # how long the link works


@dataclass(frozen=True)
class Template:
    name: str
    loc: Loc
    body: Label  # a text or one per locale, rendered in each recipient's locale
    subject: Label | None = None
    survey: Survey | None = None


@dataclass(frozen=True)
class Notifications:
    channels: tuple[tuple[str, Any], ...] = ()
    templates: tuple[Template, ...] = ()


@dataclass(frozen=True)
class NamedThing:
    """A role or a team: a name, a label and a place."""

    name: str
    label: Label
    loc: Loc


@dataclass(frozen=True)
class App:
    name: str
    label: Label
    loc: Loc
    entities: tuple[Entity, ...]
    timezone: str = "Asia/Shanghai"
    locale: str = "zh"
    version: int = 1
    roles: tuple[NamedThing, ...] = ()
    teams: tuple[NamedThing, ...] = ()
    calendars: tuple[Calendar, ...] = ()
    dashboards: tuple[Dashboard, ...] = ()
    notifications: Notifications = field(default_factory=Notifications)
    source_hash: str = ""

    def entity(self, name: str) -> Entity | None:
        return next((e for e in self.entities if e.name == name), None)

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    @property
    def team_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.teams)

    @property
    def calendar_names(self) -> tuple[str, ...]:
        return ("24x7", *(c.name for c in self.calendars))

    @property
    def template_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.notifications.templates)
