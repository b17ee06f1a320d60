"""``count(entity, condition, within=)`` in a rule's condition, as one prepared statement.

A rule like S14's ``count(ticket, device == this.device and category == this.category,
within="7d") >= 3`` runs its count for every change that fires it. Built as a clause each time,
SQLAlchemy's statement construction and cache-key walk cost more than the indexed query itself.
Here the condition is compiled to SQL once, with the outer record's values (``this.x``) and the
window's start as parameters, and runs on the connection's cursor (:class:`engine.db.Prepared`).

Conditions whose SQL depends on more than those values (``now()``, ``user``, another count, a
multi-valued ``this`` field that is spelled out as literals) are not prepared: the caller builds
their clause per call, as before.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Integer,
    Select,
    String,
    Time,
    bindparam,
    func,
    literal_column,
    select,
)

from engine.db import Prepared, UTCDateTime

from .compiled import Compiled, SqlContext
from .dialect import TypedParameter
from .evaluate import normalise, seconds
from .nodes import Call, Count, FieldRef, UserRef, walk

# Functions whose SQL binds the time or the user of the call: no statement fits every call.
CALL_DEPENDENT = frozenset({"now", "today", "hours_since", "has_role", "in_team"})


def _sql_type(type_: str) -> Any:
    from .sql import Number  # sql.py builds on this module's parameters

    if type_ == "text":
        return String()
    if type_ in ("number", "duration"):
        return Number()
    if type_ == "boolean":
        return Boolean()
    if type_ == "date":
        return Date()
    if type_ == "datetime":
        return UTCDateTime()
    if type_ == "time":
        return Time()
    if type_ == "team":  # teams are compared by name
        return String()
    if type_ == "user" or type_.startswith("link:"):
        return BigInteger()
    return None


class ThisParameters:
    """The outer record of a count as statement parameters: ``this.device`` becomes
    ``:this_device``. The SQL compiler asks for one per field it reads (see ``SqlCompiler.first``)."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}  # field -> language type

    def param(self, name: str, type_: str) -> TypedParameter:
        sql_type = _sql_type(type_)
        if sql_type is None:
            raise NotPreparable(f"this.{name} of type {type_}")
        self.fields[name] = type_
        return TypedParameter(bindparam(f"this_{name}", type_=sql_type))

    def values(self, this: Any) -> dict[str, Any]:
        out = {}
        for name, type_ in self.fields.items():
            value = normalise(this.get(name), type_)
            out[f"this_{name}"] = seconds(value) if type_ == "duration" and value is not None else value
        return out


class NotPreparable(Exception):
    """The condition's SQL depends on more than the outer record's values."""


def preparable(condition: Compiled) -> bool:
    for node in walk(condition.root):
        if isinstance(node, UserRef | Count) or (isinstance(node, Call) and node.name in CALL_DEPENDENT):
            return False
        if isinstance(node, FieldRef) and node.root == "this" and node.multi:
            return False
    return True


class CountStatement:
    """One ``count(...)`` condition over its table, prepared; ``run`` answers it for a record."""

    def __init__(self, sql: SqlContext, condition: Compiled, within: float | None) -> None:
        from .sql import SqlCompiler

        table = sql.table
        self.this = ThisParameters()
        where = [SqlCompiler(sql, condition, table=table, this=self.this).compile()]
        self.within = dt.timedelta(seconds=within) if within is not None else None
        if self.within is not None:
            where.append(table.c.created_at >= bindparam("since", type_=UTCDateTime()))
        self.statement = Prepared(select(func.count()).select_from(table).where(*where))
        self.capped = Prepared(capped_count(table, where, bindparam("cap", type_=Integer())))

    def run(self, conn: Any, this: Any, now: dt.datetime, at_most: int | None = None) -> int:
        """The rows ``this`` counts; with ``at_most``, no more than that many are read."""
        params = self.this.values(this)
        if self.within is not None:
            params["since"] = now - self.within
        if at_most is None:
            return int(self.statement.execute(conn, params).scalar_one())
        params["cap"] = at_most
        return int(self.capped.execute(conn, params).scalar_one())


def capped_count(table: Any, where: list[Any], cap: Any) -> Select:
    """``SELECT count(*) FROM (SELECT 1 FROM table WHERE ... LIMIT cap)``: a count that stops
    reading rows at ``cap``, for a comparison with a number (``count(...) >= 3``)."""
    rows = select(literal_column("1")).select_from(table).where(*where).limit(cap).subquery()
    return select(func.count()).select_from(rows)


def count_statement(sql: SqlContext, condition: Compiled, within: float | None) -> CountStatement | None:
    """The prepared count, or None when this condition must be built per call."""
    if not preparable(condition):
        return None
    try:
        return CountStatement(sql, condition, within)
    except NotPreparable:
        return None
