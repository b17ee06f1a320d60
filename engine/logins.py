"""The limit on failed logins: a lock-out per username and per client address.

Each failure is a row of ``kiln_login_failures`` keyed ``user:<name>`` and ``ip:<address>``;
a key is locked while it has its limit of failures within the window. The rows live in the
database, not in process memory, so a lock-out holds in every web process and on every host of a
PostgreSQL deployment, and survives a restart.

The per-address limit is higher than the per-username one: an office behind one NAT address
shares it, and one person's typos should not lock out their colleagues. A successful login
clears its username's failures (not its address's: one valid account must not reset an
attacker's count for guessing others).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Engine, MetaData, Table, delete, func, insert, select

from engine.db import read, write
from engine.tables import system_tables


@dataclass(frozen=True)
class Limits:
    per_user: int = 5
    per_address: int = 20
    window: dt.timedelta = dt.timedelta(minutes=15)


LIMITS = Limits()


@cache
def _failures() -> Table:
    return system_tables(MetaData())["kiln_login_failures"]


def user_key(username: str) -> str:
    # Lower-cased so "Admin" and "admin" share one count; cut to the column's size.
    return "user:" + username.strip().lower()[:150]


def address_key(address: str | None) -> str:
    return "ip:" + (address or "unknown")[:100]


def keys(username: str, address: str | None) -> dict[str, str]:
    return {"user": user_key(username), "address": address_key(address)}


def locked(engine: Engine, username: str, address: str | None, now: dt.datetime | None = None,
           limits: Limits = LIMITS) -> bool:  # fmt: skip
    """True while the username or the address has reached its limit within the window."""
    now = now or dt.datetime.now(dt.UTC)
    k = keys(username, address)
    table = _failures()
    with read(engine) as conn:
        counts = dict(
            conn.execute(
                select(table.c.key, func.count())
                .where(table.c.key.in_(k.values()), table.c.at > now - limits.window)
                .group_by(table.c.key)
            ).all()
        )
    return counts.get(k["user"], 0) >= limits.per_user or counts.get(k["address"], 0) >= limits.per_address


def record_failure(engine: Engine, username: str, address: str | None, now: dt.datetime | None = None,
                   limits: Limits = LIMITS) -> None:  # fmt: skip
    """Count one failed login against the username and the address; forget expired failures."""
    now = now or dt.datetime.now(dt.UTC)
    table = _failures()
    with write(engine) as conn:
        conn.execute(delete(table).where(table.c.at <= now - limits.window))
        conn.execute(insert(table), [{"key": key, "at": now} for key in keys(username, address).values()])


def clear(engine: Engine, names: Iterable[str]) -> None:
    """Forget the failures of these usernames (after a successful login or an admin's reset)."""
    table = _failures()
    with write(engine) as conn:
        conn.execute(delete(table).where(table.c.key.in_([user_key(n) for n in names])))
