"""Instance settings kept in the database (``kiln_settings``), shared by every process.

The session-signing secret lives here rather than in a file, so several web processes (and
several hosts on one PostgreSQL) sign and accept the same cookies, and it survives restarts.
``KILN_SECRET`` in the environment overrides it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from sqlalchemy import Connection, Engine, MetaData, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.db import write
from engine.tables import system_tables

_settings = system_tables(MetaData())["kiln_settings"]


def get(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(_settings.c.value).where(_settings.c.key == key)).scalar()


def get_or_create(engine: Engine, key: str, make: Callable[[], str]) -> str:
    """The value of ``key``; the first process to ask stores ``make()``, and all later ones read it."""
    value = get(engine, key)
    if value is not None:
        return value
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with write(engine) as conn:
        conn.execute(dialect.insert(_settings).values(key=key, value=make()).on_conflict_do_nothing())
        return conn.execute(select(_settings.c.value).where(_settings.c.key == key)).scalar_one()


def session_secret(engine: Engine) -> str:
    return os.environ.get("KILN_SECRET") or get_or_create(engine, "session_secret", lambda: secrets.token_urlsafe(48))


def session_secret_in(conn: Connection) -> str:
    """The same secret, read (or made) on the caller's connection, in its transaction: a
    transaction holding SQLite's write lock cannot wait for another connection to make it."""
    found = os.environ.get("KILN_SECRET") or conn.execute(
        select(_settings.c.value).where(_settings.c.key == "session_secret")
    ).scalar()
    if found:
        return found
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    made = secrets.token_urlsafe(48)
    conn.execute(dialect.insert(_settings).values(key="session_secret", value=made).on_conflict_do_nothing())
    return conn.execute(select(_settings.c.value).where(_settings.c.key == "session_secret")).scalar_one()
