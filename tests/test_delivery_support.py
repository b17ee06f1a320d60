"""Shared pieces of the delivery tests (no tests here): a real local SMTP server (aiosmtpd), a real
local HTTP receiver (http.server in a thread), and the fixture app whose rule notifies through
every channel."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from engine import outbox
from engine.actors import Actor
from engine.instance import Instance
from tests.conftest import add_user

NOW = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SMTPServer:
    """aiosmtpd on 127.0.0.1:``port``, keeping every message it accepts; ``refuse`` holds
    addresses it answers 550 for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Message] = []
        self.refuse: set[str] = set()
        self.controller: Controller | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def start(self) -> SMTPServer:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


@dataclass
class Receiver:
    """An HTTP server that records every POST. ``answers`` is a list of statuses (or (status, JSON
    body)) given to the next requests in order, then 200; ``delay`` seconds before answering;
    ``hold`` (request number, 1-based): that request waits until ``release`` is set, after
    ``arrived`` is set."""

    received: list[Received] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    delay: float = 0.0
    hold: int | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                got = Received(
                    parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()}, json.loads(raw) if raw else None,
                )  # fmt: skip
                with receiver.lock:
                    receiver.received.append(got)
                    number = len(receiver.received)
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.hold == number:
                    receiver.arrived.set()
                    receiver.release.wait(30)
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                status, body = (
                    answer if isinstance(answer, tuple) else (answer, {"errcode": 0, "errmsg": "ok"})
                )
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the sender is gone (killed)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


def definition(smtp_port: int, receiver: Receiver) -> str:
    """The desk app: ``tell`` notifies the assignee through every channel and calls a webhook."""
    return f"""
app: desk
timezone: Asia/Shanghai
roles: {{agent: {{}}}}
notifications:
  channels:
    email: {{smtp: "smtp://127.0.0.1:{smtp_port}", from: "desk@example.com"}}
    sms: {{provider: webhook, url: "{receiver.url("/sms")}", headers: {{X-Sms-Key: k1}}}}
    webhook: {{url: "{receiver.url("/notify")}", headers: {{X-Token: t1}}}}
    wecom: {{url: "{receiver.url("/wecom")}?key=w1"}}
    dingtalk: {{url: "{receiver.url("/dingtalk")}?access_token=d1", secret: SECd1}}
  templates:
    opened: {{subject: "New ticket {{number}}", body: "{{number}} {{summary}} is yours"}}
entities:
  ticket:
    number: "T{{seq:3}}"
    fields:
      summary: {{type: text}}
      assignee: {{type: user}}
      channels: {{type: text}}
    workflow:
      initial: open
      states: {{open: {{}}, done: {{final: true}}}}
      transitions: {{finish: {{from: open, to: done}}}}
    permissions:
      agent: {{create: true, read: all, update: all}}
    rules:
      - name: tell
        on: created
        when: channels == "all"
        do:
          - notify: {{to: assignee, channels: [in_app, email, sms, webhook, wecom, dingtalk], template: opened}}
          - webhook: {{url: "{receiver.url("/erp")}", body: {{number: number, summary: summary}}, headers: {{X-Erp: e1}}}}
      - name: mail
        on: created
        when: channels == "email"
        do: [{{notify: {{to: assignee, channels: [email], template: opened}}}}]
"""


@dataclass
class Desk:
    instance: Instance
    users: dict[str, int]

    def create(
        self, summary: str, assignee: str = "alice", channels: str = "all", now: dt.datetime = NOW
    ) -> dict[str, Any]:
        actor = Actor(self.users["alice"], "alice", roles=frozenset(["agent"]))
        values = {"summary": summary, "assignee": assignee, "channels": channels}
        return self.instance.records("desk").create("ticket", values, actor, now)

    def rows(self) -> list[dict[str, Any]]:
        table = self.instance.schema.system["kiln_outbox"]
        with self.instance.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]

    def enqueue(
        self, n: int, channel: str, recipient: str, payload: dict[str, Any], now: dt.datetime = NOW
    ) -> None:
        table = self.instance.schema.system["kiln_outbox"]
        with self.instance.engine.begin() as conn:
            for i in range(n):
                outbox.enqueue(
                    conn, table, app="desk", entity="ticket", record_id=None, event_key=f"test/{channel}/{i}",
                    channel=channel, recipient=recipient, payload=payload, now=now,
                )  # fmt: skip

    def set_user(self, name: str, **values: Any) -> None:
        users = self.instance.schema.system["kiln_users"]
        with self.instance.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == self.users[name]).values(**values))


def open_desk(
    write_definitions: Callable[..., Any], open_instance: Callable[..., Instance], db_url: str, smtp_port: int,
    receiver: Receiver,
) -> Desk:  # fmt: skip
    definitions = write_definitions({"desk/app.yaml": definition(smtp_port, receiver)})
    instance = open_instance(definitions, db_url)
    users = {
        "alice": add_user(instance, "alice", "desk", ["agent"]),
        "bob": add_user(instance, "bob", "desk", ["agent"]),
    }
    desk = Desk(instance, users)
    desk.set_user("alice", email="alice@example.com", phone="13800000001")
    return desk
