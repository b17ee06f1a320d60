"""Compiling the expressions of a whole app model, and ad-hoc ones (API ``?where=``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.errors import DefinitionError, Loc, Problem
from engine.model import App, Card, Entity, Expr, Field

from .checker import Checker, ComputedTypes
from .compiled import Compiled
from .nodes import BoolOp, Compare, Const, Count, FieldRef, Node, walk
from .parser import ExprError, parse
from .types import comparable, describe, field_type


@dataclass
class CompiledExpressions:
    """Every expression of an app, compiled; ``computed_types`` gives computed fields' value types."""

    by_expr: dict[Expr, Compiled] = field(default_factory=dict)
    computed_types: dict[tuple[str, str], str] = field(default_factory=dict)

    def __getitem__(self, expr: Expr) -> Compiled:
        return self.by_expr[expr]

    def count_fields(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """Per entity, the fields each ``count(entity, F == ... and G == ..., within=...)``
        condition matches on by equality (the engine indexes them with ``created_at``)."""
        found: dict[str, list[tuple[str, ...]]] = {}
        for compiled in self.by_expr.values():
            for node in walk(compiled.root):
                if isinstance(node, Count) and node.within is not None:
                    names = _equality_fields(node.inner.root)
                    if names and names not in found.setdefault(node.target.name, []):
                        found[node.target.name].append(names)
        return {entity: tuple(keys) for entity, keys in found.items()}

    def card(self, card: Card, key: str) -> Compiled | None:
        """The compiled ``where``/``numerator`` of a dashboard card, if it has one."""
        expr = card.expr(key)
        return None if expr is None else self.by_expr.get(expr)


def _equality_fields(root: Node) -> tuple[str, ...]:
    """The fields of every ``field == value`` of a condition's top-level ``and`` (stored,
    single-valued fields of the counted entity itself), in order."""
    parts = root.values if isinstance(root, BoolOp) and root.op == "and" else [root]
    names: list[str] = []
    for part in parts:
        if not (isinstance(part, Compare) and part.op == "=="):
            continue
        for side in (part.left, part.right):
            if isinstance(side, FieldRef) and side.root == "record" and len(side.hops) == 1:
                f = side.hops[0].field
                if not f.is_multi and not f.is_computed and f.name not in names:
                    names.append(f.name)
                    break
    return tuple(names)


def _compile(
    source: str, loc: Loc, app: App, entity: Entity, expect: str | None, computed: ComputedTypes | None
) -> Compiled:
    """Parse, check and compile; raises ExprError with a character offset."""
    parsed = parse(source)
    root = Checker(parsed, app, entity, loc, computed=computed).check()
    if expect == "boolean" and root.type not in ("boolean", "any"):
        raise ExprError(root.col, f"a condition must be true or false, but this is {describe(root.type, root.elem)}")
    if expect not in (None, "boolean") and not comparable(root.type, expect, "=="):
        raise ExprError(root.col, f"expected {describe(expect)} here, not {describe(root.type, root.elem)}")
    return Compiled(root, source=source, loc=loc, app=app, entity=entity)


def compile_expression(source: str, loc: Loc, app: App, entity: Entity, expect: str | None = "boolean") -> Compiled:
    """Compile one expression over ``entity``; raises DefinitionError at the offending character."""
    resolver = _ComputedResolver(app)
    try:
        return _compile(source, loc, app, entity, expect, resolver.type_of)
    except ExprError as exc:
        raise DefinitionError(loc.shifted(exc.col), exc.message) from None


class _ComputedResolver:
    """Types of computed fields, compiled on demand (they may refer to one another)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.compiled: dict[tuple[str, str], Compiled] = {}
        self.problems: list[Problem] = []
        self._busy: list[tuple[str, str]] = []

    def type_of(self, entity: Entity, f: Field) -> str:
        key = (entity.name, f.name)
        if key in self.compiled:
            return self.compiled[key].type
        if f.expr is None:
            return "any"
        if key in self._busy:
            cycle = " -> ".join(name for _, name in self._busy[self._busy.index(key):] + [key])
            raise ExprError(0, f"computed fields refer to each other in a cycle: {cycle}")
        self._busy.append(key)
        try:
            compiled = _compile(f.expr.source, f.expr.loc, self.app, entity, None, self.type_of)
        except ExprError as exc:
            self.problems.append(Problem(f.expr.loc.shifted(exc.col), exc.message))
            return "any"
        finally:
            self._busy.pop()
        self.compiled[key] = compiled
        return compiled.type


def _conditions(entity: Entity) -> Iterator[Expr]:
    """Every boolean expression of an entity (defaults and computed values are handled apart)."""
    for f in entity.fields:
        yield from (e for e in (f.required_if, f.visible_if, f.readonly_if) if e is not None)
    yield from (s.visible_if for s in entity.form if s.visible_if is not None)
    yield from (v.when for v in entity.validations if v.when is not None)
    if entity.workflow:
        yield from (t.when for t in entity.workflow.transitions if t.when is not None)
        yield from (a.when for a in entity.workflow.approvals if a.when is not None)
        yield from (c.when for c in entity.workflow.cc if c.when is not None)
    for p in entity.permissions:
        if isinstance(p.read, Expr):
            yield p.read
        if p.update is not None and isinstance(p.update.scope, Expr):
            yield p.update.scope
    yield from (r.when for r in entity.rules if r.when is not None)
    yield from (s.applies_if for s in entity.sla if s.applies_if is not None)


def _literal_default(f: Field, source: str) -> object | None:
    """``default: 2026-01-01`` on a date field is a value, not the subtraction 2026 - 1 - 1."""
    parsers = {"date": dt.date.fromisoformat, "time": dt.time.fromisoformat, "datetime": dt.datetime.fromisoformat}
    parser = parsers.get(f.type)
    if parser is None:
        return None
    try:
        return parser(source.strip())
    except ValueError:
        return None


def compile_app(app: App) -> tuple[CompiledExpressions, list[Problem]]:
    """Compile every expression of ``app``; returns what compiled and a problem per failure."""
    resolver = _ComputedResolver(app)
    result = CompiledExpressions()
    problems: list[Problem] = []

    def add(expr: Expr, entity: Entity, expect: str | None) -> Compiled | None:
        try:
            compiled = _compile(expr.source, expr.loc, app, entity, expect, resolver.type_of)
        except ExprError as exc:
            problems.append(Problem(expr.loc.shifted(exc.col), exc.message))
            return None
        result.by_expr[expr] = compiled
        return compiled

    for entity in app.entities:
        for f in entity.fields:
            if f.is_computed and f.expr is not None:
                resolver.type_of(entity, f)
                compiled = resolver.compiled.get((entity.name, f.name))
                if compiled is not None:
                    result.by_expr[f.expr] = compiled
                    result.computed_types[(entity.name, f.name)] = compiled.type
            if isinstance(f.default, Expr):
                _add_default(f, entity, app, result, add)
        for expr in _conditions(entity):
            add(expr, entity, "boolean")
    for dashboard in app.dashboards:
        for card in dashboard.cards:
            entity = app.entity(card.entity)
            if entity is None:
                continue  # the reference check names the unknown entity
            for key in ("where", "numerator"):
                expr = card.expr(key)
                if expr is not None:
                    add(expr, entity, "boolean")
    problems.extend(resolver.problems)
    return result, sorted(set(problems))


def _add_default(f: Field, entity: Entity, app: App, result: CompiledExpressions, add) -> None:  # type: ignore[no-untyped-def]
    expr = f.default
    assert isinstance(expr, Expr)
    value = _literal_default(f, expr.source)
    if value is not None:
        root = Const(col=0, type=f.type, value=value)
        result.by_expr[expr] = Compiled(root, source=expr.source, loc=expr.loc, app=app, entity=entity)
        return
    expect = field_type(f) if not f.is_multi else None
    add(expr, entity, expect if expect != "any" else None)
