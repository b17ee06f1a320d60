"""Shared pieces of the workflow and approval tests (no tests here): a service-ticket app with the
workflow of SPEC.md section 3, its users, and a small client for the transition endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from apps.web import create_app
from engine import accounts
from engine.instance import Instance
from tests.conftest import add_user

APP = """
app: svc
timezone: Asia/Shanghai
roles:
  reporter: {label: 报修人}
  dispatcher: {label: 值班组长}
  technician: {label: 维修技师}
  supervisor: {label: 主管}
teams:
  board: {label: 审批委员会}
entities:
  ticket:
    label: 服务工单
    number: "GD{created:%Y%m%d}-{seq:4}"
    fields:
      summary: {type: text, required: true}
      urgency: {type: select, required: true, default: normal, options: {high: 紧急, normal: 一般}}
      assignee: {type: user, role: technician}
      est_cost: {type: decimal, scale: 2}
      report: {type: text}
    workflow:
      initial: pending
      states:
        pending: {label: 待受理}
        dispatched: {label: 已派单}
        in_progress: {label: 处理中}
        awaiting_check: {label: 待验收}
        closed: {label: 已关闭, final: true}
      transitions:
        dispatch: {from: pending, to: dispatched, roles: [dispatcher], requires: [assignee]}
        send_back: {from: dispatched, to: pending, roles: [dispatcher, technician], comment: required}
        accept: {from: dispatched, to: in_progress, roles: [technician], only: assignee}
        finish: {from: in_progress, to: awaiting_check, requires: [report], when: 'not contains(report, "TODO")'}
        confirm: {from: awaiting_check, to: closed, roles: [reporter], only: created_by}
        reopen: {from: [awaiting_check, closed], to: in_progress, roles: [reporter, dispatcher], comment: required}
      approvals:
        director_approval:
          when: est_cost > 5000
          before: accept
          approvers: {role: supervisor}
          mode: any
          on_reject: {transition: send_back}
        board_countersign:
          when: est_cost > 20000
          before: accept
          approvers: {team: board}
          mode: all
          on_reject: {transition: reopen}
      cc:
        - when: urgency == "high"
          to: {role: supervisor}
    permissions:
      reporter: {create: true, read: own, update: {own: true, states: [pending]}}
      dispatcher: {create: true, read: all, update: all}
      technician: {read: assigned, update: {assigned: true, states: [dispatched, in_progress]}, hide: [est_cost]}
      supervisor: {read: own}
"""

# (roles, teams) per user: max is a dispatcher who is also a technician (readable, right role, not
# the assignee); bob and bea are the board, with no role at all.
USERS: dict[str, tuple[list[str], list[str]]] = {
    "rita": (["reporter"], []), "ron": (["reporter"], []), "dan": (["dispatcher"], []), "tom": (["technician"], []),
    "tim": (["technician"], []), "max": (["dispatcher", "technician"], []), "sue": (["supervisor"], []),
    "sam": (["supervisor"], []), "bob": ([], ["board"]), "bea": ([], ["board"]),
}  # fmt: skip
TICKETS = "svc__ticket"


@dataclass
class Flow:
    instance: Instance
    app: Any
    users: dict[str, int]
    tokens: dict[str, str]

    def auth(self, name: str, version: int | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.tokens[name]}"}
        if version is not None:
            headers["If-Match"] = str(version)
        return headers

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")

    def records(self) -> Any:
        return self.instance.records("svc")

    def row(self, record_id: int) -> dict[str, Any]:
        t = self.instance.schema.table(TICKETS)
        with self.instance.engine.connect() as conn:
            return dict(conn.execute(select(t).where(t.c.id == record_id)).mappings().one())

    def count(self, table: str, **where: Any) -> int:
        t = self.instance.schema.table(table)
        with self.instance.engine.connect() as conn:
            query = select(func.count()).select_from(t).where(*(t.c[k] == v for k, v in where.items()))
            return int(conn.execute(query).scalar_one())

    def history(self, record_id: int) -> list[dict[str, Any]]:
        from engine.actors import SYSTEM

        return self.records().history("ticket", record_id, SYSTEM)

    async def create(self, c: httpx.AsyncClient, who: str = "rita", **values: Any) -> dict[str, Any]:
        r = await c.post("/api/v1/svc/ticket", json={"summary": "水管漏水", **values}, headers=self.auth(who))
        assert r.status_code == 201, r.text
        return r.json()

    async def move(self, c: httpx.AsyncClient, who: str, record: dict[str, Any], name: str, **body: Any) -> httpx.Response:
        """POST a transition with the record's version as If-Match."""
        url = f"/api/v1/svc/ticket/{record['id']}/transitions/{name}"
        return await c.post(url, json=body, headers=self.auth(who, record["version"]))

    async def step(self, c: httpx.AsyncClient, who: str, record: dict[str, Any], name: str, **body: Any) -> dict[str, Any]:
        """A transition that must succeed; the record after it."""
        r = await self.move(c, who, record, name, **body)
        assert r.status_code == 200, r.text
        return r.json()


def make_flow(instance: Instance) -> Flow:
    users = {name: add_user(instance, name, "svc", roles, teams) for name, (roles, teams) in USERS.items()}
    tokens = {name: accounts.create_token(instance.engine, name) for name in users}
    return Flow(instance, create_app(instance), users, tokens)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body
    return body["error"]
