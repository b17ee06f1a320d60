"""The SQL back end: a typed tree to a SQLAlchemy clause over the entity's table.

Conditions compile to two-valued SQL: every comparison is guarded with ``IS NOT NULL`` on the
operands that may be null, so ``NOT`` of a test on a null value is true, exactly as in Python
(SQL's three-valued logic would make it unknown and drop the row). Constant parts (``now()``,
``user.team``, ``today() - "7d"``) are evaluated in Python and bound, so both back ends share one
implementation of them. Links are followed with correlated scalar subqueries on aliases;
multi-valued fields with ``EXISTS`` on their child table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    Numeric,
    String,
    Time,
    and_,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from engine.db import UTCDateTime

from .compiled import Compiled, EvalContext, SqlContext
from .counts import ThisParameters
from .dialect import Contains, Epoch, EpochDate, FromEpoch, LocalDate, LocalText, TimeText
from .evaluate import normalise, seconds
from .nodes import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Count,
    FieldRef,
    In,
    IsNull,
    ListLit,
    LocalMidnight,
    Neg,
    Node,
    Not,
    walk,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class Number(TypeDecorator):
    """A bound number: exact Decimal for PostgreSQL, float for SQLite (which stores REAL)."""

    impl = Numeric(asdecimal=False)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:  # type: ignore[override]
        if value is None:
            return None
        if dialect.name == "sqlite":
            return float(value)
        return value if isinstance(value, Decimal | int) else Decimal(repr(value))


def bind(value: Any, type_: str) -> ColumnElement:
    """A Python value of a language type as a SQL literal."""
    if value is None:
        return null()
    if type_ == "boolean":
        return true() if value else false()
    if type_ == "date":
        return literal(value, Date())
    if type_ == "datetime":
        return literal(value, UTCDateTime())
    if type_ == "time":
        return literal(value, Time())
    if type_ == "duration":
        return literal(seconds(value), Number())
    if isinstance(value, bool):
        return true() if value else false()
    if isinstance(value, int):
        return literal(value, BigInteger())
    if isinstance(value, Decimal | float):
        return literal(value, Number())
    return literal(str(value), String())


def epoch_seconds(value: dt.datetime | dt.date) -> Decimal:
    if isinstance(value, dt.datetime):
        return seconds(value - EPOCH)
    return Decimal((value - dt.date(1970, 1, 1)).days * 86400)


class SqlCompiler:
    def __init__(self, ctx: SqlContext, compiled: Compiled, table: Any = None, this: Any = None) -> None:
        self.ctx = ctx
        self.compiled = compiled
        self.app = ctx.app
        if table is None:
            table = ctx.table if ctx.table is not None else self.main(compiled.entity)
        self.table = table
        # ``this``: the outer table inside a nested count, or the outer record's values.
        self.this = this if this is not None else ctx.this_values
        # Constant parts are evaluated in Python (the same closures as a record's) and bound.
        self._constants = EvalContext(record={}, app=ctx.app, entity=compiled.entity, now=ctx.now, user=ctx.user)

    def compile(self) -> ColumnElement:
        root = self.compiled.root
        return self.cond(root) if root.type == "boolean" else self.value(root)

    def main(self, entity: Any) -> Any:
        return self.ctx.schema.entity(self.app.name, entity.name).main

    def const(self, node: Node) -> Any:
        return self.compiled.evaluate_part(node, self._constants)

    def null_const(self, node: Node) -> bool:
        return node.const and self.const(node) is None

    # -- conditions (always two-valued) --------------------------------------------------------

    def cond(self, node: Node) -> ColumnElement:
        if node.const:
            return true() if self.const(node) is True else false()
        handler = getattr(self, f"c_{type(node).__name__}", None)
        if handler is not None:
            return handler(node)
        return self.value(node).is_(true())  # a boolean field (or link path): null is not true

    def c_Compare(self, node: Compare) -> ColumnElement:
        left, right = node.left, node.right
        if self.null_const(left) or self.null_const(right):
            return false()
        if left.type in ("date", "datetime") and not (self.native(left) and self.native(right)):
            lv, rv = self.epoch(left), self.epoch(right)
        else:
            lv, rv = self.value(left), self.value(right)
        return self.two_valued(COMPARE[node.op](lv, rv), [(lv, left), (rv, right)])

    def two_valued(self, test: ColumnElement, operands: list[tuple[ColumnElement, Node]]) -> ColumnElement:
        """``test``, false instead of unknown when an operand is null.

        Columns get ``IS NOT NULL`` guards (an index still serves ``col = x``); subqueries get
        ``COALESCE(test, false)`` so they are not evaluated twice.
        """
        nullable = [(value, node) for value, node in operands if not node.const]
        if all(self.cheap(node) for _, node in nullable):
            return and_(*(value.is_not(None) for value, _ in nullable), test)
        return func.coalesce(test, false())

    @staticmethod
    def cheap(node: Node) -> bool:
        return not any(isinstance(n, Count) or (isinstance(n, FieldRef) and len(n.hops) > 1) for n in walk(node))

    def native(self, node: Node) -> bool:
        """Whether a date/datetime operand compares as the column type (indexes stay usable)."""
        return node.const or isinstance(node, FieldRef) or (isinstance(node, Call) and node.name == "date")

    def c_IsNull(self, node: IsNull) -> ColumnElement:
        value = self.value(node.operand)
        return value.is_not(None) if node.negate else value.is_(None)

    def c_In(self, node: In) -> ColumnElement:
        if self.null_const(node.left):
            return false()
        left = self.value(node.left)
        if node.mode == "text":
            right = self.value(node.right)
            test = Contains(right, left)
            return self.two_valued(not_(test) if node.negate else test, [(left, node.left), (right, node.right)])
        test = self.member(left, node.right)
        test = not_(test) if node.negate else test
        if self.cheap(node.right) and not (isinstance(node.right, FieldRef) and node.right.multi):
            return self.two_valued(test, [(left, node.left)])
        # EXISTS is never null, so ``not in`` needs the explicit guard on the left value.
        return test if node.left.const else and_(left.is_not(None), test)

    def member(self, left: ColumnElement, right: Node) -> ColumnElement:
        """``left`` is among the values of ``right`` (left known not null)."""
        if isinstance(right, FieldRef) and right.multi:
            values = self.literal_multi(right)
            if values is None:
                child, owner = self.child(right)
                return select(child.c.record_id).where(child.c.record_id == owner, child.c.value == left).correlate_except(child).exists()
            return self.in_values(left, values, right.elem or "any")
        if isinstance(right, ListLit) and not right.const:
            tests = []
            for item in right.items:
                value = self.value(item)
                tests.append(and_(value.is_not(None), left == value) if not item.const else left == value)
            return or_(*tests) if tests else false()
        return self.in_values(left, self.const(right), right.elem or "any")

    def in_values(self, left: ColumnElement, values: list[Any], elem: str) -> ColumnElement:
        binds = [bind(v, elem) for v in values if v is not None]
        return left.in_(binds) if binds else false()

    def c_BoolOp(self, node: BoolOp) -> ColumnElement:
        parts = [self.cond(v) for v in node.values]
        return and_(*parts) if node.op == "and" else or_(*parts)

    def c_Not(self, node: Not) -> ColumnElement:
        return not_(self.cond(node.operand))

    def c_Call(self, node: Call) -> ColumnElement:
        return getattr(self, f"fn_{node.name}")(node)

    # -- values --------------------------------------------------------------------------------

    def value(self, node: Node) -> ColumnElement:
        if node.const:
            return bind(self.const(node), node.type)
        if node.type == "boolean" and not isinstance(node, FieldRef) and not (isinstance(node, Call) and node.name == "previous"):
            return self.cond(node)
        return getattr(self, f"v_{type(node).__name__}")(node)

    def v_FieldRef(self, node: FieldRef) -> ColumnElement:
        hops = node.hops
        first = self.first(node.root, hops[0].field.name, node.type if len(hops) == 1 else "number")
        if len(hops) == 1:
            return first
        target = self.follow(first, node)
        table = self.main(hops[-1].entity).alias()
        return select(table.c[node.last.name]).where(table.c.id == target).correlate_except(table).scalar_subquery()

    def first(self, root: str, name: str, type_: str) -> ColumnElement:
        if root == "record":
            return self.table.c[name]
        if self.this is None:
            raise ValueError("this.<field> needs SqlContext.this_values (the outer record)")
        if isinstance(self.this, Mapping):
            return bind(normalise(self.this.get(name), type_), type_)
        if isinstance(self.this, ThisParameters):  # a prepared count: the value comes per call
            return self.this.param(name, type_)
        return self.this.c[name]

    def follow(self, start: ColumnElement, node: FieldRef) -> ColumnElement:
        """The id of the record that holds the path's last field (start: the first link's value)."""
        current = start
        for hop in node.hops[1:-1]:
            table = self.main(hop.entity).alias()
            current = select(table.c[hop.field.name]).where(table.c.id == current).correlate_except(table).scalar_subquery()
        return current

    def literal_multi(self, node: FieldRef) -> list[Any] | None:
        """The values of ``this.tags`` when ``this`` is given as values, else None (use SQL)."""
        if node.root == "this" and len(node.hops) == 1 and isinstance(self.this, Mapping):
            return [normalise(v, node.elem or "any") for v in self.this.get(node.last.name) or []]
        return None

    def child(self, node: FieldRef) -> tuple[Any, ColumnElement]:
        """The child table of a multi-valued field and the id of the record owning the values."""
        hops = node.hops
        if len(hops) == 1:
            owner = self.first(node.root, "id", "number")
        else:
            owner = self.follow(self.first(node.root, hops[0].field.name, "number"), node)
        tables = self.ctx.schema.entity(self.app.name, hops[-1].entity.name)
        return tables.children[node.last.name].alias(), owner

    def v_Arith(self, node: Arith) -> ColumnElement:
        if node.type in ("datetime", "date"):
            return (FromEpoch if node.type == "datetime" else EpochDate)(self.epoch(node))
        if node.type == "duration" and node.left.type in ("datetime", "date"):
            return self.epoch(node.left) - self.epoch(node.right)
        left, right = self.value(node.left), self.value(node.right)
        if node.type == "text":
            return left.op("||")(right)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        # True division on both databases (SQLite divides integers as integers), no error on 0.
        return (left * literal(Decimal("1.0"), Number())) / func.nullif(right, 0)

    def v_Neg(self, node: Neg) -> ColumnElement:
        return -self.value(node.operand)

    def v_LocalMidnight(self, node: LocalMidnight) -> ColumnElement:  # always constant: bound
        return bind(self.const(node), "datetime")

    def epoch(self, node: Node) -> ColumnElement:
        """A date or datetime as epoch seconds, for arithmetic and mixed comparisons."""
        if node.const:
            value = self.const(node)
            return null() if value is None else literal(epoch_seconds(value), Number())
        if isinstance(node, Arith) and node.type in ("datetime", "date"):
            if node.left.type == "duration":
                return self.value(node.left) + self.epoch(node.right)
            moved = self.value(node.right)
            return self.epoch(node.left) + moved if node.op == "+" else self.epoch(node.left) - moved
        return Epoch(self.value(node))

    def v_Count(self, node: Count) -> ColumnElement:
        table = self.main(node.target).alias()
        inner = SqlCompiler(self.ctx, node.inner, table=table, this=self.table)
        query = select(func.count()).select_from(table).where(inner.cond(node.inner.root))
        if node.within is not None:
            query = query.where(table.c.created_at >= bind(self.ctx.now - node.within, "datetime"))
        return query.correlate_except(table).scalar_subquery()

    def v_Call(self, node: Call) -> ColumnElement:
        return getattr(self, f"fn_{node.name}")(node)

    # -- functions -----------------------------------------------------------------------------

    def fn_is_empty(self, node: Call) -> ColumnElement:
        arg = node.args[0]
        if isinstance(arg, FieldRef) and arg.multi:
            values = self.literal_multi(arg)
            if values is not None:
                return true() if not values else false()
            child, owner = self.child(arg)
            return not_(select(child.c.record_id).where(child.c.record_id == owner).correlate_except(child).exists())
        value = self.value(arg)
        if arg.type == "text":
            return or_(value.is_(None), value == "")
        return value.is_(None)

    def fn_len(self, node: Call) -> ColumnElement:
        arg = node.args[0]
        if isinstance(arg, FieldRef) and arg.multi:
            values = self.literal_multi(arg)
            if values is not None:
                return literal(len(values), BigInteger())
            child, owner = self.child(arg)
            return select(func.count()).select_from(child).where(child.c.record_id == owner).correlate_except(child).scalar_subquery()
        return func.length(self.value(arg))

    def fn_date(self, node: Call) -> ColumnElement:
        return LocalDate(self.value(node.args[0]), literal(self.app.timezone, String()))

    def fn_hours_since(self, node: Call) -> ColumnElement:
        now = literal(epoch_seconds(self.ctx.now), Number())
        return (now - self.epoch(node.args[0])) / literal(3600, Number())

    def fn_contains(self, node: Call) -> ColumnElement:
        haystack, needle = node.args
        if haystack.type == "list":
            return self.c_In(In(col=node.col, type="boolean", left=needle, right=haystack, negate=False, mode="list"))
        return self.c_In(In(col=node.col, type="boolean", left=needle, right=haystack, negate=False, mode="text"))

    def fn_contains_any(self, node: Call) -> ColumnElement:
        haystack, needles = node.args
        assert isinstance(needles, ListLit)
        mode = "list" if haystack.type == "list" else "text"
        tests = [self.c_In(In(col=node.col, type="boolean", left=n, right=haystack, negate=False, mode=mode)) for n in needles.items]
        return or_(*tests) if tests else false()

    def fn_time_between(self, node: Call) -> ColumnElement:
        arg = node.args[0]
        value = self.value(arg)
        width = node.options["width"]
        if arg.type == "datetime":
            text = func.substr(LocalText(value, literal(self.app.timezone, String())), 12, width)
        else:
            text = func.substr(TimeText(value), 1, width)
        start, end = literal(node.options["start"], String()), literal(node.options["end"], String())
        inside = and_(text >= start, text <= end) if node.options["start"] <= node.options["end"] else or_(text >= start, text <= end)
        return self.two_valued(inside, [(value, arg)])
