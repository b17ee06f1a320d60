"""Saved views: a user's named list queries (filters, search, sort) per app and entity.

A view is the list's query string without its paging part (``cursor``/``before``), so opening
one is just following a URL; the list page owns what the parameters mean.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import Connection, Engine, Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.db import Prepared, read, write
from engine.errors import ValidationFailed

PAGING_PARAMS = frozenset({"cursor", "before"})
MAX_NAME = 100
MAX_VIEWS = 50  # per user and entity: a menu, not a store


@dataclass(frozen=True)
class SavedView:
    id: int
    name: str
    query: str


def clean_query(query: str) -> str:
    """The query string a view keeps: every parameter but the paging ones, in order."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=False) if k not in PAGING_PARAMS]
    return urlencode(pairs)


@functools.cache
def _listing(t: Table) -> Prepared:
    """A user's views of an entity, by name: read by every list page, so compiled once."""
    where = (t.c.user_id == bindparam("user_id"), t.c.app == bindparam("app"), t.c.entity == bindparam("entity"))
    return Prepared(select(t.c.id, t.c.name, t.c.query).where(*where).order_by(t.c.name))


class SavedViews:
    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table

    def list(self, user_id: int, app: str, entity: str, conn: Connection | None = None) -> list[SavedView]:
        """The user's views of an entity, by name (on ``conn`` when the caller has one open)."""
        if conn is None:
            with read(self.engine) as own:
                return self.list(user_id, app, entity, own)
        rows = _listing(self.table).execute(conn, {"user_id": user_id, "app": app, "entity": entity}).rows
        return [SavedView(*r) for r in rows]

    def save(self, user_id: int, app: str, entity: str, name: str, query: str, now: dt.datetime | None = None) -> SavedView:
        """Save (or replace, by name) the view ``name``."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise ValidationFailed("a view needs a name of 1 to 100 characters", {"name": "required"})
        query = clean_query(query)
        t = self.table
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with write(self.engine) as conn:
            count = len(conn.execute(select(t.c.id).where(t.c.user_id == user_id, t.c.app == app, t.c.entity == entity)).all())
            exists = conn.execute(
                select(t.c.id).where(t.c.user_id == user_id, t.c.app == app, t.c.entity == entity, t.c.name == name)
            ).scalar()
            if exists is None and count >= MAX_VIEWS:
                raise ValidationFailed(f"at most {MAX_VIEWS} saved views per list; delete one first", {"name": "too many"})
            if exists is not None:
                conn.execute(update(t).where(t.c.id == exists).values(query=query))
                return SavedView(exists, name, query)
            stmt = dialect.insert(t).values(
                user_id=user_id, app=app, entity=entity, name=name, query=query, created_at=now or dt.datetime.now(dt.UTC)
            )
            view_id = conn.execute(stmt.returning(t.c.id)).scalar_one()
            return SavedView(view_id, name, query)

    def delete(self, user_id: int, view_id: int) -> bool:
        t = self.table
        with write(self.engine) as conn:
            return conn.execute(delete(t).where(t.c.id == view_id, t.c.user_id == user_id)).rowcount == 1
