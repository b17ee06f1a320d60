"""Migrations (SPEC.md section 6): planned from the definition, applied in one transaction."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, inspect, select, update

from engine import migrations, migrations_ops
from engine.compiler import Compiled, compile_definitions
from engine.db import connect, read, write

NOW = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
ROWS = 10_000

WORKFLOW = """
    workflow:
      initial: new
      states:
        new: {}
        doing: {}
        done: {final: true}
      transitions:
        start: {from: new, to: doing}
        finish: {from: doing, to: done}
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = connect(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def define(write_definitions):
    """Write shop/app.yaml (replacing the previous version) and compile the definitions."""

    def define(yaml: str) -> Compiled:
        folder: Path = write_definitions({"shop/app.yaml": "app: shop\nentities:\n" + yaml})
        return compile_definitions(folder)

    return define


def insert_rows(engine: Engine, compiled: Compiled, entity: str, rows: list[dict]) -> None:
    """Rows straight into the entity's table (Core executemany), with the system columns filled."""
    t = compiled.schema.entity("shop", entity).main
    base = {"created_at": NOW, "updated_at": NOW, "version": 1}
    with write(engine) as conn:
        conn.execute(insert(t), [{**base, **row} for row in rows])


def column_names(engine: Engine, table: str) -> set[str]:
    with read(engine) as conn:
        return {c["name"] for c in inspect(conn).get_columns(table)}


def index_names(engine: Engine, table: str) -> set[str]:
    with read(engine) as conn:
        insp = inspect(conn)
        return {i["name"] for i in insp.get_indexes(table)} | {u["name"] for u in insp.get_unique_constraints(table)}


def table_names(engine: Engine) -> set[str]:
    with read(engine) as conn:
        return set(inspect(conn).get_table_names())


def kinds(plan: migrations.Plan) -> list[tuple[str, str, str | None, str | None]]:
    return [(s.kind, s.table, s.column, s.new) for s in plan.steps]


def test_fresh_database_gets_every_table_with_its_indexes(engine: Engine, define) -> None:
    compiled = define("""
  ticket:
    number: "T{seq:4}"
    fields:
      summary: {type: text}
      code: {type: text, unique: true}
      category: {type: select, options: {a: A, b: B}}
      tags: {type: tags}
""" + WORKFLOW)
    plan = migrations.plan(engine, compiled)
    created = {s.table for s in plan.steps if s.kind == "create_table"}
    assert created == set(compiled.schema.metadata.tables)
    assert "+ create table shop__ticket " in plan.render()

    applied = migrations.apply(engine, compiled, now=NOW)

    assert {s.table for s in applied.steps} == created
    assert set(compiled.schema.metadata.tables) <= table_names(engine)
    assert {"ix_shop__ticket_category", "uq_shop__ticket_code", "ix_shop__ticket_state", "ix_shop__ticket__tags_value"} <= (
        index_names(engine, "shop__ticket") | index_names(engine, "shop__ticket__tags")
    )
    assert {"entered_new_at", "entered_doing_at", "entered_done_at"} <= column_names(engine, "shop__ticket")
    migrations_table = compiled.schema.system["kiln_migrations"]
    with read(engine) as conn:
        recorded = conn.execute(select(migrations_table)).mappings().all()
    assert [(r["app"], r["definition_hash"], r["applied_at"]) for r in recorded] == [
        ("shop", compiled.apps["shop"].definition_hash, NOW)
    ]
    assert {s["table"] for s in recorded[0]["summary"]["steps"]} >= {"shop__ticket", "shop__ticket__tags"}
    # Idempotent: nothing left to do, nothing recorded again.
    assert migrations.plan(engine, compiled).is_empty
    assert migrations.pending(engine, compiled) is None
    assert migrations.apply(engine, compiled).is_empty
    with read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(migrations_table)).scalar_one() == 1


def test_add_rename_and_remove_fields_keep_every_value(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
      cost: {type: decimal, scale: 2}
      note: {type: text}
      owner: {type: user}
      tags: {type: tags}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "ticket", [
        {"summary": f"summary {i}", "cost": Decimal(i) / 100, "note": f"note {i}", "owner": i % 7} for i in range(ROWS)
    ])  # fmt: skip
    tags = v1.schema.entity("shop", "ticket").children["tags"]
    with write(engine) as conn:
        conn.execute(insert(tags), [{"record_id": i + 1, "position": 0, "value": f"tag{i}"} for i in range(ROWS)])

    v2 = define("""
  ticket:
    fields:
      title: {type: text, renamed_from: summary}
      cost: {type: decimal, scale: 2}
      assignee: {type: user, renamed_from: owner}
      priority: {type: select, options: {high: High, low: Low}}
      labels: {type: tags, renamed_from: tags}
""")
    plan = migrations.plan(engine, v2)
    steps = kinds(plan)
    assert ("rename_column", "shop__ticket", "summary", "title") in steps
    assert ("rename_column", "shop__ticket", "owner", "assignee") in steps
    assert ("rename_table", "shop__ticket__tags", None, "shop__ticket__labels") in steps
    assert ("add_column", "shop__ticket", "priority", None) in steps
    assert ("add_index", "shop__ticket", None, "ix_shop__ticket_priority") in steps
    assert ("keep_column", "shop__ticket", "note", None) in steps
    assert ("rename_index", "shop__ticket", "ix_shop__ticket_owner", "ix_shop__ticket_assignee") in steps
    assert not any(kind.startswith("drop") for kind, *_ in steps)
    text = plan.render()
    assert "~ rename column shop__ticket.summary -> title (data kept)" in text
    assert "= keep column shop__ticket.note" in text

    migrations.apply(engine, v2, now=NOW)

    main = v2.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        rows = conn.execute(select(main.c.id, main.c.title, main.c.cost, main.c.assignee, main.c.priority).order_by(main.c.id)).all()
        labels = v2.schema.entity("shop", "ticket").children["labels"]
        label_rows = conn.execute(select(labels.c.record_id, labels.c.value).order_by(labels.c.record_id)).all()
        notes = conn.execute(select(func.count()).select_from(main).where(main.c.id > 0)).scalar_one()
    assert len(rows) == ROWS == notes
    for i, row in enumerate(rows):
        assert row == (i + 1, f"summary {i}", Decimal(i) / 100, i % 7, None)
    assert label_rows == [(i + 1, f"tag{i}") for i in range(ROWS)]
    assert "note" in column_names(engine, "shop__ticket")
    assert {"ix_shop__ticket_assignee", "ix_shop__ticket_priority"} <= index_names(engine, "shop__ticket")
    assert "ix_shop__ticket_owner" not in index_names(engine, "shop__ticket")
    assert migrations.plan(engine, v2).is_empty  # the kept column is reported, not pending
    # A row can still be inserted without the kept column.
    insert_rows(engine, v2, "ticket", [{"title": "new"}])

    destructive = migrations.plan(engine, v2, allow_destructive=True)
    assert ("drop_column", "shop__ticket", "note", None) in kinds(destructive)
    assert f"- drop column shop__ticket.note ({ROWS} values)" in destructive.render()
    migrations.apply(engine, v2, allow_destructive=True)
    assert "note" not in column_names(engine, "shop__ticket")
    with read(engine) as conn:
        titles = conn.execute(select(main.c.title).order_by(main.c.id)).scalars().all()
    assert titles == [f"summary {i}" for i in range(ROWS)] + ["new"]
    with read(engine) as conn:  # SQLite's batch copy of the parent table must not cascade to them
        assert conn.execute(select(func.count()).select_from(labels)).scalar_one() == ROWS
    assert migrations.plan(engine, v2, allow_destructive=True).is_empty


def test_type_change_refused_with_failing_rows_then_applied(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      code: {type: text}
      amount: {type: decimal, scale: 2}
      due: {type: text}
""")
    migrations.apply(engine, v1)
    rows = [{"code": str(i), "amount": Decimal(i), "due": f"2026-01-{i % 28 + 1:02d}"} for i in range(ROWS)]
    rows[41]["code"] = "abc"
    rows[99]["code"] = "12.5"
    rows[5000]["amount"] = Decimal("3.5")
    insert_rows(engine, v1, "ticket", rows)
    v2 = define("""
  ticket:
    fields:
      code: {type: integer}
      amount: {type: integer}
      due: {type: date}
""")
    plan = migrations.plan(engine, v2)
    change = {s.column: s for s in plan.steps if s.kind == "change_type"}
    assert set(change) == {"code", "amount", "due"}
    assert change["code"].detail["failed"] == 2
    assert [(f["id"], f["value"]) for f in change["code"].detail["failures"]] == [(42, "abc"), (100, "12.5")]
    assert change["amount"].detail["failed"] == 1
    assert change["due"].detail["failed"] == 0 and change["due"].detail["rows"] == ROWS
    assert len(plan.blocking) == 2
    assert "shop__ticket.code: 2 of 10000 values do not convert" in plan.blocking[0] + plan.blocking[1]
    text = plan.render()
    assert "id 42: 'abc' is not a whole number" in text
    assert "id 5001: 3.5" in text and "has a fraction" in text
    assert "refused: 2 problem(s)" in text

    with pytest.raises(migrations.MigrationRefused) as refused:
        migrations.apply(engine, v2)
    assert "id 42: 'abc'" in str(refused.value)
    main = v1.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        assert conn.execute(select(main.c.code).where(main.c.id == 42)).scalar_one() == "abc"

    with write(engine) as conn:  # fix the data, then it goes through
        conn.execute(update(main).where(main.c.id.in_([42, 100])).values(code=None))
        conn.execute(update(main).where(main.c.id == 5001).values(amount=Decimal(3)))
    migrations.apply(engine, v2)
    after = v2.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        values = conn.execute(select(after.c.id, after.c.code, after.c.amount, after.c.due).order_by(after.c.id)).all()
    for i, (id_, code, amount, due) in enumerate(values):
        assert id_ == i + 1
        assert code == (None if i in (41, 99) else i)
        assert amount == (3 if i == 5000 else i)
        assert due == dt.date(2026, 1, i % 28 + 1)
    assert migrations.plan(engine, v2).is_empty


def test_removed_state_with_records_needs_a_map(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
""" + WORKFLOW)
    migrations.apply(engine, v1)
    entered = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    insert_rows(engine, v1, "ticket", [{"summary": "a", "state": "new", "entered_doing_at": None}] * 3 + [{"summary": "b", "state": "doing", "entered_doing_at": entered}] * 5)
    v2 = define("""
  ticket:
    fields:
      summary: {type: text}
    workflow:
      initial: new
      states:
        new: {}
        done: {final: true}
      transitions:
        finish: {from: new, to: done}
""")
    plan = migrations.plan(engine, v2)
    assert len(plan.blocking) == 1
    assert "5 records of shop.ticket are in state 'doing'" in plan.blocking[0]
    assert "state_map" in plan.blocking[0]
    with pytest.raises(migrations.MigrationRefused):
        migrations.apply(engine, v2)

    v3 = define("""
  ticket:
    fields:
      summary: {type: text}
    workflow:
      initial: new
      state_map: {doing: done}
      states:
        new: {}
        done: {final: true}
      transitions:
        finish: {from: new, to: done}
""")
    plan = migrations.plan(engine, v3)
    assert not plan.blocking
    assert ("map_states", "shop__ticket", "doing", "done") in kinds(plan)
    assert "~ move 5 records of shop__ticket from state 'doing' to 'done'" in plan.render()
    migrations.apply(engine, v3)
    main = v1.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        states = conn.execute(select(main.c.state, func.count()).group_by(main.c.state).order_by(main.c.state)).all()
        times = set(conn.execute(select(main.c.entered_done_at).where(main.c.state == "done")).scalars())
    assert states == [("done", 5), ("new", 3)]
    assert times == {entered}  # the mapped records keep when they entered the old state
    assert migrations.plan(engine, v3).is_empty


def test_renamed_state_moves_records_and_its_entered_column(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
""" + WORKFLOW)
    migrations.apply(engine, v1)
    entered = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    insert_rows(engine, v1, "ticket", [{"summary": "x", "state": "done", "entered_done_at": entered}] * 4)
    v2 = define("""
  ticket:
    fields:
      summary: {type: text}
    workflow:
      initial: new
      states:
        new: {}
        doing: {}
        closed: {final: true, renamed_from: done}
      transitions:
        start: {from: new, to: doing}
        finish: {from: doing, to: closed}
""")
    plan = migrations.plan(engine, v2)
    assert not plan.blocking
    assert ("rename_column", "shop__ticket", "entered_done_at", "entered_closed_at") in kinds(plan)
    assert ("map_states", "shop__ticket", "done", "closed") in kinds(plan)
    migrations.apply(engine, v2)
    main = v2.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        rows = conn.execute(select(main.c.state, main.c.entered_closed_at)).all()
    assert rows == [("closed", entered)] * 4
    assert "entered_done_at" not in column_names(engine, "shop__ticket")
    assert migrations.plan(engine, v2).is_empty


def test_renamed_entity_keeps_its_tables_data_and_indexes(engine: Engine, define) -> None:
    v1 = define("""
  job:
    number: "J{seq:4}"
    fields:
      summary: {type: text}
      kind: {type: select, options: {a: A}}
      tags: {type: tags}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "job", [{"summary": f"s{i}", "number": f"J{i:04d}", "kind": "a"} for i in range(50)])
    with write(engine) as conn:
        conn.execute(insert(v1.schema.entity("shop", "job").children["tags"]), [{"record_id": 1, "position": 0, "value": "t"}])
    v2 = define("""
  task:
    renamed_from: job
    number: "J{seq:4}"
    fields:
      summary: {type: text}
      kind: {type: select, options: {a: A}}
      tags: {type: tags}
      extra: {type: date}
""")
    plan = migrations.plan(engine, v2)
    assert ("rename_table", "shop__job", None, "shop__task") in kinds(plan)
    assert ("rename_table", "shop__job__tags", None, "shop__task__tags") in kinds(plan)
    assert ("add_column", "shop__job", "extra", None) in kinds(plan)
    assert ("rename_index", "shop__task", "uq_shop__job_number", "uq_shop__task_number") in kinds(plan)
    assert not plan.blocking
    migrations.apply(engine, v2)
    assert {"shop__task", "shop__task__tags"} <= table_names(engine)
    assert not {"shop__job", "shop__job__tags"} & table_names(engine)
    assert {"uq_shop__task_number", "ix_shop__task_kind", "ix_shop__task_extra", "ix_shop__task_state"} <= index_names(engine, "shop__task")
    task = v2.schema.entity("shop", "task")
    with read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(task.main).where(task.main.c.kind == "a")).scalar_one() == 50
        assert conn.execute(select(task.children["tags"].c.value)).scalars().all() == ["t"]
    assert migrations.plan(engine, v2).is_empty


def test_removed_entity_is_kept_until_destructive(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
  device:
    fields:
      code: {type: text}
      photos: {type: image, multiple: true}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "device", [{"code": "d1"}])
    v2 = define("""
  ticket:
    fields:
      summary: {type: text}
""")
    plan = migrations.plan(engine, v2)
    assert plan.is_empty
    assert {("keep_table", "shop__device", None, None), ("keep_table", "shop__device__photos", None, None)} <= set(kinds(plan))
    assert "= keep table shop__device" in plan.render()
    migrations.apply(engine, v2)
    assert "shop__device" in table_names(engine)

    destructive = migrations.plan(engine, v2, allow_destructive=True)
    assert [k for k in kinds(destructive) if k[0] == "drop_table"] == [
        ("drop_table", "shop__device__photos", None, None), ("drop_table", "shop__device", None, None)
    ]  # fmt: skip
    migrations.apply(engine, v2, allow_destructive=True)
    assert not {"shop__device", "shop__device__photos"} & table_names(engine)


def test_index_added_for_a_new_select_field(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
""")
    migrations.apply(engine, v1)
    v2 = define("""
  ticket:
    fields:
      summary: {type: text, index: true}
      category: {type: select, options: {a: A, b: B}}
""")
    plan = migrations.plan(engine, v2)
    assert set(kinds(plan)) == {
        ("add_column", "shop__ticket", "category", None),
        ("add_index", "shop__ticket", None, "ix_shop__ticket_category"),
        ("add_index", "shop__ticket", None, "ix_shop__ticket_summary"),
    }
    assert migrations.pending(engine, v2) is not None
    migrations.apply(engine, v2)
    assert {"ix_shop__ticket_category", "ix_shop__ticket_summary"} <= index_names(engine, "shop__ticket")
    assert migrations.pending(engine, v2) is None


def test_an_index_added_to_a_measured_sqlite_table_is_measured_too(engine: Engine, define) -> None:
    """SQLite prefers an index without statistics to the measured ones: a new index gets its
    statistics at once, and the planner keeps the right index for the list page's filter."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner reads the columns' statistics, not the index's")
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
      category: {type: select, options: {a: A, b: B}}
""" + WORKFLOW)
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "ticket", [{"summary": f"s{i}", "category": "ab"[i % 2], "state": "new"} for i in range(2000)])
    with write(engine) as conn:
        conn.exec_driver_sql("ANALYZE")
    migrations.apply(engine, define("""
  ticket:
    fields:
      summary: {type: text}
      category: {type: select, options: {a: A, b: B}}
      urgency: {type: select, options: {high: High, normal: Normal}}
""" + WORKFLOW))
    with read(engine) as conn:
        measured = set(conn.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE tbl = 'shop__ticket'").scalars())
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM shop__ticket WHERE state = 'new' AND category = 'a' ORDER BY id DESC LIMIT 51"
        ))  # fmt: skip
    assert "ix_shop__ticket_urgency" in measured
    assert "TEMP B-TREE" not in plan, plan


def test_unique_on_duplicate_values_is_refused(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      code: {type: text}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "ticket", [{"code": "A"}, {"code": "A"}, {"code": "B"}])
    v2 = define("""
  ticket:
    fields:
      code: {type: text, unique: true}
""")
    plan = migrations.plan(engine, v2)
    assert plan.blocking == ["shop__ticket.code cannot become unique: duplicate values 'A' (2 rows)"]


def test_failure_mid_apply_leaves_the_database_unchanged(engine: Engine, define, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = define("""
  ticket:
    fields:
      summary: {type: text}
      note: {type: text}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "ticket", [{"summary": f"s{i}", "note": "n"} for i in range(100)])
    v2 = define("""
  ticket:
    fields:
      title: {type: text, renamed_from: summary}
      amount: {type: integer}
      category: {type: select, options: {a: A}}
  device:
    fields:
      code: {type: text}
""")
    before_columns = column_names(engine, "shop__ticket")
    before_tables = table_names(engine)
    ran: list[str] = []

    def broken(op, conn, step, targets) -> None:  # noqa: ANN001 - the runner signature
        raise RuntimeError("disk full")

    original = migrations_ops.RUNNERS["add_column"]

    def counting(op, conn, step, targets) -> None:  # noqa: ANN001
        original(op, conn, step, targets)
        ran.append(step.column)

    monkeypatch.setitem(migrations_ops.RUNNERS, "add_column", counting)
    monkeypatch.setitem(migrations_ops.RUNNERS, "rename_column", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        migrations.apply(engine, v2)
    assert ran == ["amount", "category"]  # the failure came after real changes
    assert column_names(engine, "shop__ticket") == before_columns
    assert table_names(engine) == before_tables
    main = v1.schema.entity("shop", "ticket").main
    with read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(main).where(main.c.summary.is_not(None))).scalar_one() == 100
        migrations_table = v1.schema.system["kiln_migrations"]
        assert conn.execute(select(func.count()).select_from(migrations_table)).scalar_one() == 1
    monkeypatch.undo()
    migrations.apply(engine, v2)  # and the same migration goes through afterwards
    assert {"title", "amount", "category"} <= column_names(engine, "shop__ticket")
    assert "shop__device" in table_names(engine)


def test_plan_as_json(engine: Engine, define) -> None:
    compiled = define("""
  ticket:
    fields:
      summary: {type: text}
""")
    data = migrations.plan(engine, compiled).as_json()
    assert data["empty"] is False and data["blocking"] == []
    step = next(s for s in data["steps"] if s["table"] == "shop__ticket")
    assert step["kind"] == "create_table" and step["app"] == "shop" and step["text"].startswith("+ create table")


def test_type_changes_keep_indexes_unique_constraints_and_child_tables(engine: Engine, define) -> None:
    v1 = define("""
  ticket:
    fields:
      code: {type: text, unique: true}
      line: {type: text}
      cost: {type: decimal, scale: 2}
      labels: {type: tags}
""")
    migrations.apply(engine, v1)
    insert_rows(engine, v1, "ticket", [{"code": str(100 + i), "line": "a" if i % 2 else "b", "cost": Decimal("1.25") * i} for i in range(200)])
    labels = v1.schema.entity("shop", "ticket").children["labels"]
    with write(engine) as conn:
        conn.execute(insert(labels), [{"record_id": i + 1, "position": p, "value": f"l{p}"} for i in range(200) for p in range(2)])
    v2 = define("""
  ticket:
    fields:
      code: {type: integer, unique: true}
      line: {type: select, options: {a: A, b: B}}
      cost: {type: decimal, scale: 4}
      labels: {type: multiselect, options: {l0: L0, l1: L1}}
""")
    plan = migrations.plan(engine, v2)
    assert not plan.blocking
    assert {(s.table, s.column) for s in plan.steps if s.kind == "change_type"} == {
        ("shop__ticket", "code"), ("shop__ticket", "line"), ("shop__ticket", "cost"), ("shop__ticket__labels", "value")
    }  # fmt: skip
    assert ("add_index", "shop__ticket", None, "ix_shop__ticket_line") in kinds(plan)
    migrations.apply(engine, v2)
    assert {"uq_shop__ticket_code", "ix_shop__ticket_line"} <= index_names(engine, "shop__ticket")
    assert "ix_shop__ticket__labels_value" in index_names(engine, "shop__ticket__labels")
    t = v2.schema.entity("shop", "ticket")
    with read(engine) as conn:
        rows = conn.execute(select(t.main.c.code, t.main.c.line, t.main.c.cost).order_by(t.main.c.id)).all()
        values = conn.execute(select(t.children["labels"].c.value).order_by(t.children["labels"].c.record_id, t.children["labels"].c.position)).scalars().all()
    assert rows == [(100 + i, "a" if i % 2 else "b", Decimal("1.25") * i) for i in range(200)]
    assert values == ["l0", "l1"] * 200
    assert migrations.plan(engine, v2).is_empty
    with pytest.raises(Exception, match="(?i)unique"):  # the unique constraint came back
        insert_rows(engine, v2, "ticket", [{"code": 100}])


def test_removed_app_keeps_its_tables_until_destructive(engine: Engine, write_definitions) -> None:
    folder = write_definitions({
        "shop/app.yaml": "app: shop\nentities:\n  ticket: {fields: {summary: {type: text}}}\n",
        "crm/app.yaml": "app: crm\nentities:\n  lead: {fields: {name: {type: text}, tags: {type: tags}}}\n",
    })  # fmt: skip
    migrations.apply(engine, compile_definitions(folder), now=NOW)
    shutil.rmtree(folder / "crm")
    compiled = compile_definitions(folder)
    plan = migrations.plan(engine, compiled)
    assert plan.is_empty
    assert {(s.kind, s.table) for s in plan.steps} == {("keep_table", "crm__lead"), ("keep_table", "crm__lead__tags")}
    migrations.apply(engine, compiled, allow_destructive=True, now=NOW)
    assert not {"crm__lead", "crm__lead__tags"} & table_names(engine)
    recorded = compiled.schema.system["kiln_migrations"]
    with read(engine) as conn:
        rows = conn.execute(select(recorded.c.app, recorded.c.definition_hash).order_by(recorded.c.id)).all()
    assert [app for app, _ in rows] == ["crm", "shop", "crm"]
    assert rows[-1][1] == ""  # the app's tables went away with its definition
    assert migrations.plan(engine, compiled, allow_destructive=True).is_empty
