"""A form's layout for one record state: which sections and fields show, which are required or
read-only, and which ``validations:`` messages apply, all decided on the server with the
compiled expressions (the same the record checks use), so nothing is enforced only in the browser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import permissions
from engine.actors import Actor
from engine.expressions import EvalError
from engine.model import Entity, Expr, Field, FormSection, Label

DEFAULT_SECTION = Label.of(None, "")


@dataclass
class FieldState:
    field: Field
    required: bool = False
    readonly: bool = False


@dataclass
class SectionState:
    title: str
    index: int
    fields: list[FieldState] = field(default_factory=list)


@dataclass
class Layout:
    sections: list[SectionState]
    messages: dict[str, str]  # field -> message of a validation whose condition holds

    @property
    def field_names(self) -> list[str]:
        return [fs.field.name for s in self.sections for fs in s.fields]


def sections_of(entity: Entity) -> tuple[FormSection, ...]:
    """The definition's ``form:``, or every active field in one section."""
    if entity.form:
        return entity.form
    return (FormSection(None, tuple(f.name for f in entity.active_fields), entity.loc),)


def evaluate(
    records: Any, entity: Entity, record: Mapping[str, Any], previous: Mapping[str, Any] | None, actor: Actor,
    locale: str, creating: bool,
) -> Layout:  # fmt: skip
    """The visible sections and fields for ``record`` (Python values, e.g. a lenient form)."""
    hidden = permissions.hidden_fields(entity, actor)
    readonly = permissions.readonly_fields(entity, actor)
    now = dt.datetime.now(dt.UTC)
    with records.instance.engine.connect() as conn:
        ctx = records.checker.context(conn, entity, record, previous, actor, now)

        def holds(expr: Expr | None, default: bool) -> bool:
            if expr is None:
                return default
            try:
                return bool(records.expr(expr).evaluate(ctx))
            except (EvalError, TypeError, ValueError, ArithmeticError):
                return False  # a half-filled form may not evaluate yet: the condition is not met

        sections: list[SectionState] = []
        for index, section in enumerate(sections_of(entity)):
            if not holds(section.visible_if, True):
                continue
            title = section.title.get(locale) if section.title else ""
            state = SectionState(title, index)
            for name in section.fields:
                f = entity.field(name)
                if f is None or f.disabled or name in hidden or not holds(f.visible_if, True):
                    continue
                is_readonly = name in readonly or f.is_computed or (not creating and holds(f.readonly_if, False))
                state.fields.append(FieldState(f, required=f.required or holds(f.required_if, False), readonly=is_readonly))
            if state.fields:
                sections.append(state)
        messages: dict[str, str] = {}
        for v in entity.validations:
            if holds(v.when, False):
                for name in v.fields or ("",):
                    messages.setdefault(name, v.message)
    return Layout(sections, messages)
