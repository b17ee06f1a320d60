"""Who is asking: a request's user and their roles, read in one go.

Every page and API call starts here, so this is one connection and two prepared statements (the
user, by session id or by API token, then the user's roles in every app), run on the driver's
cursor: SQLAlchemy's per-statement bookkeeping had made identifying the caller cost as much as
creating the record it asked for. Nothing is cached across requests, so a deactivated user, a
removed role or a revoked token takes effect on the very next request.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Engine, bindparam, func, or_, select, update

from engine.accounts import LAST_USED_EVERY, TOKEN_PREFIX, User, tables, token_hash
from engine.db import Prepared, read, write
from engine.notifications import UNREAD_CAP


@dataclass(frozen=True)
class Identity:
    user: User
    roles: dict[str, frozenset[str]]  # app -> the user's roles there
    unread: int | None = None  # unread in-app notifications, capped (sessions only: the header shows it)


def by_session(engine: Engine, user_id: int) -> Identity | None:
    """The active user of a session, with their roles and unread count (every page's header
    shows it); None if gone or deactivated."""
    statements = _statements()
    with read(engine) as conn:
        rows = statements["user"].execute(conn, {"id": user_id}).rows
        if not rows or not rows[0][4]:
            return None
        roles = _roles(statements["roles"].execute(conn, {"user_id": user_id}).rows)
        unread = statements["unread"].execute(conn, {"user_id": user_id, "cap": UNREAD_CAP + 1}).scalar()
        return Identity(_user(rows[0]), roles, int(unread or 0))


def by_token(engine: Engine, token: str, now: dt.datetime | None = None) -> Identity | None:
    """The active user an API token belongs to, with their roles; None for an unknown token. The
    token's last use is written at most every few minutes (a write per call would queue every API
    read behind the writers)."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    now = now or dt.datetime.now(dt.UTC)
    statements = _statements()
    with read(engine) as conn:
        rows = statements["token"].execute(conn, {"hash": token_hash(token), "stale_before": now - LAST_USED_EVERY}).rows
        if not rows or not rows[0][4]:
            return None
        row = rows[0]
        identity = Identity(_user(row), _roles(statements["roles"].execute(conn, {"user_id": row[0]}).rows))
    token_id, stale = row[-2], row[-1]
    if stale:
        tokens = tables()["kiln_api_tokens"]
        with write(engine) as conn:
            conn.execute(update(tokens).where(tokens.c.id == token_id).values(last_used_at=now))
    return identity


def _user(row: tuple) -> User:
    return User(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5], row[6], row[7], row[8])


def _roles(rows: list[tuple]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for app, role in rows:
        found.setdefault(app, set()).add(role)
    return {app: frozenset(names) for app, names in found.items()}


@cache
def _statements() -> dict[str, Prepared]:
    t = tables()
    users, tokens, roles, notes = t["kiln_users"], t["kiln_api_tokens"], t["kiln_user_roles"], t["kiln_notifications"]
    user_columns = [users.c[name] for name in ("id", "username", "display_name", "is_admin", "is_active", "manager_id", "locale", "email", "phone")]
    stale = or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < bindparam("stale_before", type_=tokens.c.last_used_at.type))
    return {
        "user": Prepared(select(*user_columns).where(users.c.id == bindparam("id"))),
        "token": Prepared(
            select(*user_columns, tokens.c.id, stale).join(tokens, tokens.c.user_id == users.c.id).where(tokens.c.token_hash == bindparam("hash"))
        ),
        "roles": Prepared(select(roles.c.app, roles.c.role).where(roles.c.user_id == bindparam("user_id"))),
        # As engine.notifications.unread_count: at most cap rows of the (user_id, read_at, id) index.
        "unread": Prepared(
            select(func.count()).select_from(
                select(notes.c.id).where(notes.c.user_id == bindparam("user_id"), notes.c.read_at.is_(None)).limit(bindparam("cap")).subquery()
            )
        ),
    }
