"""`run.py migrate [--plan]` as a user runs it: a subprocess on a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from engine.db import connect

ROOT = Path(__file__).resolve().parent.parent

V1 = """
app: shop
entities:
  ticket:
    fields:
      summary: {type: text}
      note: {type: text}
    workflow:
      initial: new
      states: {new: {}, done: {final: true}}
      transitions: {finish: {from: new, to: done}}
"""

V2 = """
app: shop
entities:
  ticket:
    fields:
      title: {type: text, renamed_from: summary}
      category: {type: select, options: {a: A}}
    workflow:
      initial: new
      states: {new: {}, done: {final: true}}
      transitions: {finish: {from: new, to: done}}
"""


def migrate(url: str, folder: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "run.py", "migrate", *options, "--db", url, "--definitions", str(folder)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def tables(url: str) -> set[str]:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_plan_prints_and_changes_nothing_then_migrate_applies(db_url: str, write_definitions) -> None:
    folder = write_definitions({"shop/app.yaml": V1})
    shown = migrate(db_url, folder, "--plan")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("migration plan:\n  app shop:\n")
    assert "+ create table shop__ticket " in shown.stdout
    assert "+ create table kiln_migrations " in shown.stdout
    assert tables(db_url) == set()

    applied = migrate(db_url, folder)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("applied:\n")
    assert "shop__ticket" in tables(db_url)
    again = migrate(db_url, folder, "--plan")
    assert (again.returncode, again.stdout) == (0, "nothing to change\n")


def test_plan_of_a_change_names_renames_additions_and_kept_columns(db_url: str, write_definitions) -> None:
    folder = write_definitions({"shop/app.yaml": V1})
    assert migrate(db_url, folder).returncode == 0
    write_definitions({"shop/app.yaml": V2})
    shown = migrate(db_url, folder, "--plan")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "migration plan:",
        "  app shop:",
        "    + add column shop__ticket.category VARCHAR(100)",
        "    = keep column shop__ticket.note: not in the definition; dropped only with --allow-destructive",
        "    ~ rename column shop__ticket.summary -> title (data kept)",
        "    + add index ix_shop__ticket_category on shop__ticket (category, id)",
    ]
    as_json = json.loads(migrate(db_url, folder, "--plan", "--json").stdout)
    assert [s["kind"] for s in as_json["steps"]] == ["add_column", "keep_column", "rename_column", "add_index"]
    destructive = migrate(db_url, folder, "--plan", "--allow-destructive")
    assert "    - drop column shop__ticket.note (0 values)" in destructive.stdout.splitlines()


def test_refused_migration_exits_1_with_the_reasons(db_url: str, write_definitions) -> None:
    folder = write_definitions({"shop/app.yaml": V1})
    assert migrate(db_url, folder).returncode == 0
    engine = connect(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO shop__ticket (state, created_at, updated_at, version) VALUES ('done', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)"
            )
    finally:
        engine.dispose()
    write_definitions({"shop/app.yaml": V1.replace("done: {final: true}", "closed: {final: true}").replace("to: done", "to: closed")})
    shown = migrate(db_url, folder, "--plan")
    assert shown.returncode == 0
    assert "1 records of shop.ticket are in state 'done'" in shown.stdout
    refused = migrate(db_url, folder)
    assert refused.returncode == 1
    assert "refused: 1 problem(s)" in refused.stderr
    assert "state_map: {done: NEW_STATE}" in refused.stderr
    assert "entered_closed_at" not in refused.stdout


def test_definition_errors_print_file_line_col(db_url: str, write_definitions) -> None:
    folder = write_definitions({"shop/app.yaml": "app: shop\nentities:\n  ticket: {fields: {a: [}\n"})
    result = migrate(db_url, folder, "--plan")
    assert result.returncode == 1
    assert result.stderr.startswith("shop/app.yaml:3:")
