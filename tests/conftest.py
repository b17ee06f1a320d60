"""Shared fixtures: every database test runs on SQLite and, with KILN_TEST_PG, on PostgreSQL.

``KILN_TEST_PG`` is a SQLAlchemy URL of a PostgreSQL database (CI: the local server's ``test``
database). Each PostgreSQL test gets a schema of its own (through ``search_path``), dropped after
the test, so parallel workers never see each other's tables.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PG_URL = os.environ.get("KILN_TEST_PG", "")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kiln.db"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def write_definitions(tmp_path: Path):
    """Write {relative path: YAML text} under a fresh definitions folder; returns the folder."""

    def write(files: dict[str, str], folder: Path | None = None) -> Path:
        root = folder or tmp_path / "definitions"
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
        return root

    return write


@pytest.fixture
def open_instance(tmp_path: Path):
    """Open an Instance on a definitions folder and a database URL, with its tables migrated;
    closed after the test."""
    from engine import migrations
    from engine.instance import Instance

    opened = []

    def open_(definitions: Path, url: str):
        instance = Instance.open(definitions, url, env={}, files_dir=tmp_path / "files")
        migrations.apply(instance.engine, instance.compiled)
        opened.append(instance)
        return instance

    yield open_
    for instance in opened:
        instance.close()


def service_clock(monkeypatch: pytest.MonkeyPatch, start: dt.datetime) -> list[dt.datetime]:
    """Fix the records service's and the workflow's clock at ``start``; set ``clock[0]`` to move it."""
    now = [start]
    monkeypatch.setattr("engine.records.utcnow", lambda: now[0])
    monkeypatch.setattr("engine.workflow._utcnow", lambda: now[0])
    return now


def add_user(instance, username: str, app: str, roles: list[str] = (), teams: list[str] = (), admin: bool = False) -> int:
    """A user row for tests that do not go through engine.accounts."""
    import datetime as dt

    from sqlalchemy import insert, select

    system = instance.schema.system
    with instance.engine.begin() as conn:
        user_id = conn.execute(
            insert(system["kiln_users"]).values(
                username=username, display_name=username, is_admin=admin, is_active=True, created_at=dt.datetime.now(dt.UTC)
            ).returning(system["kiln_users"].c.id)
        ).scalar_one()
        for role in roles:
            conn.execute(insert(system["kiln_user_roles"]).values(user_id=user_id, app=app, role=role))
        for team in teams:
            team_id = conn.execute(
                select(system["kiln_teams"].c.id).where(system["kiln_teams"].c.app == app, system["kiln_teams"].c.name == team)
            ).scalar()
            if team_id is None:
                team_id = conn.execute(
                    insert(system["kiln_teams"]).values(app=app, name=team, label=team).returning(system["kiln_teams"].c.id)
                ).scalar_one()
            conn.execute(insert(system["kiln_team_members"]).values(team_id=team_id, user_id=user_id))
    return user_id


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests (tests/browser_support.py skips them without it)."""
    from tests.browser_support import ARGS, CHROMIUM, playwright_api

    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()
