"""Value types of the language and how fields map onto them.

Types are strings: ``text number boolean date datetime time duration list user team null any``
and ``link:<entity>``; a list also has an element type (``Node.elem``).
"""

from __future__ import annotations

import datetime as dt
import re

from engine.errors import Loc
from engine.model import TEXT_TYPES, Entity, Field, Label
from engine.tables import entered_column

from .durations import parse_duration

ORDERED = frozenset({"number", "date", "datetime", "time", "duration"})
TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


def field_type(f: Field, computed: str | None = None) -> str:
    """The type of one value of field ``f`` (for multi-valued fields: of each element)."""
    t = f.type
    if t in TEXT_TYPES or t in ("select", "multiselect", "tags", "file", "image"):
        return "text"
    if t in ("integer", "decimal", "rating"):
        return "number"
    if t in ("boolean", "date", "datetime", "time", "user", "team"):
        return t
    if t == "link":
        return f"link:{f.entity}"
    if t == "computed":
        return computed or "any"
    return "any"


def describe(type_: str, elem: str | None = None) -> str:
    """A type as a user reads it in a message."""
    if type_.startswith("link:"):
        return f"a link to {type_[5:]}"
    if type_ == "list":
        return f"a list of {describe(elem or 'any')}" if elem else "a list"
    return {"null": "null", "any": "a value", "user": "a user", "team": "a team"}.get(type_, type_)


# By identity: entities are immutable but may hold unhashable defaults (lists).
_SYSTEM_CACHE: dict[int, tuple[Entity, tuple[Field, ...]]] = {}


def system_fields(entity: Entity) -> tuple[Field, ...]:
    """The system fields of an entity as Field objects, so paths and types treat them alike."""
    cached = _SYSTEM_CACHE.get(id(entity))
    if cached is not None and cached[0] is entity:
        return cached[1]
    loc = entity.loc or Loc.unknown()

    def make(name: str, type_: str, **kw) -> Field:
        return Field(name=name, type=type_, label=Label.of(None, name), loc=loc, **kw)

    states = tuple((s, Label.of(None, s)) for s in entity.states)
    fields = [
        make("id", "integer"),
        make("number", "text"),
        make("state", "select", options=states),
        make("created_at", "datetime"),
        make("created_by", "user"),
        make("updated_at", "datetime"),
        make("version", "integer"),
    ]
    fields += [make(entered_column(s), "datetime") for s in entity.states]
    if len(_SYSTEM_CACHE) > 1024:
        _SYSTEM_CACHE.clear()
    _SYSTEM_CACHE[id(entity)] = (entity, tuple(fields))
    return tuple(fields)


def lookup_field(entity: Entity, name: str) -> Field | None:
    found = entity.field(name)
    if found is not None:
        return found
    return next((f for f in system_fields(entity) if f.name == name), None)


def all_field_names(entity: Entity) -> list[str]:
    return [*entity.field_names, *(f.name for f in system_fields(entity))]


def comparable(a: str, b: str, op: str) -> bool:
    """Whether values of types ``a`` and ``b`` may be compared with ``op``."""
    if "any" in (a, b):
        return True
    ids = {"number", "user"}
    if op in ("==", "!="):
        if a == b and a != "list":
            return True
        pair = {a, b}
        if pair <= {"text", "team"}:
            return True
        if pair <= ids or (a.startswith("link:") and b == "number") or (b.startswith("link:") and a == "number"):
            return True
        return pair == {"date", "datetime"}
    if a == b and a in ORDERED:
        return True
    return {a, b} == {"date", "datetime"}


def coerce_text(value: str, target: str) -> object | None:
    """A string literal read as a value of ``target`` (dates, times, durations); None if it is not one."""
    try:
        if target == "duration":
            return parse_duration(value)
        if target == "date":
            return dt.date.fromisoformat(value)
        if target == "datetime":
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else None  # a naive time is ambiguous: say which zone
        if target == "time":
            return dt.time.fromisoformat(value)
    except ValueError:
        return None
    return None


LITERAL_HINTS = {
    "duration": "write a duration such as \"30m\", \"2h\", \"7d\" or \"1h30m\"",
    "date": "write a date as \"2026-12-31\"",
    "datetime": "write a datetime with its offset, e.g. \"2026-12-31T08:00:00+08:00\"",
    "time": "write a time as \"08:30\"",
}
