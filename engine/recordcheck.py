"""The checks and derivations a record goes through before it is written.

Defaults, computed fields, references (users by name, linked records, files), ``required``,
``required_if``, ``visible_if`` (a hidden field is not required), ``readonly_if``, ``pattern``,
``min``/``max``, ``max_length``, ``unique`` and the entity's ``validations:``. Every failing field
is reported at once, each with a message a user can act on. Expressions are evaluated with their
compiled Python form, the same that the pages use to show and hide fields.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, Table, bindparam, func, select

from engine.actors import Actor
from engine.db import Prepared
from engine.errors import ValidationFailed
from engine.expressions import Compiled, EvalContext, SqlContext
from engine.expressions.counts import CountStatement, capped_count, count_statement
from engine.messages import Msg
from engine.model import Entity, Expr, Field
from engine.tables import COMPUTED_SCALE
from engine.values import BadValue, is_empty, parse

if TYPE_CHECKING:
    from engine.records import Records


COMPUTED_QUANTUM = Decimal(1).scaleb(-COMPUTED_SCALE)  # as the computed columns store them


@functools.lru_cache(maxsize=512)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


class RecordChecker:
    def __init__(self, records: Records) -> None:
        self.records = records
        # Prepared counts by (entity, condition, window); the condition is kept alive as the key.
        self._counts: dict[tuple[str, Compiled, float | None], CountStatement | None] = {}
        self._conditional_fields: dict[str, frozenset[str]] = {}  # by entity: see _conditional

    # -- expressions ---------------------------------------------------------------------------

    def context(
        self, conn: Connection, entity: Entity, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
        actor: Actor, now: dt.datetime, *, unsaved: bool = False,
    ) -> EvalContext:  # fmt: skip
        """The context expressions over ``record`` run in. ``unsaved``: the record is being created
        and not stored yet (engine/rules.py: create), so a ``count(...)`` over its entity adds
        it when it matches, as the stored rows would."""
        records = self.records

        def load(entity_name: str, record_id: Any) -> Mapping[str, Any] | None:
            target = records.app.entity(entity_name)
            return None if target is None or record_id is None else records.load(conn, target, record_id)

        def count(
            entity_name: str, condition: Compiled, within: float | None, this: Mapping[str, Any], at_most: int | None = None
        ) -> int:
            target = records.entity(entity_name)
            table = records.tables(target).main
            itself = 0
            if unsaved and target.name == entity.name:  # created at ``now``: inside any window
                inner = EvalContext(record=this, app=records.app, entity=target, now=now, user=actor, load=load, this=this)
                itself = 1 if condition.evaluate(inner) is True else 0
            prepared = self.count_statement(target, table, condition, within)
            # Counted up to ``at_most`` (a comparison's cap), plus the unsaved record: compared
            # with the same number, the sum comes out as the whole count would.
            if prepared is not None:
                return prepared.run(conn, this, now, at_most) + itself
            sql = SqlContext(records.schema, records.app, target, now, actor, table=table, this_values=this)
            where = [condition.clause(sql)]
            if within is not None:
                where.append(table.c.created_at >= now - dt.timedelta(seconds=within))
            query = capped_count(table, where, at_most) if at_most is not None else select(func.count()).select_from(table).where(*where)
            return int(conn.execute(query).scalar_one()) + itself

        return EvalContext(
            record=record, app=records.app, entity=entity, now=now, user=actor, previous=previous, load=load, count=count
        )

    def count_statement(self, target: Entity, table: Table, condition: Compiled, within: float | None) -> CountStatement | None:
        """The prepared form of a ``count(...)`` condition, made once per app (None: built per call)."""
        key = (target.name, condition, within)
        if key not in self._counts:
            sql = SqlContext(self.records.schema, self.records.app, target, dt.datetime.now(dt.UTC), None, table=table)
            self._counts[key] = count_statement(sql, condition, within)
        return self._counts[key]

    def evaluate(self, expr: Expr, ctx: EvalContext) -> Any:
        return self.records.expr(expr).evaluate(ctx)

    # -- derivations ---------------------------------------------------------------------------

    def apply_defaults(
        self, conn: Connection, entity: Entity, record: dict[str, Any], given: Mapping[str, Any], actor: Actor, now: dt.datetime
    ) -> None:
        """Fill the fields the input left out with their ``default`` (a value or an expression)."""
        ctx = None
        for f in entity.fields:
            if f.name in given or f.default is None or f.is_computed:
                continue
            if isinstance(f.default, Expr):
                ctx = ctx or self.context(conn, entity, record, None, actor, now)
                value = self.evaluate(f.default, ctx)
            else:
                value = f.default
            try:
                record[f.name] = parse(f, value, self.records.timezone) if not isinstance(value, dt.datetime | dt.date) else value
            except BadValue as exc:  # the definition's default does not fit its own field
                raise ValidationFailed(f"the default of {f.name} is not valid: {exc}", {f.name: exc.message}) from None
            if f.type == "user" and isinstance(record[f.name], str):
                record[f.name] = self.records.users.ids(conn, [record[f.name]]).get(record[f.name])

    def compute(self, conn: Connection, entity: Entity, record: dict[str, Any], actor: Actor, now: dt.datetime) -> None:
        if not entity.computed_names:
            return
        computed = [f for f in entity.fields if f.is_computed and f.expr is not None]
        if not computed:
            return
        ctx = self.context(conn, entity, record, None, actor, now)
        for f in computed:
            value = self.evaluate(f.expr, ctx)  # type: ignore[arg-type]
            if isinstance(value, Decimal):  # as the column stores it, so a re-read compares equal
                value = value.quantize(COMPUTED_QUANTUM)
            elif isinstance(value, float):
                value = Decimal(repr(value)).quantize(COMPUTED_QUANTUM)
            elif isinstance(value, dt.timedelta):  # durations are stored as seconds
                value = Decimal(str(value.total_seconds())).quantize(COMPUTED_QUANTUM)
            record[f.name] = value

    # -- references ----------------------------------------------------------------------------

    def resolve_references(self, conn: Connection, entity: Entity, parsed: dict[str, Any]) -> None:
        """Usernames to ids, and linked records and files that must exist."""
        errors: dict[str, str] = {}
        users = self.records.users
        given = [f for f in entity.reference_fields if f.name in parsed and not is_empty(parsed[f.name])]
        names = {v for f in given if f.type == "user" for v in _values(parsed[f.name]) if isinstance(v, str)}
        ids = users.ids(conn, names) if names else {}
        for f in given:
            values = _values(parsed[f.name])
            if f.type == "user":
                resolved = [ids.get(v) if isinstance(v, str) else v for v in values]
                missing = [str(v) for v, r in zip(values, resolved, strict=True) if r is None]
                if missing:
                    errors[f.name] = Msg("no such user: %(names)s", names=", ".join(missing))
                    continue
                if f.role and not users.all_have_role(conn, resolved, self.records.app.name, f.role):
                    errors[f.name] = Msg("the user must have the role %(role)s", role=f.role)
                    continue
                parsed[f.name] = resolved if f.is_multi else resolved[0]
            elif f.type == "link":
                target = self.records.tables(f.entity or "").main
                if len(values) == 1:
                    found = set(_id_is(target).execute(conn, {"id": values[0]}).scalars())
                else:
                    found = set(conn.execute(_ids_in(target), {"ids": values}).scalars())
                missing = [str(v) for v in values if v not in found]
                if missing:
                    errors[f.name] = Msg("no %(entity)s record with id %(ids)s", entity=f.entity, ids=", ".join(missing))
            elif f.type in ("file", "image"):
                files = self.records.schema.system["kiln_files"]
                rows = conn.execute(select(files.c.id, files.c.size, files.c.filename).where(files.c.id.in_(values))).all()
                if len(rows) != len(set(values)):
                    errors[f.name] = Msg("no such file; upload it first with POST /api/v1/files")
                elif f.max_size and any(r.size > f.max_size for r in rows):
                    errors[f.name] = Msg("a file is larger than %(size)s bytes", size=f.max_size)
                elif f.accept and any(not _accepts(f.accept, r.filename) for r in rows):
                    errors[f.name] = Msg("accepted file types: %(types)s", types=", ".join(f.accept))
        if errors:
            raise ValidationFailed("some values are not valid", errors)

    # -- validation ----------------------------------------------------------------------------

    def check_readonly_if(
        self, conn: Connection, entity: Entity, before: Mapping[str, Any], incoming: Mapping[str, Any], actor: Actor,
        now: dt.datetime,
    ) -> None:  # fmt: skip
        guarded = [f for f in entity.guarded_fields if f.name in incoming and incoming[f.name] != before.get(f.name)]
        if not guarded:
            return
        ctx = self.context(conn, entity, before, None, actor, now)
        errors = {f.name: Msg("this field cannot be changed now") for f in guarded if self.evaluate(f.readonly_if, ctx)}  # type: ignore[arg-type]
        if errors:
            raise ValidationFailed("some fields cannot be changed now", errors)

    def visible(self, entity: Entity, f: Field, ctx_factory: Any) -> bool:
        """A field is visible when its own ``visible_if`` and its form section's hold."""
        conditions = [f.visible_if] + [s.visible_if for s in entity.form if f.name in s.fields]
        for condition in conditions:
            if condition is not None and not self.evaluate(condition, ctx_factory()):
                return False
        return True

    def validate(
        self, conn: Connection, entity: Entity, record: Mapping[str, Any], before: Mapping[str, Any] | None,
        actor: Actor, now: dt.datetime, *, changed: set[str] | None = None,
    ) -> None:  # fmt: skip
        """Refuse a record that breaks a field's rules or a ``validations:`` entry. ``changed``:
        the record passed before but for these fields (a creation's rules changed them), so only
        what they can change the outcome of is checked again: their values; whether a field is
        required where that depends on a condition (``required_if``, ``visible_if``); and the
        validations that read one of them (:meth:`_depends`)."""
        errors: dict[str, str] = {}
        ctx: EvalContext | None = None

        def context() -> EvalContext:
            nonlocal ctx
            ctx = ctx or self.context(conn, entity, record, before, actor, now)
            return ctx

        # With ``changed``, the fields whose value or whose being required may have changed.
        if changed is None:
            fields = entity.fields
        else:
            conditional = self._conditional(entity)
            fields = tuple(f for f in entity.fields if f.name in changed or f.name in conditional)
        for f in fields:
            if f.disabled or f.is_computed:
                continue
            value = record.get(f.name)
            if is_empty(value):
                needed = f.required or (f.required_if is not None and self.evaluate(f.required_if, context()))
                if needed and self.visible(entity, f, context):
                    errors[f.name] = Msg("required")
                continue
            message = self.check_value(f, value) if changed is None or f.name in changed else None
            if message:
                errors[f.name] = message
        for f in fields:
            if changed is not None and f.name not in changed:
                continue
            if f.unique and f.name not in errors and not is_empty(record.get(f.name)):
                if before is None or before.get(f.name) != record.get(f.name):
                    table = self.records.tables(entity).main
                    query = select(table.c.id).where(table.c[f.name] == record[f.name]).limit(1)
                    if record.get("id") is not None:
                        query = query.where(table.c.id != record["id"])
                    if conn.execute(query).first() is not None:
                        errors[f.name] = Msg("already used by another record")
        for v in entity.validations:
            if changed is not None and not self._depends(v.when, changed):
                continue
            if self.evaluate(v.when, context()):
                for name in v.fields or ("",):
                    errors.setdefault(name, v.message)
        if errors:
            first = next(iter(errors.values()))
            raise ValidationFailed(first if len(errors) == 1 else "some values are not valid", errors)

    def _conditional(self, entity: Entity) -> frozenset[str]:
        """The fields whether a value is required depends on a condition (``required_if``, a
        ``visible_if`` of the field or of its form section): any change may change it."""
        found = self._conditional_fields.get(entity.name)
        if found is None:
            hidden = {name for s in entity.form if s.visible_if is not None for name in s.fields}
            found = frozenset(f.name for f in entity.fields if f.required_if is not None or f.visible_if is not None or f.name in hidden)
            self._conditional_fields[entity.name] = found
        return found

    def _depends(self, expr: Expr, changed: set[str]) -> bool:
        """Whether ``expr`` over a record may come out otherwise once ``changed`` changed: it reads
        one of them, or more than the record's fields (a ``count(...)``, the change)."""
        reads = self.records.expr(expr).fields_read
        return reads is None or not reads.isdisjoint(changed)

    def check_value(self, f: Field, value: Any) -> str | None:
        for item in _values(value):
            if f.max_length is not None and isinstance(item, str) and len(item) > f.max_length:
                return Msg("at most %(n)s characters", n=f.max_length)
            if f.pattern and isinstance(item, str) and not _pattern(f.pattern).search(item):
                return Msg("does not match the expected format (%(pattern)s)", pattern=f.pattern)
            if isinstance(item, int | float) and not isinstance(item, bool) or hasattr(item, "as_tuple"):
                if f.min is not None and item < f.min:
                    return Msg("at least %(n)s", n=f.min)
                if f.max is not None and f.type != "rating" and item > f.max:
                    return Msg("at most %(n)s", n=f.max)
        return None


@functools.lru_cache(maxsize=256)
def _id_is(table: Table) -> Prepared:
    return Prepared(select(table.c.id).where(table.c.id == bindparam("id")))


@functools.lru_cache(maxsize=256)
def _ids_in(table: Table) -> Select:
    return select(table.c.id).where(table.c.id.in_(bindparam("ids", expanding=True)))


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _accepts(accept: tuple[str, ...], filename: str) -> bool:
    lower = filename.lower()
    return any(lower.endswith(a.lower()) for a in accept if a.startswith(".")) or not any(a.startswith(".") for a in accept)
