"""Fresh benchmark databases: a SQLite file, or a PostgreSQL schema dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_url(options: dict) -> str | None:
    url = options.get("pg") or os.environ.get("KILN_BENCH_PG") or os.environ.get("KILN_TEST_PG") or DEFAULT_PG
    if url in ("", "none", "off"):
        return None
    try:
        engine = create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except OperationalError:
        return None
    return url


@contextmanager
def fresh_database(backend: str, folder: Path, options: dict) -> Iterator[str | None]:
    if backend == "sqlite":
        yield f"sqlite:///{folder}/bench-{uuid.uuid4().hex[:8]}.db"
        return
    url = pg_url(options)
    if url is None:
        yield None
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
