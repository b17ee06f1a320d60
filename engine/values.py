"""Field values: from what a user or client sends to Python values, and back to JSON.

``parse`` turns one input value (JSON, a form string) into the Python value the engine stores
(see the table in docs/expressions.md); it raises :class:`BadValue` with a message naming what
would be valid. ``to_json`` is the inverse for API output. User fields are resolved between
usernames and ids by the records service, which knows the database.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.messages import Msg
from engine.model import Field

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 \-()]{2,30}$")
_URL = re.compile(r"^(https?|ftp)://[^\s]+$", re.IGNORECASE)
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")
DECIMAL_DIGITS = 18  # the precision of decimal columns (engine.tables.value_type)


class BadValue(ValueError):
    """An input value the field cannot hold; the message (a Msg) is shown beside the field."""

    @property
    def message(self) -> str:
        return self.args[0]


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise BadValue(Msg("expected text"))
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise BadValue(Msg("expected a whole number"))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise BadValue(Msg("expected a whole number"))


def _decimal(value: Any, scale: int) -> Decimal:
    if isinstance(value, bool):
        raise BadValue(Msg("expected a number"))
    try:
        number = Decimal(str(value).strip()) if isinstance(value, str | int | float | Decimal) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise BadValue(Msg("expected a number"))
    # The column is NUMERIC(18, scale): 18 - scale digits before the point.
    if abs(number) >= Decimal(10) ** (DECIMAL_DIGITS - scale):
        raise BadValue(Msg("the number is out of range"))
    quantum = Decimal(1).scaleb(-scale)
    try:
        quantized = number.quantize(quantum)
    except InvalidOperation:  # more digits than the decimal context holds: surely too precise
        raise BadValue(Msg("at most %(n)s decimal places", n=scale)) from None
    if number != quantized:
        raise BadValue(Msg("at most %(n)s decimal places", n=scale))
    return quantized


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "on", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "off", "no", ""):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadValue(Msg("expected true or false"))


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise BadValue(Msg("expected a date like 2026-02-18"))


def _datetime(value: Any, timezone: dt.tzinfo) -> dt.datetime:
    parsed: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None:
        raise BadValue(Msg("expected a date and time like 2026-02-18T09:30:00+08:00"))
    if parsed.tzinfo is None:  # a local time of the app's timezone, as typed in a form
        parsed = parsed.replace(tzinfo=timezone)
    return parsed.astimezone(dt.UTC)


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise BadValue(Msg("expected a time like 09:30"))


def _option(f: Field, value: Any) -> str:
    key = _text(value)
    if key not in f.option_keys:
        raise BadValue(Msg("expected one of: %(options)s", options=", ".join(f.option_keys)))
    return key


def _file_id(value: Any) -> str:
    if not isinstance(value, str) or not _FILE_ID.match(value):
        raise BadValue(Msg("expected a file id from POST /api/v1/files"))
    return value


def _reference(value: Any) -> int:
    try:
        return _integer(value)
    except BadValue:
        raise BadValue(Msg("expected the id of a record")) from None


def parse_one(f: Field, value: Any, timezone: dt.tzinfo) -> Any:
    """One value of field ``f`` (for multi-valued fields: one element)."""
    t = f.type
    if t in ("text", "textarea", "richtext", "location"):
        return _text(value)
    if t == "email":
        text = _text(value).strip()
        if not _EMAIL.match(text):
            raise BadValue(Msg("expected an e-mail address"))
        return text
    if t == "phone":
        text = _text(value).strip()
        if not _PHONE.match(text):
            raise BadValue(Msg("expected a phone number"))
        return text
    if t == "url":
        text = _text(value).strip()
        if not _URL.match(text):
            raise BadValue(Msg("expected a web address starting with http:// or https://"))
        return text
    if t in ("integer",):
        return _integer(value)
    if t == "rating":
        number = _integer(value)
        top = int(f.max) if f.max is not None else 5
        if not 1 <= number <= top:
            raise BadValue(Msg("expected a rating from 1 to %(top)s", top=top))
        return number
    if t == "decimal":
        return _decimal(value, f.scale)
    if t == "boolean":
        return _boolean(value)
    if t == "date":
        return _date(value)
    if t == "datetime":
        return _datetime(value, timezone)
    if t == "time":
        return _time(value)
    if t in ("select", "multiselect"):
        return _option(f, value)
    if t == "tags":
        tag = _text(value).strip()
        if not tag:
            raise BadValue(Msg("a tag cannot be empty"))
        return tag
    if t == "team":
        return _text(value)
    if t == "user":
        return _text(value) if not isinstance(value, int) or isinstance(value, bool) else value
    if t == "link":
        return _reference(value)
    if t in ("file", "image"):
        return _file_id(value)
    raise BadValue(Msg("the field type %(type)s cannot be set", type=t))


def is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple) and not value)


def parse(f: Field, value: Any, timezone: dt.tzinfo) -> Any:
    """The Python value for input ``value`` of field ``f``; empty input is None (or [])."""
    if f.is_multi:
        if value is None or value == "":
            return []
        items = value if isinstance(value, list | tuple) else [value]
        parsed = [parse_one(f, item, timezone) for item in items]
        unique: list[Any] = []
        for item in parsed:  # keep order, drop repeats: a tag or an option is there or not
            if item not in unique:
                unique.append(item)
        return unique
    if is_empty(value):
        return None
    return parse_one(f, value, timezone)


_JSON_NATIVE = frozenset({str, int, bool, float})


def to_json(value: Any) -> Any:
    """A stored Python value as JSON (datetimes ISO 8601 with offset, decimals as strings)."""
    if value is None or type(value) in _JSON_NATIVE:  # most values of a record: nothing to do
        return value
    if isinstance(value, list | tuple):  # tags, options, users: plain values, mostly
        return [v if v is None or type(v) in _JSON_NATIVE else to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def trim_decimal(value: Any) -> Any:
    """A computed number without the trailing zeros of its column's scale: 12000.000000 -> 12000."""
    if not isinstance(value, Decimal):
        return value
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()
