"""S6, the satisfaction survey, end to end on the service_ticket pack (engine/surveys.py,
apps/web/survey.py): closing a ticket through the API queues the survey; the time scan delivers it
to a real SMTP server (aiosmtpd) and to the app; the link opens without login, takes one rating
that lands on the record and in its history, and refuses a second answer, an expired link and a
tampered one. Also: messages in each recipient's locale, and `run.py check` on survey settings."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from apps.web import create_app
from engine import accounts, migrations, packs, scan
from engine.compiler import compile_definitions
from engine.errors import DefinitionError
from engine.instance import Instance
from tests.conftest import add_user, service_clock
from tests.test_api_support import Api
from tests.test_delivery_support import SMTPServer, free_port

pytestmark = pytest.mark.anyio
APP = "service_ticket"
SH = ZoneInfo("Asia/Shanghai")
WEDNESDAY = dt.datetime(2026, 3, 4, 10, 0, tzinfo=SH)
BASE = "http://kiln.test"
LINK = re.compile(re.escape(BASE) + r"/-/survey/([A-Za-z0-9_.\-]+)")
USERS = {"cs": ["customer_service"], "disp": ["dispatcher"], "tech": ["technician"], "ann": ["owner"], "bob": ["owner"]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    return service_clock(monkeypatch, WEDNESDAY)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def api(db_url: str, tmp_path: Path, smtp: SMTPServer, clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The pack installed, e-mail through the local SMTP server; ann reads Chinese, bob English."""
    monkeypatch.setenv("KILN_BASE_URL", BASE)
    definitions = tmp_path / "definitions"
    packs.install(APP, definitions)
    instance = Instance.open(definitions, db_url, env={"SMTP_URL": f"smtp://127.0.0.1:{smtp.port}"}, files_dir=tmp_path / "files")
    try:
        migrations.apply(instance.engine, instance.compiled)
        ids = {name: add_user(instance, name, APP, roles) for name, roles in USERS.items()}
        users = instance.schema.system["kiln_users"]
        with instance.engine.begin() as conn:
            for name, locale in (("ann", "zh"), ("bob", "en")):
                conn.execute(update(users).where(users.c.id == ids[name]).values(email=f"{name}@example.com", locale=locale))
        tokens = {name: accounts.create_token(instance.engine, name) for name in ids}
        yield Api(instance, create_app(instance), ids, tokens)
    finally:
        instance.close()


async def call(api: Api, who: str, method: str, path: str, body: dict | None = None, status: int = 200, **headers: str) -> dict:
    async with api.client() as c:
        r = await c.request(method, f"/api/v1/{APP}/{path}", json=body, headers={**api.auth(who), **headers})
    assert r.status_code == status, r.text
    return r.json()


async def closed_ticket(api: Api, owner: str) -> dict:
    """A ticket reported by ``owner`` and taken through the pack's workflow to 已关闭."""
    building = await call(api, "cs", "POST", "building", {"code": f"B-{owner}", "name": "1号楼"}, 201)
    ticket = await call(api, owner, "POST", "ticket", {
        "summary": "厨房漏水", "category": "plumbing", "area": "indoor", "urgency": "within_24h",
        "owner_cooperation": "yes", "reporter_phone": "13800000000", "building": building["id"],
    }, 201)  # fmt: skip
    async with api.client() as c:  # the completion report the pack's finish needs (S5)
        files = {"file": ("report.pdf", b"%PDF-1.4 done", "application/pdf")}
        uploaded = await c.post("/api/v1/files", params={"field": f"{APP}.ticket.report"}, files=files, headers=api.auth("tech"))
    assert uploaded.status_code == 201, uploaded.text
    for who, transition, body in (
        ("disp", "dispatch", {"assignee": "tech"}), ("tech", "accept", {}), ("tech", "finish", {"report": uploaded.json()["id"]}),
        (owner, "confirm", {}),
    ):  # fmt: skip
        ticket = await call(
            api, who, "POST", f"ticket/{ticket['id']}/transitions/{transition}", body, **{"If-Match": str(ticket["version"])}
        )
    assert ticket["state"] == "closed"
    return ticket


def mail_to(smtp: SMTPServer, address: str) -> list[tuple[str, str]]:
    """(subject, body) of the messages the SMTP server accepted for ``address``."""
    return [
        (str(make_header(decode_header(m["Subject"]))), m.get_payload(decode=True).decode(m.get_content_charset() or "utf-8"))
        for m in smtp.messages
        if m["To"] == address
    ]


async def test_s6_closing_sends_a_survey_link_that_works_once_without_login(api: Api, smtp: SMTPServer, clock):
    ticket = await closed_ticket(api, "ann")
    report = scan.run_due(api.instance, clock[0])  # `run.py jobs run-due --now`: delivers the outbox
    assert report.delivered and report.delivered["failed"] == 0
    [(subject, body)] = mail_to(smtp, "ann@example.com")
    assert subject == f"请为工单 {ticket['number']} 的服务打分"  # ann reads Chinese
    assert f"您的工单 {ticket['number']}（厨房漏水）已关闭" in body
    token = LINK.search(body).group(1)
    notifications = api.instance.schema.system["kiln_notifications"]
    with api.instance.engine.connect() as conn:  # the in-app copy carries the same link
        in_app = conn.execute(select(notifications.c.body).where(notifications.c.user_id == api.users["ann"])).scalars().all()
    assert any(f"{BASE}/-/survey/{token}" in b for b in in_app)
    surveys = api.instance.schema.system["kiln_surveys"]
    with api.instance.engine.connect() as conn:  # the token is not stored, only its hash
        stored = conn.execute(select(surveys)).mappings().one()
    assert token not in str(dict(stored)) and stored["record_id"] == ticket["id"] and stored["field"] == "satisfaction"
    assert stored["expires_at"] == clock[0] + dt.timedelta(days=14)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url=BASE) as browser:  # no login
        page = await browser.get(f"/-/survey/{token}")
        assert page.status_code == 200, page.text
        assert ticket["number"] in page.text and "厨房漏水" in page.text and "您对我们的服务满意吗" in page.text
        assert len(re.findall(r'name="rating" value="\d"', page.text)) == 5
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        refused = await browser.post(f"/-/survey/{token}", data={"rating": "4"})  # no CSRF token
        assert refused.status_code == 403
        wrong = await browser.post(f"/-/survey/{token}", data={"rating": "9", "csrf_token": csrf})
        assert wrong.status_code == 422 and 'value="9"' not in wrong.text
        clock[0] += dt.timedelta(hours=2)
        done = await browser.post(f"/-/survey/{token}", data={"rating": "4", "comment": "师傅很专业", "csrf_token": csrf})
        assert done.status_code == 200 and "感谢您的评价" in done.text

        rated = await call(api, "cs", "GET", f"ticket/{ticket['id']}")
        assert rated["satisfaction"] == 4 and rated["version"] == ticket["version"] + 1
        history = await call(api, "cs", "GET", f"ticket/{ticket['id']}/history")
        entry = history["items"][-1]
        assert (entry["action"], entry["actor"], entry["rule"], entry["comment"]) == ("update", "ann", "survey", "师傅很专业")
        assert entry["changes"] == {"satisfaction": [None, 4]}
        assert dt.datetime.fromisoformat(entry["at"]) == clock[0]

        again = await browser.post(f"/-/survey/{token}", data={"rating": "1", "csrf_token": csrf})
        assert again.status_code == 410 and "已经提交过" in again.text
        assert (await browser.get(f"/-/survey/{token}")).status_code == 410
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        for bad in (tampered, token.split(".")[0], "not-a-token"):
            assert (await browser.get(f"/-/survey/{bad}")).status_code == 404
            assert (await browser.post(f"/-/survey/{bad}", data={"rating": "1", "csrf_token": csrf})).status_code == 404
    after = await call(api, "cs", "GET", f"ticket/{ticket['id']}")
    assert after["satisfaction"] == 4 and after["version"] == rated["version"]  # nothing changed since
    board = await call(api, "cs", "GET", "dashboards/management")
    csat = next(c for c in board["cards"] if c["name"] == "csat")
    assert float(csat["value"]) == 4.0  # the CSAT KPI reads the pack's rating field


async def test_s6_an_expired_link_is_refused_and_changes_nothing(api: Api, smtp: SMTPServer, clock):
    ticket = await closed_ticket(api, "bob")
    scan.run_due(api.instance, clock[0])
    [(subject, body)] = mail_to(smtp, "bob@example.com")
    assert subject == f"How did we do on ticket {ticket['number']}?"  # bob reads English
    token = LINK.search(body).group(1)
    clock[0] += dt.timedelta(days=14, minutes=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url=BASE) as browser:
        page = await browser.get(f"/-/survey/{token}")
        assert page.status_code == 410 and "expired" in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # the language switch's form
        refused = await browser.post(f"/-/survey/{token}", data={"rating": "5", "csrf_token": csrf})
        assert refused.status_code == 410
    after = await call(api, "cs", "GET", f"ticket/{ticket['id']}")
    assert after["satisfaction"] is None and after["version"] == ticket["version"]


# -- messages in the recipient's locale, and the definition checks ---------------------------------

LOCALES = """
app: desk
locale: zh
roles: {agent: {}}
notifications:
  templates:
    both: {subject: {zh: "工单 {id}", en: "Ticket {id}"}, body: {zh: "您好 {summary}", en: "Hello {summary}"}}
entities:
  ticket:
    label: {zh: 工单, en: Ticket}
    fields:
      summary: {type: text}
      watcher: {type: user}
    permissions:
      agent: {create: true, read: all, update: all}
    rules:
      - {name: tell, on: created, do: [{notify: {to: [created_by, watcher], template: both}}, {notify: {to: watcher}}]}
"""


def test_each_recipient_gets_the_message_in_their_locale(db_url, write_definitions, open_instance):
    instance = open_instance(write_definitions({"desk/app.yaml": LOCALES}), db_url)
    ids = {name: add_user(instance, name, "desk", ["agent"]) for name in ("li", "joe", "may")}
    users = instance.schema.system["kiln_users"]
    with instance.engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == ids["joe"]).values(locale="en"))  # may: none, the app's (zh)
    records = instance.records("desk")
    li = accounts.actor_for(instance.engine, "li", "desk")
    for watcher in ("joe", "may"):
        records.create("ticket", {"summary": "漏水", "watcher": watcher}, li)
    outbox = instance.schema.system["kiln_outbox"]
    with instance.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.recipient, outbox.c.payload).order_by(outbox.c.id)).all()
    names = {str(v): k for k, v in ids.items()}
    sent = [(names[r], p["template"], p["locale"], p["subject"], p["body"]) for r, p in rows]
    assert sent == [
        ("li", "both", "zh", "工单 1", "您好 漏水"), ("joe", "both", "en", "Ticket 1", "Hello 漏水"),
        ("joe", None, "en", "Ticket 1", "Ticket 1: tell"),
        ("li", "both", "zh", "工单 2", "您好 漏水"), ("may", "both", "zh", "工单 2", "您好 漏水"),
        ("may", None, "zh", "工单 2", "工单 2：tell"),
    ]  # fmt: skip


def test_check_reports_survey_settings(write_definitions):
    bad = LOCALES.replace(
        'both: {subject: {zh: "工单 {id}", en: "Ticket {id}"}, body: {zh: "您好 {summary}", en: "Hello {summary}"}}',
        'both: {body: "rate us: {survey_url}", survey: {field: summary, comment: watcher, expires: soon}}',
    )
    with pytest.raises(DefinitionError) as raised:
        compile_definitions(write_definitions({"desk/app.yaml": bad}))
    messages = "\n".join(str(p) for p in raised.value.problems)
    assert "survey.field 'summary' must be a rating field of entity ticket" in messages
    assert "survey.comment 'watcher' must be a text or textarea field" in messages
    assert "survey.expires 'soon' is not a duration" in messages
    plain = bad.replace(", survey: {field: summary, comment: watcher, expires: soon}", "")
    compiled = compile_definitions(write_definitions({"desk/app.yaml": plain}))  # no rating field: a warning
    assert any("{survey_url} needs a rating field on entity ticket" in str(p) for p in compiled.warnings)


async def test_the_in_app_notification_links_to_the_survey(api: Api, clock):
    await closed_ticket(api, "ann")
    scan.run_due(api.instance, clock[0])
    transport = httpx.ASGITransport(app=api.app)
    cookies = {"kiln_session": api.session_cookie("ann")}
    async with httpx.AsyncClient(transport=transport, base_url=BASE, cookies=cookies) as browser:
        page = await browser.get("/-/notifications")
    assert page.status_code == 200
    assert re.search(r'<a href="' + re.escape(BASE) + r'/-/survey/[^"]+"[^>]*>', page.text)
