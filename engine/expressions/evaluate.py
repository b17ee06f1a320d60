"""The Python back end: a typed tree compiled once into nested closures, run per record.

Each node becomes a function of the per-evaluation state ``(ctx, links)``: the
:class:`EvalContext` (the record, the app and so its timezone, the time, the user) and the linked
records loaded so far by this evaluation (a dict; each link is loaded once). What does not depend
on the record is settled when the closures are built: the operator of a comparison, how a field's
stored value is normalised (picked by its type), constant lists, a function's options. Closures
only: no source text is ever compiled or run (no ``eval``, ``exec`` or ``compile()``).

Null rules mirror the SQL back end exactly: a comparison, ``in`` or function test with a null
operand is false (never "unknown"), arithmetic with null is null, and ``not`` of a false test is
true. Conditions therefore always come out as True or False. Both operands of an operator are
evaluated before its null test, so a missing loader or counter is an error whatever the values.

:meth:`Compiled.evaluate` builds :func:`condition` or :func:`value` of its root on first use and
keeps it; :meth:`Compiled.evaluate_part` does the same per node, for the constant parts the SQL
back end binds and the rollups read.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

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

Links = dict[tuple[str, Any], Mapping[str, Any] | None]
Fn = Callable[[EvalContext, Links], Any]  # a node, compiled: (ctx, links) -> its value
Reader = Callable[[EvalContext, Links, Mapping[str, Any] | None], Any]  # a field path from a record

COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
MIDNIGHT = dt.time(0)
HOUR = Decimal(3600)
TEXT_OR_LIST = str | list


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


# -- building -------------------------------------------------------------------------------------


def value(node: Node) -> Fn:
    """The closure computing ``node``'s value."""
    return _BUILD[type(node)](node)


def condition(node: Node) -> Fn:
    """The closure testing ``node``: True or False, never null (a null boolean field is not true)."""
    fn = value(node)
    if isinstance(node, Compare | IsNull | In | BoolOp | Not) or (isinstance(node, Call) and node.name in _TESTS):
        return fn  # already True or False
    return lambda ctx, links: fn(ctx, links) is True


_TESTS = frozenset({"is_empty", "contains", "contains_any", "time_between", "changed", "has_role", "in_team"})


def _const(node: Const) -> Fn:
    constant = node.value
    return lambda ctx, links: constant


def _list(node: ListLit) -> Fn:
    if all(isinstance(item, Const) for item in node.items):
        constants = tuple(item.value for item in node.items)  # type: ignore[attr-defined]
        return lambda ctx, links: list(constants)  # a new list each time: callers may keep it
    items = [value(item) for item in node.items]
    return lambda ctx, links: [item(ctx, links) for item in items]


# -- fields ---------------------------------------------------------------------------------------

# Classes ``normalise`` returns unchanged, by type; a value of another class goes through it.
_NONE = type(None)
_AS_IS: dict[str, frozenset[type]] = {
    "duration": frozenset({_NONE, dt.timedelta}),
    "datetime": frozenset({_NONE}),
}
_PLAIN = frozenset({_NONE, str, int, bool, Decimal, dt.date, dt.time, dt.timedelta})


def _normaliser(type_: str) -> tuple[frozenset[type], Callable[[Any], Any]]:
    """The classes a field of ``type_`` keeps as stored, and how any other value is normalised."""
    if type_ == "datetime":
        return _AS_IS["datetime"], _datetime
    return _AS_IS.get(type_, _PLAIN), lambda raw: normalise(raw, type_)


def _datetime(raw: Any) -> Any:
    if type(raw) is dt.datetime and raw.tzinfo is not None:
        return raw
    return normalise(raw, "datetime")


def _field(node: FieldRef) -> Fn:
    if node.root == "record" and len(node.hops) == 1:  # the common case: read the mapping directly
        name = node.last.name
        if node.multi:
            kept, other = _normaliser(node.elem or "any")
            return lambda ctx, links: [v if type(v) in kept else other(v) for v in ctx.record.get(name) or []]
        kept, other = _normaliser(node.type)

        def field(ctx: EvalContext, links: Links) -> Any:
            raw = ctx.record.get(name)
            return raw if type(raw) in kept else other(raw)

        return field
    read = _reader(node)
    if node.root == "record":
        return lambda ctx, links: read(ctx, links, ctx.record)

    def this_field(ctx: EvalContext, links: Links) -> Any:
        if ctx.this is None:
            raise EvalError("'this' needs the outer record (EvalContext.this)")
        return read(ctx, links, ctx.this)

    return this_field


def _reader(node: FieldRef) -> Reader:
    """A field path read from a given record (the record, ``this``, the previous version)."""
    path = tuple((hop.field.name, hop.field.entity or "") for hop in node.hops[:-1])
    name, multi = node.last.name, node.multi
    kept, other = _normaliser((node.elem or "any") if multi else node.type)

    def read(ctx: EvalContext, links: Links, source: Mapping[str, Any] | None) -> Any:
        for link_field, entity in path:
            link = source.get(link_field) if source is not None else None
            if link is None:
                return [] if multi else None
            source = _load(ctx, links, entity, link)
        if source is None:
            return [] if multi else None
        raw = source.get(name)
        if multi:
            return [v if type(v) in kept else other(v) for v in raw or []]
        return raw if type(raw) in kept else other(raw)

    return read


def _load(ctx: EvalContext, links: Links, entity: str, record_id: Any) -> Mapping[str, Any] | None:
    if ctx.load is None:
        raise EvalError(f"following a link to {entity} needs a loader (EvalContext.load)")
    key = (entity, record_id)
    if key not in links:
        links[key] = ctx.load(entity, record_id)
    return links[key]


def _user(node: UserRef) -> Fn:
    attr = node.attr
    if attr in ("teams", "roles"):
        return lambda ctx, links: sorted(getattr(ctx.user, attr)) if ctx.user else []
    if attr in (None, "id"):
        return lambda ctx, links: None if ctx.user is None else ctx.user.id
    return lambda ctx, links: None if ctx.user is None else getattr(ctx.user, attr)


def _midnight(node: LocalMidnight) -> Fn:
    day = value(node.operand)

    def midnight(ctx: EvalContext, links: Links) -> dt.datetime | None:
        found = day(ctx, links)
        if found is None:
            return None
        return dt.datetime.combine(found, MIDNIGHT, tzinfo=zone(ctx.app.timezone)).astimezone(dt.UTC)

    return midnight


# -- operators ------------------------------------------------------------------------------------


def _compare(node: Compare) -> Fn:
    test = COMPARE[node.op]
    left, right = node.left, node.right
    if isinstance(left, Count) or isinstance(right, Count):
        capped = _count_against_number(test, left, right)
        if capped is not None:
            return capped
    if isinstance(right, Const) and right.value is not None:
        constant = right.value
        if isinstance(left, FieldRef) and left.root == "record" and len(left.hops) == 1 and not left.multi:
            name = left.last.name
            kept, other = _normaliser(left.type)

            def field_with_constant(ctx: EvalContext, links: Links) -> bool:
                raw = ctx.record.get(name)
                if raw is None:
                    return False
                return test(raw if type(raw) in kept else other(raw), constant)

            return field_with_constant
        operand = value(left)

        def with_constant(ctx: EvalContext, links: Links) -> bool:
            found = operand(ctx, links)
            return found is not None and test(found, constant)

        return with_constant
    lhs, rhs = value(left), value(right)

    def compare(ctx: EvalContext, links: Links) -> bool:
        a, b = lhs(ctx, links), rhs(ctx, links)
        if a is None or b is None:
            return False
        return test(a, b)

    return compare


def _is_null(node: IsNull) -> Fn:
    operand = value(node.operand)
    if node.negate:
        return lambda ctx, links: operand(ctx, links) is not None
    return lambda ctx, links: operand(ctx, links) is None


def _in(node: In) -> Fn:
    left, negate = value(node.left), node.negate
    right = node.right
    if node.mode == "list" and isinstance(right, ListLit) and all(isinstance(i, Const) for i in right.items):
        # ``x in ["a", "b"]``: the constants once, nulls dropped (``item is not None and item == x``)
        options = tuple(i.value for i in right.items if i.value is not None)  # type: ignore[attr-defined]

        def among_constants(ctx: EvalContext, links: Links) -> bool:
            found = left(ctx, links)
            if found is None:
                return False
            return (found in options) is not negate

        return among_constants
    within = value(right)
    text = node.mode == "text"

    def among(ctx: EvalContext, links: Links) -> bool:
        a, b = left(ctx, links), within(ctx, links)
        if a is None or b is None:
            return False
        found = a in b if text else any(item is not None and item == a for item in b)
        return found is not negate

    return among


def _bool_op(node: BoolOp) -> Fn:
    # Conditions give True or False, so ``and``/``or`` of two give True or False too; more than two
    # nest: ``a and (b and c)``.
    tests = [condition(v) for v in node.values]
    joined = tests[-1]
    for test in reversed(tests[:-1]):
        joined = _both(test, joined) if node.op == "and" else _either(test, joined)
    return joined


def _both(first: Fn, second: Fn) -> Fn:
    return lambda ctx, links: first(ctx, links) and second(ctx, links)


def _either(first: Fn, second: Fn) -> Fn:
    return lambda ctx, links: first(ctx, links) or second(ctx, links)


def _not(node: Not) -> Fn:
    test = condition(node.operand)
    return lambda ctx, links: not test(ctx, links)


def _arith(node: Arith) -> Fn:
    lhs, rhs = value(node.left), value(node.right)
    if node.op == "/":

        def divide(ctx: EvalContext, links: Links) -> Any:
            a, b = lhs(ctx, links), rhs(ctx, links)
            if a is None or b is None or b == 0:  # as in SQL (NULLIF): no value rather than an error
                return None
            return Decimal(a) / Decimal(b)

        return divide
    op = {"+": operator.add, "-": operator.sub, "*": operator.mul}[node.op]

    def arith(ctx: EvalContext, links: Links) -> Any:
        a, b = lhs(ctx, links), rhs(ctx, links)
        if a is None or b is None:
            return None
        return op(a, b)

    return arith


def _neg(node: Neg) -> Fn:
    operand = value(node.operand)

    def neg(ctx: EvalContext, links: Links) -> Any:
        found = operand(ctx, links)
        return None if found is None else -found

    return neg


def _count(node: Count, at_most: int | None = None) -> Fn:
    target, inner = node.target.name, node.inner
    within = float(node.within.total_seconds()) if node.within is not None else None

    def count(ctx: EvalContext, links: Links) -> int:
        if ctx.count is None:
            raise EvalError("count() needs a counter (EvalContext.count)")
        return ctx.count(target, inner, within, ctx.record, at_most)

    return count


def _count_against_number(test: Callable[[Any, Any], bool], left: Node, right: Node) -> Fn | None:
    """``count(...) >= 50`` (either side) is settled by at most 51 rows: counted up to that cap,
    the comparison comes out as it would with every row counted, so a rule's threshold costs what
    the threshold does, not what a busy device's history does."""
    counted, number = (left, right) if isinstance(left, Count) else (right, left)
    if not isinstance(counted, Count) or not isinstance(number, Const) or number.type != "number":
        return None
    count, constant = _count(counted, max(0, math.floor(number.value) + 1)), number.value
    if counted is left:
        return lambda ctx, links: test(count(ctx, links), constant)
    return lambda ctx, links: test(constant, count(ctx, links))



# -- functions ------------------------------------------------------------------------------------


def _call(node: Call) -> Fn:
    return _FUNCTIONS[node.name](node)


def _now(ctx: EvalContext) -> dt.datetime:
    now = ctx.now
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now


def fn_now(node: Call) -> Fn:
    return lambda ctx, links: _now(ctx)


def fn_today(node: Call) -> Fn:
    return lambda ctx, links: _now(ctx).astimezone(zone(ctx.app.timezone)).date()


def fn_is_empty(node: Call) -> Fn:
    operand = value(node.args[0])

    def is_empty(ctx: EvalContext, links: Links) -> bool:
        found = operand(ctx, links)
        return found is None or (isinstance(found, TEXT_OR_LIST) and len(found) == 0)

    return is_empty


def fn_len(node: Call) -> Fn:
    operand = value(node.args[0])

    def length(ctx: EvalContext, links: Links) -> int | None:
        found = operand(ctx, links)
        return None if found is None else len(found)

    return length


def fn_date(node: Call) -> Fn:
    operand = value(node.args[0])

    def date(ctx: EvalContext, links: Links) -> dt.date | None:
        found = operand(ctx, links)
        return None if found is None else found.astimezone(zone(ctx.app.timezone)).date()

    return date


def fn_hours_since(node: Call) -> Fn:
    operand = value(node.args[0])

    def hours_since(ctx: EvalContext, links: Links) -> Decimal | None:
        found = operand(ctx, links)
        return None if found is None else seconds(_now(ctx) - found) / HOUR

    return hours_since


def fn_contains(node: Call) -> Fn:
    haystack, needle = value(node.args[0]), value(node.args[1])

    def contains(ctx: EvalContext, links: Links) -> bool:
        h, n = haystack(ctx, links), needle(ctx, links)
        return h is not None and n is not None and n in h

    return contains


def fn_contains_any(node: Call) -> Fn:
    haystack, needles = value(node.args[0]), value(node.args[1])

    def contains_any(ctx: EvalContext, links: Links) -> bool:
        h, ns = haystack(ctx, links), needles(ctx, links)
        return h is not None and any(n is not None and n in h for n in ns)

    return contains_any


def fn_time_between(node: Call) -> Fn:
    operand = value(node.args[0])
    start, end, width = node.options["start"], node.options["end"], node.options["width"]
    wraps = start > end  # the window wraps past midnight
    # "HH:MM[:SS]" texts compare as the numbers they spell: minutes (or seconds) into the day.
    first, last = _into_day(start), _into_day(end)

    def time_between(ctx: EvalContext, links: Links) -> bool:
        found = operand(ctx, links)
        if found is None:
            return False
        if isinstance(found, dt.datetime):
            found = found.astimezone(zone(ctx.app.timezone))
        elif type(found) is not dt.time:  # not a time of day: as its strftime reads
            text = found.strftime("%H:%M:%S")[:width]
            return (text >= start or text <= end) if wraps else start <= text <= end
        at = found.hour * 60 + found.minute
        if width == 8:
            at = at * 60 + found.second
        return (at >= first or at <= last) if wraps else first <= at <= last

    return time_between


def _into_day(text: str) -> int:
    """``"07:59"`` as minutes into the day, ``"07:59:30"`` as seconds."""
    parts = [int(p) for p in text.split(":")]
    return parts[0] * 60 + parts[1] if len(parts) == 2 else (parts[0] * 60 + parts[1]) * 60 + parts[2]


def fn_changed(node: Call) -> Fn:
    ref = node.args[0]
    assert isinstance(ref, FieldRef)
    current, read = value(ref), _reader(ref)

    def changed(ctx: EvalContext, links: Links) -> bool:
        now = current(ctx, links)
        if ctx.previous is None:  # a new record: every field with a value has changed
            return now is not None and now != [] and now != ""
        return now != read(ctx, links, ctx.previous)

    return changed


def fn_previous(node: Call) -> Fn:
    ref = node.args[0]
    assert isinstance(ref, FieldRef)
    read, multi = _reader(ref), ref.multi

    def previous(ctx: EvalContext, links: Links) -> Any:
        if ctx.previous is None:
            return [] if multi else None
        return read(ctx, links, ctx.previous)

    return previous


def fn_has_role(node: Call) -> Fn:
    role = node.options["name"]
    return lambda ctx, links: ctx.user is not None and role in ctx.user.roles


def fn_in_team(node: Call) -> Fn:
    team = node.options["name"]
    return lambda ctx, links: ctx.user is not None and team in ctx.user.teams


# The builder of each node class and each function (``fn_<name>``).
_BUILD: dict[type, Callable[[Any], Fn]] = {
    Const: _const, ListLit: _list, FieldRef: _field, UserRef: _user, LocalMidnight: _midnight, Compare: _compare,
    IsNull: _is_null, In: _in, BoolOp: _bool_op, Not: _not, Arith: _arith, Neg: _neg, Count: _count, Call: _call,
}  # fmt: skip
_FUNCTIONS: dict[str, Callable[[Call], Fn]] = {name[3:]: fn for name, fn in globals().items() if name.startswith("fn_")}
