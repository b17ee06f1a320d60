"""Property: the Python and the SQL forms of an expression select the same records.

Random records (nulls included) over an entity with a field of every kind the language treats
differently, random expressions built from every operator and function that has a SQL form;
on SQLite and, with KILN_TEST_PG, on PostgreSQL. The app's timezone has daylight saving time
and ``now`` sits on the day it changes, so local-time functions are tested where they break.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select

from engine.actors import Actor
from engine.builder import build_app
from engine.db import connect
from engine.errors import Loc
from engine.expressions import EvalContext, SqlContext, compile_expression
from engine.expressions.counts import count_statement, preparable
from engine.source import parse_yaml
from engine.tables import build_schema

APP = """
app: prop
timezone: America/New_York
roles: {admin: {}, staff: {}}
teams: {red: {}, blue: {}}
entities:
  group:
    fields:
      name: {type: text}
      rank: {type: integer}
      tags: {type: tags}
      lead: {type: link, entity: group}
  item:
    fields:
      title: {type: text}
      qty: {type: integer}
      price: {type: decimal}
      flag: {type: boolean}
      kind: {type: select, options: {a: A, b: B, c: C}}
      day: {type: date}
      at: {type: datetime}
      slot: {type: time}
      owner: {type: user}
      team: {type: team}
      group: {type: link, entity: group}
      tags: {type: tags}
    workflow:
      initial: new
      states: {new: {}, done: {}}
      transitions: {finish: {from: new, to: done}}
"""

# 2026-03-08 is the day US clocks move forward (07:00 UTC): local times and dates shift there.
NOW = dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)
USERS = [
    Actor(1, "ann", roles=frozenset({"admin"}), teams=frozenset({"red"})),
    Actor(2, "bob", roles=frozenset({"staff"}), teams=frozenset({"blue", "red"})),
    Actor(3, "cy"),
    None,
]

# -- records -----------------------------------------------------------------------------------


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


# Quarter steps are exact in binary floating point, so SQLite's REAL agrees with Decimal.
decimals = st.integers(-8, 12).map(lambda n: Decimal(n) / 4)
moments = st.integers(-3 * 24 * 60, 2 * 24 * 60).map(lambda m: NOW + dt.timedelta(minutes=m))
days = st.integers(-4, 4).map(lambda n: dt.date(2026, 3, 8) + dt.timedelta(days=n))
tag_lists = st.lists(st.sampled_from(["x", "y", "z"]), unique=True, max_size=3)

record_values = st.fixed_dictionaries({
    "title": maybe(st.sampled_from(["", "abc", "Abc", "xabcx", "b", "轴承异响"])),
    "qty": maybe(st.integers(-5, 5)),
    "price": maybe(decimals),
    "flag": maybe(st.booleans()),
    "kind": maybe(st.sampled_from(["a", "b", "c"])),
    "day": maybe(days),
    "at": maybe(moments),
    "slot": maybe(st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 30, 59]))),
    "owner": maybe(st.sampled_from([1, 2, 3])),
    "team": maybe(st.sampled_from(["red", "blue"])),
    "group": maybe(st.sampled_from([1, 2, 3])),
    "tags": tag_lists,
    "state": st.sampled_from(["new", "done"]),
    "created_at": moments,
    "created_by": maybe(st.sampled_from([1, 2])),
    "done_after": maybe(st.integers(0, 180)),
})  # fmt: skip
group_values = st.fixed_dictionaries({
    "name": maybe(st.sampled_from(["g", "h", ""])), "rank": maybe(st.integers(0, 3)), "tags": tag_lists,
    "lead": maybe(st.sampled_from([1, 2, 3])),
})  # fmt: skip

# -- expressions -------------------------------------------------------------------------------

NUMBER_ATOMS = [
    "qty", "price", "group.rank", "id", "0", "1", "2", "-1", "2.5", "len(title)", "len(tags)",
    "len(group.tags)", "(qty / 2)", "group.lead.rank", "count(item, kind == this.kind)",
    'count(item, group == this.group and flag, within="1d")',
]  # fmt: skip
numbers = st.recursive(
    st.sampled_from(NUMBER_ATOMS),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    max_leaves=3,
)
comparisons = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
equalities = st.sampled_from(["==", "!="])

BOOLEAN_ATOMS = [
    'title == ""', 'title == "abc"', 'title != "b"', "title == null", "title != null", 'title == "轴承异响"',
    'kind == "a"', 'kind != "b"', 'kind in ["a", "b"]', 'kind not in ["c"]', "kind == null",
    "flag", "not flag", "flag == true", "flag != false", "flag == null",
    "is_empty(title)", "is_empty(tags)", "is_empty(qty)", "is_empty(group)", "is_empty(group.tags)", "is_empty(day)",
    '"x" in tags', '"y" not in tags', '"x" in group.tags', 'contains(tags, "z")', 'contains_any(tags, ["x", "z"])',
    'contains(title, "ab")', 'contains_any(title, ["轴", "b"])', '"b" in title', '"c" not in title',
    'day < "2026-03-08"', 'day == "2026-03-09"', "day == today()", 'day >= today() - "2d"', 'day + "1d" > "2026-03-09"',
    "date(at) == day", 'date(at) >= "2026-03-08"', 'date(created_at) < today()', "day - date(at) <= \"1d\"",
    "at > now()", "at <= now()", "at >= today()", 'at - created_at <= "2h"', 'at < created_at + "1d"',
    'created_at >= "2026-03-07"', 'created_at < "2026-03-08T03:30:00-05:00"', "at == null", "at != null",
    "at - created_at > entered_done_at - created_at", 'entered_done_at - created_at <= "1h"',
    "entered_done_at == null", 'now() - at > "1d12h"', 'at + "2h" >= now() - "30m"',
    'time_between(at, "20:00", "07:59")', 'time_between(at, "09:00", "17:30")',
    'time_between(created_at, "01:00:30", "02:00")', 'time_between(slot, "08:00", "12:00")', 'slot > "10:00"',
    "hours_since(at) > 5", "hours_since(created_at) <= 24", "hours_since(at) < -1",
    "owner == user", "owner == user.id", "owner != user", "created_by == user", 'has_role("admin")',
    'in_team("red")', "team == user.team", "team in user.teams", 'team == "red"', "team != null",
    "group == 1", "group.rank > 1", 'group.name == "g"', "group == null", "group.name == null", "group != 2",
    'state == "new"', 'state in ["done"]', "1 < qty < 4", "qty in [1, 2]", "qty not in [0]", "id > 10",
    "count(item, kind == this.kind) >= 2", 'count(item, group == this.group and flag, within="1d") > 1',
    'count(item, "x" in tags and this.qty != null and qty > this.qty) == 0',
    'group.lead.rank > 1', 'group.lead.name == "g"', '"x" in group.lead.tags', "is_empty(group.lead.tags)",
    'count(item, "x" in this.tags) >= 2', "count(item, group.lead == this.group) > 0", "group.lead.lead == group",
]  # fmt: skip
atoms = st.one_of(
    st.sampled_from(BOOLEAN_ATOMS),
    st.tuples(numbers, comparisons, numbers).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(numbers, equalities).map(lambda t: f"{t[0]} {t[1]} null"),
)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"not ({e})"),
    ),
    max_leaves=4,
)

# -- the property ------------------------------------------------------------------------------


def _rows(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, v in enumerate(values, start=1):
        done = v["done_after"]
        rows.append({
            "id": i, **{k: v[k] for k in v if k not in ("tags", "done_after")},
            "updated_at": v["created_at"], "version": 1,
            "entered_new_at": v["created_at"],
            "entered_done_at": None if done is None else v["created_at"] + dt.timedelta(minutes=done),
        })  # fmt: skip
    return rows


def test_python_and_sql_agree(db_url: str) -> None:
    app = build_app(parse_yaml(APP, "app.yaml"))
    item, group = app.entity("item"), app.entity("group")
    schema = build_schema([app])
    engine = connect(db_url)
    schema.metadata.create_all(engine)
    items = schema.entity("prop", "item")

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        item_values=st.lists(record_values, min_size=20, max_size=30),
        group_list=st.lists(group_values, min_size=3, max_size=3),
        sources=st.lists(conditions, min_size=5, max_size=5),
        user=st.sampled_from(USERS),
    )
    def check(item_values: list[dict], group_list: list[dict], sources: list[str], user: Actor | None) -> None:
        records, by_entity = _store(engine, schema, item_values, group_list)
        load, count = _python_counter(app, by_entity, user)
        for source in sources:
            compiled = compile_expression(source, Loc("app.yaml", 1, 1), app, item)
            expected = set()
            for record in records:
                ctx = EvalContext(record=record, app=app, entity=item, now=NOW, user=user, load=load, count=count)
                result = compiled.evaluate(ctx)
                assert isinstance(result, bool), source
                if result:
                    expected.add(record["id"])
            clause = compiled.clause(SqlContext(schema, app, item, NOW, user))
            with engine.connect() as conn:
                selected = set(conn.execute(select(items.main.c.id).where(clause)).scalars())
            assert selected == expected, f"{source}: SQL only {sorted(selected - expected)}, Python only {sorted(expected - selected)}"

    assert group is not None
    try:
        check()
    finally:
        engine.dispose()


# Inner conditions of count(...) that read the outer record: what rules' counts look like (S14).
THIS_ATOMS = [
    "kind == this.kind", "group == this.group", "qty > this.qty", "title == this.title", "day == this.day",
    "at < this.at", "owner == this.owner", "team == this.team", "flag == this.flag", "price <= this.price",
    "group.lead == this.group", "this.qty != null and qty > this.qty", 'contains(title, this.title)',
    "slot == this.slot", "kind != this.kind or this.kind == null",
]  # fmt: skip


def test_prepared_counts_agree_with_python(db_url: str) -> None:
    """A count(...) of a rule's condition is compiled once to a statement whose parameters are
    the outer record's values (engine/expressions/counts.py): for every record as ``this`` it
    counts what the Python evaluator counts, nulls included."""
    app = build_app(parse_yaml(APP, "app.yaml"))
    item = app.entity("item")
    schema = build_schema([app])
    engine = connect(db_url)
    schema.metadata.create_all(engine)
    table = schema.entity("prop", "item").main

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        item_values=st.lists(record_values, min_size=15, max_size=25),
        group_list=st.lists(group_values, min_size=3, max_size=3),
        inner=st.tuples(st.sampled_from(THIS_ATOMS), st.sampled_from(["and", "or"]), conditions),
        within=st.sampled_from(["", ', within="1d"', ', within="2h"']),
    )
    def check(item_values: list[dict], group_list: list[dict], inner: tuple[str, str, str], within: str) -> None:
        records, by_entity = _store(engine, schema, item_values, group_list)
        _, count = _python_counter(app, by_entity, None)
        source = f"count(item, ({inner[0]}) {inner[1]} ({inner[2]}){within}) >= 0"
        node = compile_expression(source, Loc("app.yaml", 1, 1), app, item).root.left
        seconds = node.within.total_seconds() if node.within is not None else None
        prepared = count_statement(SqlContext(schema, app, item, NOW, None, table=table), node.inner, seconds)
        if prepared is None:  # reads now(), the user or a multi-valued this.field: built per call
            assert not preparable(node.inner)
            return
        with engine.connect() as conn:
            for record in records:
                expected = count("item", node.inner, seconds, record)
                assert prepared.run(conn, record, NOW) == expected, f"{source} for this = item {record['id']}"
                for cap in (0, 1, 3):  # a comparison with a number counts no further than it needs
                    assert prepared.run(conn, record, NOW, cap) == min(expected, cap), f"{source}, at most {cap}"

    try:
        check()
    finally:
        engine.dispose()


def _store(engine: Any, schema: Any, item_values: list[dict], group_list: list[dict]) -> tuple[list[dict], dict]:
    """The drawn records written to the tables (replacing the last example's); the item rows and
    every row by entity and id."""
    items, groups = schema.entity("prop", "item"), schema.entity("prop", "group")
    records = _rows(item_values)
    for row, values in zip(records, item_values, strict=True):
        row["tags"] = values["tags"]
    group_rows = [{"id": i, "created_at": NOW, "updated_at": NOW, "version": 1, **g} for i, g in enumerate(group_list, 1)]
    with engine.begin() as conn:
        for table in (items.children["tags"], groups.children["tags"], items.main, groups.main):
            conn.execute(delete(table))
        conn.execute(insert(groups.main), [{k: v for k, v in g.items() if k != "tags"} for g in group_rows])
        conn.execute(insert(items.main), [{k: v for k, v in r.items() if k != "tags"} for r in records])
        tag_rows = [{"record_id": r["id"], "position": p, "value": t} for r in records for p, t in enumerate(r["tags"])]
        group_tag_rows = [{"record_id": g["id"], "position": p, "value": t} for g in group_rows for p, t in enumerate(g["tags"])]
        if tag_rows:
            conn.execute(insert(items.children["tags"]), tag_rows)
        if group_tag_rows:
            conn.execute(insert(groups.children["tags"]), group_tag_rows)
    return records, {"item": {r["id"]: r for r in records}, "group": {g["id"]: g for g in group_rows}}


def _python_counter(app: Any, by_entity: dict, user: Actor | None) -> tuple[Any, Any]:
    """``load`` and ``count`` of an EvalContext answered from the rows in memory."""

    def load(entity: str, record_id: Any) -> dict | None:
        return by_entity[entity].get(record_id)

    def count(entity: str, inner: Any, within: float | None, this: Any, at_most: int | None = None) -> int:
        found = 0
        for candidate in by_entity[entity].values():
            if within is not None and candidate["created_at"] < NOW - dt.timedelta(seconds=within):
                continue
            ctx = EvalContext(record=candidate, app=app, entity=app.entity(entity), now=NOW, user=user, load=load, this=this)
            found += inner.evaluate(ctx) is True
        return found if at_most is None else min(found, at_most)

    return load, count
