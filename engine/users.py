"""Looking users up between usernames and ids, for records and their JSON form.

Usernames never change and users are deactivated rather than deleted, so a found pair is cached
for the life of the process; a name not found is asked again next time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Table, func, select


class UserDirectory:
    def __init__(self, users: Table, roles: Table) -> None:
        self.users = users
        self.roles = roles
        self._names: dict[int, str] = {}
        self._ids: dict[str, int] = {}

    def _remember(self, rows: Iterable[Any]) -> None:
        for user_id, username in rows:
            self._names[user_id] = username
            self._ids[username] = user_id

    def usernames(self, conn: Connection, ids: Iterable[int]) -> dict[int, str]:
        wanted = {i for i in ids if i is not None}
        missing = [i for i in wanted if i not in self._names]
        if missing:
            self._remember(conn.execute(select(self.users.c.id, self.users.c.username).where(self.users.c.id.in_(missing))))
        return {i: self._names[i] for i in wanted if i in self._names}

    def ids(self, conn: Connection, names: Iterable[str]) -> dict[str, int]:
        wanted = set(names)
        missing = [n for n in wanted if n not in self._ids]
        if missing:
            self._remember(
                conn.execute(select(self.users.c.id, self.users.c.username).where(self.users.c.username.in_(missing)))
            )
        return {n: self._ids[n] for n in wanted if n in self._ids}

    def display_names(self, conn: Connection, usernames: Iterable[str]) -> dict[str, str]:
        """How pages name users: their display name (陈刚), else their username; read every time,
        as an administrator may change it."""
        wanted = [n for n in set(usernames) if n]
        if not wanted:
            return {}
        query = select(self.users.c.username, self.users.c.display_name).where(self.users.c.username.in_(wanted))
        return {username: display or username for username, display in conn.execute(query)}

    def locales(self, conn: Connection, ids: Iterable[int]) -> dict[int, str | None]:
        """Each user's own locale (None: not chosen); read every time, as users change it."""
        wanted = [i for i in set(ids) if i is not None]
        if not wanted:
            return {}
        query = select(self.users.c.id, self.users.c.locale).where(self.users.c.id.in_(wanted))
        return {user_id: locale for user_id, locale in conn.execute(query)}

    def all_have_role(self, conn: Connection, user_ids: list[int], app: str, role: str) -> bool:
        wanted = set(user_ids)
        found = conn.execute(
            select(func.count()).select_from(self.roles).where(
                self.roles.c.user_id.in_(wanted), self.roles.c.app == app, self.roles.c.role == role
            )
        ).scalar_one()
        return int(found) == len(wanted)
