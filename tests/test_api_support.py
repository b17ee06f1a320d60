"""Shared pieces of the API tests (no tests here): the fixture app, users with tokens, a client.

Kept in a ``test_api*`` module so it sits with the files it serves; pytest finds nothing to run.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
from itsdangerous import TimestampSigner
from sqlalchemy import func, select

from apps.web import create_app
from engine import accounts, settings
from engine.instance import Instance
from tests.conftest import add_user

APP = """
app: repair
timezone: Asia/Shanghai
roles:
  reporter: {label: 报修人}
  dispatcher: {label: 值班组长}
  technician: {label: 维修技师}
  supervisor: {label: 主管}
entities:
  device:
    label: 设备
    fields:
      code: {type: text, required: true, unique: true}
      name: {type: text, required: true}
    permissions:
      reporter: {read: all}
      dispatcher: {create: true, read: all, update: all}
      technician: {read: all}
  ticket:
    label: 维修工单
    number: "MX{created:%Y%m%d}-{seq:4}"
    fields:
      summary: {type: text, required: true, max_length: 20}
      device: {type: link, entity: device, required: true}
      urgency: {type: select, required: true, default: normal, options: {high: 紧急, normal: 一般}}
      packet_loss: {type: decimal, min: 0, max: 100}
      due: {type: datetime}
      assignee: {type: user, role: technician}
      est_cost: {type: decimal, scale: 2}
      report: {type: file, accept: [.pdf, .png], max_size: 2KB}
      photos: {type: image, multiple: true}
    workflow:
      initial: pending
      states: {pending: {label: 待受理}, closed: {label: 已关闭, final: true}}
      transitions:
        close: {from: pending, to: closed}
    permissions:
      reporter: {create: true, read: own, update: {own: true, states: [pending]}}
      dispatcher: {create: true, read: all, update: all}
      technician: {read: assigned, update: assigned, hide: [est_cost]}
      supervisor: {read: all}
"""

ROLES = {"rita": ["reporter"], "ron": ["reporter"], "dan": ["dispatcher"], "tom": ["technician"], "sue": ["supervisor"]}


@dataclass
class Api:
    instance: Instance
    app: Any
    users: dict[str, int]
    tokens: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def client(self, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An in-process client; ``kwargs`` go to the transport (e.g. ``client=(address, port)``)."""
        transport = httpx.ASGITransport(app=self.app, **kwargs)
        return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

    def count(self, table: str) -> int:
        t = self.instance.schema.table(table)
        with self.instance.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())

    def row(self, table: str, record_id: int) -> dict[str, Any] | None:
        t = self.instance.schema.table(table)
        with self.instance.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == record_id)).mappings().first()
            return dict(row) if row else None

    def session_cookie(self, name: str, csrf: str = "csrf-token") -> str:
        """The signed cookie of a browser session of ``name`` (as Starlette's SessionMiddleware
        writes it), for tests of cookie authentication."""
        data = base64.b64encode(json.dumps({"uid": self.users[name], "csrf": csrf}).encode())
        return TimestampSigner(settings.session_secret(self.instance.engine)).sign(data).decode()


def make_api(instance: Instance, roles: dict[str, list[str]] | None = None, app: str = "repair") -> Api:
    users = {name: add_user(instance, name, app, r) for name, r in (roles or ROLES).items()}
    tokens = {name: accounts.create_token(instance.engine, name) for name in users}
    return Api(instance, create_app(instance), users, tokens)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error object of a refusal, checking its shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["fields"], dict) and body["error"]["message"]
    return body["error"]
