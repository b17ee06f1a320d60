"""Type changes of a column: does every stored value convert, and what does it become.

A type change (text -> integer, decimal -> integer, text -> date, ...) is checked row by row in
Python, reading the table in keyset-ordered chunks so memory stays flat on large tables. Values are
read raw (no SQLAlchemy result processing), because the column may hold values its declared type
would choke on: that is exactly what the check is looking for. A conversion never loses data
silently: a fraction dropped by decimal -> integer, a digit beyond the new scale, a time of day
dropped by datetime -> date or a text cut short are failures, not roundings.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    String,
    Time,
    and_,
    bindparam,
    column,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

MAX_LISTED = 20  # failing rows listed in a plan; the total is always given
CHUNK = 1000

Converter = Callable[[Any], Any]

_WHOLE = re.compile(r"^[+-]?\d+$")
_TRUE = frozenset({"true", "t", "1", "yes", "y", "on", "是"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off", "否"})
_DATE_FORMATS = ("%Y/%m/%d", "%Y.%m.%d")


class NotConvertible(ValueError):
    """A stored value that has no faithful counterpart in the new type; the message says why."""


def _blank(value: Any) -> bool:
    # An empty text means "no value" to every non-text type: it becomes NULL rather than failing.
    return isinstance(value, str) and not value.strip()


def to_integer(bits: int) -> Converter:
    limit = 2 ** (bits - 1)

    def convert(value: Any) -> int | None:
        if _blank(value):
            return None
        if isinstance(value, bool):
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float | Decimal):
            if not Decimal(str(value)).is_finite() or Decimal(str(value)) != Decimal(str(value)).to_integral_value():
                raise NotConvertible("has a fraction")
            number = int(Decimal(str(value)))
        elif isinstance(value, str):
            text = value.strip()
            if _WHOLE.match(text):
                number = int(text)
            else:
                try:
                    decimal = Decimal(text)
                except InvalidOperation:
                    raise NotConvertible("is not a whole number") from None
                if not decimal.is_finite() or decimal != decimal.to_integral_value():
                    raise NotConvertible("is not a whole number")
                number = int(decimal)
        else:
            raise NotConvertible(f"is a {type(value).__name__}, not a number")
        if not -limit <= number < limit:
            raise NotConvertible(f"is out of range for a {bits}-bit integer")
        return number

    return convert


def to_decimal(precision: int | None, scale: int | None) -> Converter:
    def convert(value: Any) -> Decimal | None:
        if _blank(value):
            return None
        if isinstance(value, dt.date | dt.time):
            raise NotConvertible(f"is a {type(value).__name__}, not a number")
        try:
            number = Decimal(str(int(value) if isinstance(value, bool) else value).strip())
        except InvalidOperation:
            raise NotConvertible("is not a number") from None
        if not number.is_finite():
            raise NotConvertible("is not a finite number")
        if scale is not None:
            quantized = number.quantize(Decimal(1).scaleb(-scale))
            if quantized != number:
                raise NotConvertible(f"has more than {scale} decimal places")
            number = quantized
            if precision is not None and abs(number) >= Decimal(10) ** (precision - scale):
                raise NotConvertible(f"has more than {precision - scale} digits before the point")
        return number

    return convert


def to_float(value: Any) -> float | None:
    if _blank(value):
        return None
    try:
        return float(Decimal(str(value).strip()))
    except InvalidOperation:
        raise NotConvertible("is not a number") from None


def to_boolean(value: Any) -> bool | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise NotConvertible("is not true/false")


def _parse_datetime(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise NotConvertible("is not an ISO 8601 date and time") from None


def to_date(value: Any) -> dt.date | None:
    if _blank(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        for fmt in _DATE_FORMATS:
            try:
                return dt.datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        value = _parse_datetime(text)
    if isinstance(value, dt.datetime):
        if value.time() != dt.time(0):
            raise NotConvertible("has a time of day that a date would drop")
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise NotConvertible(f"is a {type(value).__name__}, not a date")


def to_datetime(value: Any) -> dt.datetime | None:
    """Aware UTC datetimes; a value without offset is read as UTC, as the engine stores times."""
    if _blank(value):
        return None
    if isinstance(value, str):
        value = _parse_datetime(value)
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(0))
    if not isinstance(value, dt.datetime):
        raise NotConvertible(f"is a {type(value).__name__}, not a date and time")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def to_time(value: Any) -> dt.time | None:
    if _blank(value):
        return None
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            raise NotConvertible("is not a time of day (HH:MM[:SS])") from None
    raise NotConvertible(f"is a {type(value).__name__}, not a time of day")


def to_text(length: int | None) -> Converter:
    def convert(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, dt.date | dt.time):
            text = value.isoformat()
        elif isinstance(value, float):
            text = str(Decimal(str(value)))
        elif isinstance(value, bytes):
            raise NotConvertible("is binary data")
        else:
            text = str(value)
        if length is not None and len(text) > length:
            raise NotConvertible(f"is longer than {length} characters")
        return text

    return convert


def converter_for(target: TypeEngine) -> Converter:
    """How a raw stored value becomes a value of ``target``; raises NotConvertible when it can't."""
    kind = target.impl if isinstance(target, TypeDecorator) else target
    if isinstance(kind, Boolean):
        return to_boolean
    if isinstance(kind, Integer):
        return to_integer(64 if isinstance(kind, BigInteger) else 32)
    if isinstance(kind, Float):
        return to_float
    if isinstance(kind, Numeric):
        return to_decimal(kind.precision, kind.scale)
    if isinstance(kind, DateTime):
        return to_datetime
    if isinstance(kind, Date):
        return to_date
    if isinstance(kind, Time):
        return to_time
    if isinstance(kind, String):
        return to_text(kind.length)
    if isinstance(kind, JSON):
        return lambda value: value
    return lambda value: value


@dataclass
class Failure:
    key: Any  # the row's id (or its primary key, for child tables)
    value: Any
    reason: str

    def as_json(self) -> dict:
        return {"id": self.key, "value": _jsonable(self.value), "shown": shown(self.value), "reason": self.reason}


@dataclass
class ScanResult:
    rows: int = 0  # rows holding a value
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)  # the first MAX_LISTED


def shown(value: Any) -> str:
    """A stored value as a plan prints it: texts quoted (so '' and ' 1' are visible), cut at 60."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _chunks(conn: Connection, table_name: str, keys: Sequence[str], source: str) -> Iterator[list[tuple]]:
    """Rows (key..., value) with a value, in key order, CHUNK at a time (keyset, never OFFSET)."""
    t = table(table_name, *(column(k) for k in keys), column(source))
    key_cols = [t.c[k] for k in keys]
    last: tuple | None = None
    while True:
        query = select(*key_cols, t.c[source]).where(t.c[source].is_not(None)).order_by(*key_cols).limit(CHUNK)
        if last is not None:
            query = query.where(tuple_(*key_cols) > tuple_(*last))
        rows = [tuple(r) for r in conn.execute(query)]
        if not rows:
            return
        yield rows
        last = rows[-1][: len(keys)]


def scan(conn: Connection, table_name: str, keys: Sequence[str], source: str, target: TypeEngine) -> ScanResult:
    """Check that every value of ``table_name.source`` converts to ``target``."""
    convert = converter_for(target)
    result = ScanResult()
    for rows in _chunks(conn, table_name, keys, source):
        for row in rows:
            result.rows += 1
            try:
                convert(row[-1])
            except NotConvertible as exc:
                result.failed += 1
                if len(result.failures) < MAX_LISTED:
                    key = row[0] if len(keys) == 1 else list(row[:-1])
                    result.failures.append(Failure(key, row[-1], str(exc)))
    return result


def copy_converted(
    conn: Connection, table_name: str, keys: Sequence[str], source: str, dest: str, target: TypeEngine
) -> int:
    """Write every value of ``source``, converted, into the (new, empty) column ``dest``.

    The caller has checked with :func:`scan` in the same transaction, so a failure here is a bug and
    raises, rolling the whole migration back.
    """
    convert = converter_for(target)
    t = table(table_name, *(column(k) for k in keys), column(dest, target))
    statement = (
        update(t)
        .where(and_(*(t.c[k] == bindparam(f"k_{i}") for i, k in enumerate(keys))))
        .values({dest: bindparam("v_new", type_=target)})
    )
    copied = 0
    for rows in _chunks(conn, table_name, keys, source):
        params = []
        for row in rows:
            value = convert(row[-1])
            if value is not None:
                params.append({**{f"k_{i}": row[i] for i in range(len(keys))}, "v_new": value})
        if params:
            conn.execute(statement, params)
            copied += len(params)
    return copied
