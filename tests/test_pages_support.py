"""Shared pieces of the page tests (no tests here): the fixture app, users, a logged-in client.

Logging in signs a session cookie with the instance's secret, exactly as the session middleware
would after ``/login``; the browser tests go through the real login page instead.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
from itsdangerous import TimestampSigner

from apps.web import create_app
from engine import accounts, settings
from engine.instance import Instance
from tests.conftest import add_user

CSRF = "test-csrf-token"

APP = """
kiln: 1
app: desk
label: {zh: 服务台, en: Desk}
locale: en
timezone: Asia/Shanghai
roles:
  agent: {label: Agent}
  viewer: {label: Viewer}
  lead: {label: Lead}
entities:
  site:
    label: Site
    title: "{name}"
    fields:
      name: {type: text, required: true}
    permissions:
      agent: {create: true, read: all, update: all}
      viewer: {read: all}
      lead: {read: all}
  ticket:
    label: {zh: 工单, en: Ticket}
    number: "T{seq:4}"
    title: "{number} {summary}"
    fields:
      summary: {type: text, required: true, max_length: 200, label: Summary}
      details: {type: textarea, label: Details}
      category: {type: select, required: true, label: Category,
                 options: {network: Network, system: System, hardware: Hardware, other: Other}}
      urgency: {type: select, default: normal, label: Urgency, options: {high: High, normal: Normal}}
      reason: {type: text, required_if: 'urgency == "high"', label: Reason}
      server_ip: {type: text, label: Server IP}
      can_ping: {type: boolean, label: Can ping gateway}
      packet_loss: {type: decimal, min: 0, max: 100, label: Packet loss}
      site: {type: link, entity: site, label: Site}
      assignee: {type: user, role: agent, label: Assignee}
      due: {type: date, label: Due}
      cost: {type: decimal, scale: 2, label: Cost}
      contact: {type: email, label: Contact}
      phone: {type: phone, label: Phone}
      homepage: {type: url, label: Homepage}
      place: {type: location, label: Place}
      tags: {type: tags, label: Tags}
      secret_note: {type: text, label: Secret note}
    form:
      - section: Basics
        fields: [summary, details, category, urgency, reason, server_ip, site, assignee, due, cost, contact, phone,
                 homepage, place, tags, secret_note]
      - section: Network
        visible_if: category == "network"
        fields: [can_ping, packet_loss]
    validations:
      - when: category == "system" and is_empty(server_ip)
        fields: [server_ip]
        message: 请补充服务器IP以便远程诊断
    workflow:
      initial: open
      states:
        open: {label: Open}
        done: {label: Done, final: true}
      transitions:
        finish: {from: open, to: done}
    permissions:
      agent: {create: true, read: all, update: all, hide: [secret_note]}
      viewer: {read: all}
      lead: {create: true, read: all, update: all, export: true, hide: [secret_note]}
"""


@dataclass
class Desk:
    instance: Instance
    users: dict[str, int]

    def records(self) -> Any:
        return self.instance.records("desk")

    def actor(self, username: str) -> Any:
        return accounts.actor_for(self.instance.engine, username, "desk")

    def client(self, username: str | None, lang: str = "en") -> httpx.AsyncClient:
        """An in-process client, logged in as ``username`` (None: anonymous), in ``lang``."""
        app = create_app(self.instance)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        client.cookies.set("lang", lang)
        if username is not None:
            client.cookies.set("kiln_session", session_cookie(self.instance, {"uid": self.users[username], "csrf": CSRF}))
        return client


def session_cookie(instance: Instance, session: dict[str, Any]) -> str:
    """The cookie Starlette's SessionMiddleware would set for ``session``."""
    secret = settings.session_secret(instance.engine)
    data = base64.b64encode(json.dumps(session).encode("utf-8"))
    return TimestampSigner(str(secret)).sign(data).decode("utf-8")


def open_desk(write_definitions: Any, open_instance: Any, db_url: str) -> Desk:
    definitions = write_definitions({"desk/app.yaml": APP})
    instance = open_instance(definitions, db_url)
    users = {
        "alice": add_user(instance, "alice", "desk", ["agent"]),
        "bob": add_user(instance, "bob", "desk", ["agent"]),
        "vera": add_user(instance, "vera", "desk", ["viewer"]),
        "lena": add_user(instance, "lena", "desk", ["lead"]),
        "root": add_user(instance, "root", "desk", [], admin=True),
        "nobody": add_user(instance, "nobody", "other"),
    }
    return Desk(instance, users)


def make_tickets(desk: Desk, n: int, by: str = "alice", **values: Any) -> list[dict[str, Any]]:
    records = desk.records()
    actor = desk.actor(by)
    site = records.create("site", {"name": "Main hall"}, actor)
    out = []
    for i in range(n):
        data = {"summary": f"ticket {i:02d}", "category": ["network", "system", "hardware"][i % 3], "server_ip": "10.0.0.1",
                "site": site["id"], **values}  # fmt: skip
        out.append(records.create("ticket", data, actor))
    return out


def form(**values: Any) -> dict[str, Any]:
    """A form body with the CSRF token."""
    return {"csrf_token": CSRF, **values}
