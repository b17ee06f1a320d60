"""A compiled expression and the contexts it runs in: one record (Python) or many (SQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

from engine.actors import Actor
from engine.errors import Loc
from engine.model import App, Entity
from engine.tables import Schema

from .functions import CHANGE_FUNCTIONS
from .nodes import Call, Count, FieldRef, Node, walk


class NotSqlCompilable(Exception):
    """The expression reads the change being made (changed/previous): it has no SQL form."""


class EvalError(Exception):
    """An expression could not be evaluated with the context given (e.g. no loader for a link)."""


@dataclass
class EvalContext:
    record: Mapping[str, Any]
    app: App
    entity: Entity
    now: dt.datetime  # aware UTC; now()/today()/hours_since read it: time is a parameter
    user: Actor | None = None
    previous: Mapping[str, Any] | None = None  # the record before the change
    load: Callable[[str, Any], Mapping[str, Any] | None] | None = None  # (entity, id) -> record
    # count(entity, condition, within seconds, this, at most): rows counted up to ``at most``, if given
    count: Callable[[str, Compiled, float | None, Mapping[str, Any], int | None], int] | None = None
    this: Mapping[str, Any] | None = None  # the outer record, when evaluating count()'s inner condition


@dataclass
class SqlContext:
    schema: Schema
    app: App
    entity: Entity
    now: dt.datetime
    user: Actor | None = None
    table: Table | Any | None = None  # the FROM table (or alias) of the outer query
    this_values: Mapping[str, Any] | None = None  # inside count(): ``this.x`` as bound literals


class Compiled:
    """One checked expression: ``evaluate`` for a record, ``clause`` for a query."""

    def __init__(
        self, root: Node, *, source: str, loc: Loc, app: App, entity: Entity, this_entity: Entity | None = None
    ) -> None:
        self.root = root
        self.source = source
        self.loc = loc
        self.app = app
        self.entity = entity
        self.this_entity = this_entity
        self.type = root.type
        self.elem = root.elem
        self.uses_changes = any(isinstance(n, Call) and n.name in CHANGE_FUNCTIONS for n in walk(root))
        self.uses_count = any(isinstance(n, Count) for n in walk(root))
        # The record's fields the value depends on (a link's, for a path through it); None when
        # it also depends on other records or on the change (count, changed, previous).
        self.fields_read: frozenset[str] | None = (
            None if self.uses_count or self.uses_changes
            else frozenset(n.hops[0].field.name for n in walk(root) if isinstance(n, FieldRef) and n.root == "record")
        )  # fmt: skip
        # The Python form (engine.expressions.evaluate): closures built on first use, then kept.
        self._python: Callable[[EvalContext, dict], Any] | None = None
        self._parts: dict[Node, Callable[[EvalContext, dict], Any]] = {}

    def evaluate(self, ctx: EvalContext) -> Any:
        """The expression's value for one record (a condition's is True or False)."""
        python = self._python
        if python is None:
            from .evaluate import condition, value

            python = self._python = condition(self.root) if self.type == "boolean" else value(self.root)
        return python(ctx, {})  # {}: the links this evaluation loads, each once

    def evaluate_part(self, node: Node, ctx: EvalContext) -> Any:
        """The value of one node of this expression (the SQL back end binds its constant parts so)."""
        python = self._parts.get(node)
        if python is None:
            from .evaluate import value

            python = self._parts[node] = value(node)
        return python(ctx, {})

    def clause(self, ctx: SqlContext) -> ColumnElement:
        if self.uses_changes:
            raise NotSqlCompilable(f"{self.source!r} uses changed()/previous(), which only apply to a change being made")
        from .sql import SqlCompiler

        return SqlCompiler(ctx, self).compile()

    def __repr__(self) -> str:
        return f"Compiled({self.source!r}, type={self.type!r})"

