"""Shared pieces of the rules tests (no tests here): the lab app of tests/fixtures/rules_lab.yaml
with its users, and short ways to create, change and read its records through the engine."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from engine.actors import Actor
from engine.instance import Instance
from tests.conftest import add_user

FIXTURES = Path(__file__).parent / "fixtures"
NOW = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)  # a Wednesday, 10:00 in Shanghai

# name: (roles, teams)
USERS = {
    "sam": (["staff"], []), "boss": (["boss"], []), "zed": (["staff"], []), "lee": (["staff"], ["leads"]),
    "t1": (["tech"], ["crew"]), "t2": (["tech"], ["crew"]), "t3": (["tech"], ["crew"]), "n1": (["staff"], ["crew"]),
}  # fmt: skip


@dataclass
class Lab:
    instance: Instance
    users: dict[str, int]

    @property
    def records(self) -> Any:
        return self.instance.records("lab")

    def actor(self, name: str = "sam") -> Actor:
        roles, teams = USERS[name]
        return Actor(self.users[name], name, roles=frozenset(roles), teams=frozenset(teams))

    def create(self, entity: str, now: dt.datetime = NOW, who: str = "sam", **values: Any) -> dict[str, Any]:
        return self.records.create(entity, values, self.actor(who), now)

    def update(self, entity: str, record: dict[str, Any], now: dt.datetime = NOW, **values: Any) -> dict[str, Any]:
        return self.records.update(entity, record["id"], values, record["version"], self.actor(), now)

    def get(self, entity: str, record_id: int) -> dict[str, Any]:
        return self.records.get(entity, record_id, self.actor())

    def history(self, entity: str, record_id: int) -> list[dict[str, Any]]:
        return self.records.history(entity, record_id, self.actor())

    def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        t = self.instance.schema.table(table)
        query = select(t).where(*(t.c[k] == v for k, v in where.items()))
        with self.instance.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(*t.primary_key.columns)).mappings()]

    def count(self, table: str) -> int:
        t = self.instance.schema.table(table)
        with self.instance.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())

    def set_manager(self, user: str, manager: str) -> None:
        users = self.instance.schema.system["kiln_users"]
        with self.instance.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == self.users[user]).values(manager_id=self.users[manager]))

    def set_lead(self, team: str, lead: str) -> None:
        teams = self.instance.schema.system["kiln_teams"]
        with self.instance.engine.begin() as conn:
            conn.execute(update(teams).where(teams.c.app == "lab", teams.c.name == team).values(lead_id=self.users[lead]))


def open_lab(db_url: str, write_definitions: Any, open_instance: Any) -> Lab:
    text = (FIXTURES / "rules_lab.yaml").read_text(encoding="utf-8")
    instance = open_instance(write_definitions({"lab/app.yaml": text}), db_url)
    users = {name: add_user(instance, name, "lab", roles, teams) for name, (roles, teams) in USERS.items()}
    return Lab(instance, users)
