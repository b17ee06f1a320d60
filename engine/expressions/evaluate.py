"""The Python back end: evaluates a typed tree against one record.

Null rules mirror the SQL back end exactly: a comparison, ``in`` or function test with a null
operand is false (never "unknown"), arithmetic with null is null, and ``not`` of a false test is
true. Conditions therefore always come out as True or False.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from . import nodes
from .compiled import EvalContext, EvalError
from .nodes import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Const,
    Count,
    FieldRef,
    In,
    IsNull,
    ListLit,
    LocalMidnight,
    Neg,
    Node,
    Not,
    UserRef,
)

COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def seconds(delta: dt.timedelta) -> Decimal:
    """A timedelta as exact decimal seconds (floats would disagree with the database)."""
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)


def normalise(value: Any, type_: str) -> Any:
    """A stored value as the evaluator compares it: decimals not floats, aware datetimes."""
    if value is None:
        return None
    if type_ == "duration" and not isinstance(value, dt.timedelta):
        return dt.timedelta(seconds=float(value))  # computed durations are stored as seconds
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    if type_ == "datetime" and isinstance(value, str):
        return normalise(dt.datetime.fromisoformat(value), type_)
    return value


class Evaluator:
    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.tz = zone(ctx.app.timezone)
        self._loaded: dict[tuple[str, Any], Mapping[str, Any] | None] = {}

    def truth(self, node: Node) -> bool:
        return self.value(node) is True

    def value(self, node: Node) -> Any:
        # A table by node class, filled below on first use: no name built per node evaluated.
        return _BY_NODE[type(node)](self, node)

    # -- values --------------------------------------------------------------------------------

    def v_Const(self, node: Const) -> Any:
        return node.value

    def v_ListLit(self, node: ListLit) -> list[Any]:
        return [self.value(item) for item in node.items]

    def v_FieldRef(self, node: FieldRef) -> Any:
        source = self.ctx.record if node.root == "record" else self.ctx.this
        if source is None:
            raise EvalError("'this' needs the outer record (EvalContext.this)")
        return self.read(node, source)

    def read(self, node: FieldRef, source: Mapping[str, Any] | None) -> Any:
        empty: Any = [] if node.multi else None
        for hop in node.hops[:-1]:
            link = source.get(hop.field.name) if source is not None else None
            if link is None:
                return empty
            source = self.load(hop.field.entity or "", link)
        if source is None:
            return empty
        raw = source.get(node.last.name)
        if node.multi:
            return [normalise(v, node.elem or "any") for v in raw or []]
        return normalise(raw, node.type)

    def load(self, entity: str, record_id: Any) -> Mapping[str, Any] | None:
        if self.ctx.load is None:
            raise EvalError(f"following a link to {entity} needs a loader (EvalContext.load)")
        key = (entity, record_id)
        if key not in self._loaded:
            self._loaded[key] = self.ctx.load(entity, record_id)
        return self._loaded[key]

    def v_UserRef(self, node: UserRef) -> Any:
        user = self.ctx.user
        if node.attr in ("teams", "roles"):
            return sorted(getattr(user, node.attr)) if user else []
        if user is None:
            return None
        if node.attr in (None, "id"):
            return user.id
        return getattr(user, node.attr)

    def v_LocalMidnight(self, node: LocalMidnight) -> dt.datetime | None:
        day = self.value(node.operand)
        if day is None:
            return None
        return dt.datetime.combine(day, dt.time(0), tzinfo=self.tz).astimezone(dt.UTC)

    # -- operators -----------------------------------------------------------------------------

    def v_Compare(self, node: Compare) -> bool:
        left, right = self.value(node.left), self.value(node.right)
        if left is None or right is None:
            return False
        return bool(COMPARE[node.op](left, right))

    def v_IsNull(self, node: IsNull) -> bool:
        is_null = self.value(node.operand) is None
        return not is_null if node.negate else is_null

    def v_In(self, node: In) -> bool:
        left = self.value(node.left)
        right = self.value(node.right)
        if left is None or right is None:
            return False
        if node.mode == "text":
            found = left in right
        else:
            found = any(item is not None and item == left for item in right)
        return not found if node.negate else found

    def v_BoolOp(self, node: BoolOp) -> bool:
        if node.op == "and":
            return all(self.truth(v) for v in node.values)
        return any(self.truth(v) for v in node.values)

    def v_Not(self, node: Not) -> bool:
        return not self.truth(node.operand)

    def v_Arith(self, node: Arith) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        if left is None or right is None:
            return None
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if right == 0:  # as in SQL (NULLIF): no value rather than an error
            return None
        return Decimal(left) / Decimal(right)

    def v_Neg(self, node: Neg) -> Any:
        value = self.value(node.operand)
        return None if value is None else -value

    def v_Count(self, node: Count) -> int:
        if self.ctx.count is None:
            raise EvalError("count() needs a counter (EvalContext.count)")
        within = float(node.within.total_seconds()) if node.within is not None else None
        return self.ctx.count(node.target.name, node.inner, within, self.ctx.record)

    # -- functions -----------------------------------------------------------------------------

    def v_Call(self, node: Call) -> Any:
        return _BY_FUNCTION[node.name](self, node)

    def now(self) -> dt.datetime:
        now = self.ctx.now
        return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now

    def fn_now(self, node: Call) -> dt.datetime:
        return self.now()

    def fn_today(self, node: Call) -> dt.date:
        return self.now().astimezone(self.tz).date()

    def fn_is_empty(self, node: Call) -> bool:
        value = self.value(node.args[0])
        return value is None or (isinstance(value, str | list) and len(value) == 0)

    def fn_len(self, node: Call) -> int | None:
        value = self.value(node.args[0])
        return None if value is None else len(value)

    def fn_date(self, node: Call) -> dt.date | None:
        value = self.value(node.args[0])
        return None if value is None else value.astimezone(self.tz).date()

    def fn_hours_since(self, node: Call) -> Decimal | None:
        value = self.value(node.args[0])
        return None if value is None else seconds(self.now() - value) / Decimal(3600)

    def fn_contains(self, node: Call) -> bool:
        haystack, needle = self.value(node.args[0]), self.value(node.args[1])
        return haystack is not None and needle is not None and needle in haystack

    def fn_contains_any(self, node: Call) -> bool:
        haystack, needles = self.value(node.args[0]), self.value(node.args[1])
        return haystack is not None and any(n is not None and n in haystack for n in needles)

    def fn_time_between(self, node: Call) -> bool:
        value = self.value(node.args[0])
        if value is None:
            return False
        local = value.astimezone(self.tz).time() if isinstance(value, dt.datetime) else value
        text = local.strftime("%H:%M:%S")[: node.options["width"]]
        start, end = node.options["start"], node.options["end"]
        if start <= end:
            return start <= text <= end
        return text >= start or text <= end  # the window wraps past midnight

    def fn_changed(self, node: Call) -> bool:
        ref = node.args[0]
        assert isinstance(ref, FieldRef)
        current = self.value(ref)
        if self.ctx.previous is None:  # a new record: every field with a value has changed
            return current is not None and current != [] and current != ""
        return current != self.read(ref, self.ctx.previous)

    def fn_previous(self, node: Call) -> Any:
        ref = node.args[0]
        assert isinstance(ref, FieldRef)
        if self.ctx.previous is None:
            return [] if ref.multi else None
        return self.read(ref, self.ctx.previous)

    def fn_has_role(self, node: Call) -> bool:
        user = self.ctx.user
        return user is not None and node.options["name"] in user.roles

    def fn_in_team(self, node: Call) -> bool:
        user = self.ctx.user
        return user is not None and node.options["name"] in user.teams


# The methods for each node class (``v_<Class>``) and function (``fn_<name>``), looked up once.
_BY_NODE: dict[type, Any] = {getattr(nodes, name[2:]): method for name, method in vars(Evaluator).items() if name.startswith("v_")}
_BY_FUNCTION: dict[str, Any] = {name[3:]: method for name, method in vars(Evaluator).items() if name.startswith("fn_")}
